//! Explain the limits: what would decide a request to send a code now, charging
//! nothing — for operators (`GET /v1/admin/limits`).

use std::net::IpAddr;
use std::sync::Arc;

use super::{Engine, Purpose, Refused};
use crate::numbers::reader::NumberInfo;
use crate::policy::admission::Explanation;
use crate::policy::clients::Client;
use crate::policy::limits::IssueFacts;

/// The request to explain: as an issue would carry it, on behalf of `client` (by
/// name; else the operator asking).
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    pub to: NumberInfo,
    pub subject: Option<Box<str>>,
    pub ip: Option<IpAddr>,
    pub purpose: Option<String>,
    pub client: Option<String>,
}

/// What would decide it, and for whom.
#[derive(Debug)]
pub struct Explained {
    pub client: Arc<Client>,
    pub purpose: Purpose,
    /// The purpose's whole capacity, when it has one.
    pub purpose_capacity: Option<String>,
    pub explanation: Explanation,
}

impl Engine {
    pub async fn explain(
        &self,
        operator: Arc<Client>,
        req: ExplainRequest,
    ) -> Result<Explained, Refused> {
        let purpose = self.find_purpose(req.purpose.as_deref())?.clone();
        let rules = self.admission.rules();
        let client = match &req.client {
            None => operator,
            Some(name) => rules
                .clients
                .by_name(name)
                .cloned()
                .ok_or(Refused::UnknownClient)?,
        };
        let facts = IssueFacts {
            to: req.to.e164,
            country: req.to.country,
            subject: req.subject.as_deref(),
            ip: req.ip,
            client: &client,
            purpose: &purpose.name,
        };
        let explanation = self
            .admission
            .explain(&rules, &facts, self.clock.now())
            .await
            .map_err(Refused::LimitsUnavailable)?;
        let purpose_capacity = rules.policy.capacity(&purpose.name).map(|q| q.to_string());
        Ok(Explained {
            client,
            purpose,
            purpose_capacity,
            explanation,
        })
    }
}
