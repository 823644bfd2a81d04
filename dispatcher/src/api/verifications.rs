//! `/v1/verifications`: create (or re-send), read, check, cancel.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::json::JsonBody;
use super::{AppState, Caller};
use crate::domain::locale::Locale;
use crate::domain::verification::{
    AckOutcome, CancelOutcome, CheckOutcome, Closing, MatchCode, RequestedChannel, Status,
    Verification,
};
use crate::engine::{IssueError, IssueRequest, Issued};
use crate::numbers::e164::E164;
use crate::policy::admission::{Refused, Rules, nanos};
use crate::policy::clients::Client;
use crate::policy::limiter::Denial;
use crate::policy::limits::{IssueFacts, Pool, ip_key};
use crate::secrets::code::Code;
use crate::secrets::id::VerificationId;
use crate::store::{
    CheckLimits, CheckedWithin, IdempotencyBegin, IssueLimits, StoreError, StoredResponse,
};

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVerification {
    /// Optional when `subject` names a registered subscriber: their number is used.
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    channel: Option<ChannelField>,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    purpose: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    /// The end user's IP address, as the backend saw it: keys the per-IP limits.
    #[serde(default)]
    ip: Option<String>,
    /// The subject's contrast value (identity document's validity date or support
    /// number), where the client or purpose requires it.
    #[serde(default)]
    contrast: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ChannelField {
    Auto,
    Sms,
    Push,
    App,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckVerification {
    code: String,
    /// The end user's IP address: keys the per-IP check limit.
    #[serde(default)]
    ip: Option<String>,
}

/// Serializes anything `Display` straight into the output (serde_json's `collect_str`
/// writes without an intermediate `String`).
struct AsStr<T>(T);

impl<T: std::fmt::Display> Serialize for AsStr<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

type Time = AsStr<crate::domain::clock::Rfc3339>;

fn time(t: crate::domain::clock::UnixMillis) -> Time {
    AsStr(t.rfc3339())
}

/// A verification as the API shows it.
#[derive(Serialize)]
pub struct VerificationView<'a> {
    id: AsStr<VerificationId>,
    status: &'static str,
    to: AsStr<E164>,
    /// The number's country (ISO 3166-1 alpha-2); absent for non-geographic numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<crate::numbers::reader::Region>,
    /// `mobile`, `fixed_line_or_mobile`, …
    number_type: &'static str,
    channel: &'static str,
    purpose: &'a str,
    locale: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    /// Sent to another number than the subject's registered one (`override_to`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    to_override: bool,
    /// Shown on the requesting screen; the push shows the same number.
    #[serde(skip_serializing_if = "Option::is_none")]
    match_code: Option<AsStr<MatchCode>>,
    /// Approval requests, while pending: the challenge URI for a QR code.
    #[serde(skip_serializing_if = "Option::is_none")]
    qr: Option<String>,
    /// Approval requests, once answered in the app: the thumbprint of the device key
    /// that signed the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    answered_by: Option<&'a str>,
    /// When the verification became final (approved, denied, canceled, locked).
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<Time>,
    /// When the push, unacknowledged, will be followed by an SMS.
    #[serde(skip_serializing_if = "Option::is_none")]
    escalates_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acknowledged_at: Option<Time>,
    created_at: Time,
    expires_at: Time,
    attempts_left: u8,
    sends_left: u8,
    delivery: DeliveryView<'a>,
}

#[derive(Serialize)]
struct DeliveryView<'a> {
    state: &'static str,
    channel: &'static str,
    attempts: Vec<SendView<'a>>,
}

#[derive(Serialize)]
struct SendView<'a> {
    send: u8,
    channel: &'static str,
    /// Why this send was made: `push_timeout` or `push_failed` for an SMS after push.
    #[serde(skip_serializing_if = "Option::is_none")]
    escalated: Option<&'static str>,
    state: &'static str,
    queued_at: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    answered_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    /// SMS: the carrier that took it (or was tried last).
    #[serde(skip_serializing_if = "Option::is_none")]
    carrier: Option<&'a str>,
    /// SMS: the route's prefix, or `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    /// SMS: carriers passed over before, and why.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    failovers: Vec<FailoverView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segments: Option<u8>,
}

#[derive(Serialize)]
struct FailoverView<'a> {
    carrier: &'a str,
    error: &'a str,
}

impl<'a> VerificationView<'a> {
    /// `qr_base`: the start of approval requests' challenge URIs (`app.qr_uri`).
    pub fn of(v: &'a Verification, status: Status, qr_base: &str) -> Self {
        let attempts = v
            .sends()
            .iter()
            .enumerate()
            .map(|(i, s)| SendView {
                send: (i + 1) as u8,
                channel: s.channel.as_str(),
                escalated: s.escalated.map(|c| c.as_str()),
                state: s.state.as_str(),
                queued_at: time(s.queued_at),
                answered_at: s.answered_at.map(time),
                reported_at: s.reported_at.map(time),
                reference: s.reference.as_deref(),
                error: s.error.as_deref(),
                carrier: s.details.as_ref().and_then(|d| d.carrier.as_deref()),
                route: s.details.as_ref().and_then(|d| d.route.as_deref()),
                failovers: s
                    .details
                    .iter()
                    .flat_map(|d| d.failovers.iter())
                    .map(|f| FailoverView {
                        carrier: &f.carrier,
                        error: &f.error,
                    })
                    .collect(),
                encoding: s
                    .details
                    .as_ref()
                    .and_then(|d| d.encoding)
                    .map(|a| a.as_str()),
                segments: s
                    .details
                    .as_ref()
                    .filter(|d| d.segments > 0)
                    .map(|d| d.segments),
            })
            .collect();
        let last_channel = v
            .sends()
            .last()
            .map(|s| s.channel.as_str())
            .unwrap_or("sms");
        Self {
            id: AsStr(v.id),
            status: status.as_str(),
            to: AsStr(v.to),
            country: v.line.country,
            number_type: v.line.kind.as_str(),
            channel: v.channel.as_str(),
            purpose: &v.purpose,
            locale: v.locale.as_str(),
            subject: v.subject.as_deref(),
            to_override: v.to_override,
            match_code: v.match_code.map(AsStr),
            qr: (status == Status::Pending)
                .then(|| crate::domain::approval::qr_uri(qr_base, v))
                .flatten(),
            answered_by: v.answered_by(),
            finished_at: (!matches!(status, Status::Pending | Status::Expired))
                .then(|| time(v.state_changed_at())),
            escalates_at: v.escalate_at().map(time),
            acknowledged_at: v.acknowledged_at().map(time),
            created_at: time(v.created_at),
            expires_at: time(v.expires_at),
            attempts_left: v.attempts_left(),
            sends_left: v.sends_left(),
            delivery: DeliveryView {
                state: v.delivery_state().as_str(),
                channel: last_channel,
                attempts,
            },
        }
    }
}

pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("views serialize")
}

/// The `{id}` path segment, parsed; a malformed id is a 400 naming the field.
pub struct IdPath(pub VerificationId);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::bad_request("invalid_id", crate::secrets::id::InvalidId.to_string())
                .field("id")
        };
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| invalid())?;
        raw.parse().map(IdPath).map_err(|_| invalid())
    }
}

pub(super) fn not_found() -> ApiError {
    ApiError::not_found("no verification with this id (it may have expired and been removed)")
}

pub(super) fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store failure");
    ApiError::store_unavailable()
}

/// What the registry says about the request's subject, and what was read on the way
/// (so that `validate` reads nothing twice).
#[derive(Debug, Clone, Default)]
struct SubjectFacts {
    /// The request's subject in its normal form.
    subject: Option<Box<str>>,
    /// `to` as read, when reading it was needed to compare it with the registry.
    number: Option<crate::numbers::reader::NumberInfo>,
    /// A device is registered: push is possible.
    has_devices: bool,
    /// A device enrolled a key: approval in the app is possible.
    has_keys: bool,
    /// `to` is another number than the subject's, by a client allowed to say so.
    to_override: bool,
}

/// The answer to a request naming a subject that is not registered — and, word for
/// word, to one whose contrast value is wrong, so that the answer never tells
/// whether a subject is registered.
fn unknown_subject() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_subject",
        "no subscriber is registered with this subject; send `to` or register it first",
    )
    .field("subject")
}

/// Fill in what a registered subject implies: the number when `to` is absent, and
/// the subscriber's language when the request names none. Checks the contrast value
/// when the client or purpose requires one (or the request carries one).
async fn resolve_subject(
    state: &AppState,
    rules: &Rules,
    client: &Client,
    ip: Option<std::net::IpAddr>,
    body: &mut CreateVerification,
) -> Result<SubjectFacts, ApiError> {
    let purpose = body.purpose.as_deref().unwrap_or(&state.default_purpose);
    let contrast_required = body.subject.is_some()
        && (client.require_contrast
            || state
                .engine
                .purpose(purpose)
                .is_some_and(|p| p.require_contrast));
    let contrast = match (&body.subject, body.contrast.as_deref()) {
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_contrast",
                "`contrast` goes with `subject`: it is checked against the subject's registered value",
            )
            .field("contrast"));
        }
        (Some(_), None) if contrast_required => {
            return Err(ApiError::bad_request(
                "missing_field",
                "requests by `subject` must carry the subject's `contrast` value (the identity document's validity date or support number)",
            )
            .field("contrast"));
        }
        (_, given) => given
            .map(|c| {
                crate::secrets::contrast::normalize(c).map_err(|e| {
                    ApiError::bad_request("invalid_contrast", e.to_string()).field("contrast")
                })
            })
            .transpose()?,
    };
    let Some(raw) = body.subject.as_deref() else {
        if body.to.is_none() {
            return Err(ApiError::bad_request(
                "missing_field",
                "the field `to` is required unless `subject` names a registered subscriber",
            )
            .field("to"));
        }
        return Ok(SubjectFacts::default());
    };
    let subject = validate_subject(raw)?;
    let now = state.engine.now();
    if contrast.is_some() {
        // Decided before the comparison, so that a subject past its limit is refused
        // whatever it sends (a refusal after it would tell a right guess from a
        // wrong one); only failures are charged.
        state
            .admission
            .guess_allowed(rules, &subject, ip, now)
            .await
            .map_err(refused)?;
    }
    let subscriber = state
        .engine
        .store()
        .get_subscriber(&subject)
        .await
        .map_err(store_error)?;
    if let Some(normal) = &contrast {
        // Computed and compared whether or not the subject is registered, so that
        // the time taken tells nothing either.
        let given = state.engine.contrast_mac(&subject, normal);
        let stored = subscriber.as_ref().and_then(|s| s.contrast);
        let reference = stored.unwrap_or(crate::secrets::contrast::ContrastMac([0; 32]));
        let equal = given.matches(&reference);
        if !(equal && stored.is_some()) {
            tracing::info!("a request by subject failed its contrast check");
            metrics::counter!("otpd_contrast_failures_total").increment(1);
            state.admission.guess_failed(rules, &subject, ip, now).await;
            return Err(unknown_subject());
        }
    }
    let Some(s) = subscriber else {
        return match body.to {
            None => Err(unknown_subject()),
            Some(_) => Ok(SubjectFacts {
                subject: Some(subject),
                ..SubjectFacts::default()
            }),
        };
    };
    if body.locale.is_none() {
        body.locale = s.locale.map(|l| l.as_str().to_string());
    }
    let number = match body.to.as_deref() {
        None => {
            body.to = Some(s.phone.to_string());
            None
        }
        Some(given) => Some(super::read_number(state, given, "to")?),
    };
    if let Some(number) = number.filter(|n| n.e164 != s.phone) {
        // A code for a registered subject goes to the subject's number: anything
        // else would send the citizen's PIN (or approval) to whoever asked. Said
        // without the registered number.
        if !client.override_to {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "to_not_allowed",
                "`to` is not the number registered for this subject, and this API key may not send a subject's codes elsewhere (`override_to`)",
            )
            .field("to"));
        }
        metrics::counter!("otpd_to_overrides_total").increment(1);
        tracing::info!(client = %client.name, "a subject's code is sent to another number than the registered one (override_to)");
        // The subject's devices belong with the registered number: the code goes
        // by SMS to the number asked for, and nowhere else.
        return Ok(SubjectFacts {
            subject: Some(subject),
            number: Some(number),
            to_override: true,
            ..SubjectFacts::default()
        });
    }
    Ok(SubjectFacts {
        subject: Some(subject),
        number,
        has_devices: !s.devices.is_empty(),
        has_keys: s.devices.iter().any(|d| d.key.is_some()),
        to_override: false,
    })
}

/// Validate the request into what the engine needs.
fn validate(
    state: &AppState,
    rules: &Rules,
    client: &Client,
    body: CreateVerification,
    facts: SubjectFacts,
) -> Result<IssueRequest, ApiError> {
    let has_devices = facts.has_devices;
    let number = match facts.number {
        Some(n) => n,
        None => super::read_number(state, body.to.as_deref().unwrap_or_default(), "to")?,
    };
    if !client.may_send_to(number.country) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "country_not_allowed",
            format!(
                "this client may send only to: {}",
                client.countries().join(", ")
            ),
        )
        .field("to"));
    }
    // The request's language, else the subscriber's (already filled in), else the
    // one of the number's country, else the default.
    let locale = match body.locale.as_deref() {
        Some(tag) => super::read_locale(tag)?,
        None => state
            .router
            .plan()
            .country_locale(number.country)
            .or_else(|| Locale::parse(&state.default_locale))
            .unwrap_or(Locale::Es),
    };
    let purpose_name = body.purpose.as_deref().unwrap_or(&state.default_purpose);
    let purpose = super::find_purpose(state, purpose_name)?.clone();
    if !client.may_use(&purpose.name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "purpose_not_allowed",
            "this client may not use this purpose",
        )
        .field("purpose"));
    }
    let subject = facts.subject;
    let channel = match body.channel.unwrap_or(ChannelField::Auto) {
        ChannelField::Auto => RequestedChannel::Auto,
        ChannelField::Sms => RequestedChannel::Sms,
        ChannelField::Push => RequestedChannel::Push,
        ChannelField::App => RequestedChannel::App,
    };
    if channel == RequestedChannel::App && (subject.is_none() || !facts.has_keys) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_device_key",
            "approval in the app needs a `subject` with a registered device that enrolled a key",
        )
        .field(if subject.is_some() {
            "subject"
        } else {
            "channel"
        }));
    }
    if channel == RequestedChannel::Push && !has_devices {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_device",
            "push needs a `subject` with a registered device; use `auto` to fall back to SMS",
        )
        .field(if subject.is_some() {
            "subject"
        } else {
            "channel"
        }));
    }
    Ok(IssueRequest {
        to: number.e164,
        line: number.line(),
        channel,
        locale,
        purpose,
        subject,
        client: client.id().cloned(),
        has_devices,
        to_override: facts.to_override,
        dedupe_window: rules.policy.dedupe_window,
    })
}

/// The subject of a request in its normal form ([`crate::domain::subject::normalize`]); a
/// refusal names the field and why, never the value.
pub(super) fn validate_subject(s: &str) -> Result<Box<str>, ApiError> {
    crate::domain::subject::normalize(s).map_err(|e| {
        ApiError::bad_request("invalid_subject", e.to_string())
            .field("subject")
            .reason(e.reason())
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "`Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ),
        )
        .field("Idempotency-Key")
    };
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Caller(client): Caller,
    headers: HeaderMap,
    body: JsonBody<CreateVerification>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let mut value = body.value;
    let ip = super::read_ip(value.ip.as_deref())?;
    // One view of the limits for the whole request, even across a reload.
    let rules = state.admission.rules();
    let facts = resolve_subject(&state, &rules, &client, ip, &mut value).await?;
    let request = validate(&state, &rules, &client, value, facts)?;
    let Some(key) = key else {
        return issue(&state, &rules, &client, ip, request)
            .await
            .map(IntoResponse::into_response);
    };
    // Keys are the client's own: two clients may well pick the same one.
    let key = format!("{}\n{key}", client.name);

    let mut hasher = Sha256::new();
    hasher.update(b"POST /v1/verifications\n");
    hasher.update(&body.raw);
    let fingerprint: [u8; 32] = hasher.finalize().into();
    let store = state.engine.store();
    let now = state.engine.now();
    match store
        .idempotency_begin(&key, &fingerprint, now, state.idempotency_ttl)
        .await
        .map_err(store_error)?
    {
        IdempotencyBegin::Started => {}
        IdempotencyBegin::Replay(stored) => {
            let mut response = json_response(
                StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                stored.body.to_vec(),
            );
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
        }
        IdempotencyBegin::InProgress => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry shortly",
            )
            .retry_after(std::time::Duration::from_secs(1)));
        }
        IdempotencyBegin::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            )
            .field("Idempotency-Key"));
        }
    }

    let result = issue(&state, &rules, &client, ip, request).await;
    match &result {
        Ok(created) => {
            let stored = StoredResponse {
                status: created.status().as_u16(),
                body: created.body.clone().into(),
            };
            let now = state.engine.now();
            if let Err(e) = store
                .idempotency_finish(&key, &fingerprint, stored, now, state.idempotency_ttl)
                .await
            {
                tracing::warn!(error = %e, "could not keep the idempotent response");
            }
        }
        Err(_) => {
            // Failed requests are not kept: the same key may be retried.
            let _ = store.idempotency_abandon(&key, &fingerprint).await;
        }
    }
    result.map(IntoResponse::into_response)
}

/// A successful create, before it becomes a response (idempotency keeps its body).
struct Created {
    body: Vec<u8>,
    id: VerificationId,
    resent: bool,
    /// The same request again: the earlier verification, nothing sent.
    deduplicated: bool,
}

impl Created {
    fn status(&self) -> StatusCode {
        if self.deduplicated {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        }
    }
}

impl IntoResponse for Created {
    fn into_response(self) -> Response {
        let mut response = json_response(self.status(), self.body);
        let location = format!("/v1/verifications/{}", self.id);
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        if self.resent {
            response
                .headers_mut()
                .insert("otpd-resent", HeaderValue::from_static("true"));
        }
        if self.deduplicated {
            response
                .headers_mut()
                .insert("otpd-deduplicated", HeaderValue::from_static("true"));
        }
        response
    }
}

pub(super) fn refused(r: Refused) -> ApiError {
    match r {
        Refused::Limited(refusal) => ApiError::limited(refusal),
        Refused::Denied { .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            "destination_denied",
            "codes are not sent to this number range",
        )
        .field("to")
        .limit("deny_list"),
        Refused::Unavailable(e) => super::error::limits_unavailable(e),
    }
}

async fn issue(
    state: &AppState,
    rules: &Rules,
    client: &Client,
    ip: Option<std::net::IpAddr>,
    request: IssueRequest,
) -> Result<Created, ApiError> {
    let now = state.engine.now();
    let (to, country) = (request.to, request.line.country);
    let subject = request.subject.clone();
    let purpose = request.purpose.name.clone();
    let facts = IssueFacts {
        to,
        country,
        subject: subject.as_deref(),
        ip,
        client,
        purpose: &purpose,
    };
    let result = if state.engine.store().decides_limits() {
        // One step: the store decides the limits as it issues.
        let admission = &state.admission;
        let plan = admission.plan_issue(rules, &facts, now).map_err(refused)?;
        let (gate, charge) = (
            plan.gate(rules, &facts),
            plan.charge(rules, &facts, plan.pool()),
        );
        let fallback = plan
            .falls_back()
            .then(|| plan.charge(rules, &facts, Pool::Shared));
        let limits = IssueLimits {
            gate: &gate,
            charge: &charge,
            fallback: fallback.as_deref(),
            now: plan.now,
        };
        let result = state.engine.issue_within(request, &limits).await;
        if !matches!(result, Err(IssueError::Limited(_))) {
            admission.admitted(&plan);
        }
        result
    } else {
        let admitted = state
            .admission
            .admit_issue(rules, &facts, now)
            .await
            .map_err(refused)?;
        let result = state.engine.issue(request).await;
        if !matches!(result, Ok(Issued::Created(_) | Issued::Resent(_))) {
            // Nothing was sent: the limits get their charge back.
            state
                .admission
                .refund_issue(rules, &facts, admitted, now)
                .await
        }
        result
    };
    if let Ok(Issued::Created(_) | Issued::Resent(_)) = &result {
        state.admission.sent(rules, to, country, now);
    }
    match result {
        Ok(issued) => {
            let v = issued.verification();
            Ok(Created {
                body: to_json(&VerificationView::of(v, Status::Pending, &state.app.qr_uri)),
                id: v.id,
                resent: matches!(issued, Issued::Resent(_)),
                deduplicated: matches!(issued, Issued::Deduplicated(_)),
            })
        }
        Err(IssueError::Overloaded) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many codes are waiting to be sent; retry shortly",
        )
        .retry_after(state.overload_retry_after)),
        Err(IssueError::Cooldown { retry_after }) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "resend_cooldown",
            "a code was sent to this number moments ago; it can be sent again after Retry-After seconds",
        )
        .retry_after(retry_after)),
        Err(IssueError::MaxSends { retry_after }) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "max_sends_reached",
            "the code was already sent the maximum number of times; a new one can be requested when it expires",
        )
        .retry_after(retry_after)),
        Err(IssueError::Store(e)) => Err(store_error(e)),
        Err(IssueError::Limited(r)) => Err(refused(state.admission.denied(
            rules,
            &facts,
            Denial::Refused(r),
            now,
        ))),
        Err(IssueError::Random(e)) => {
            tracing::error!(error = %e, "no randomness for a code");
            Err(ApiError::internal("could not generate a code"))
        }
    }
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Caller(client): Caller,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let v = state
        .engine
        .get(&id)
        .await
        .map_err(store_error)?
        .filter(|v| v.client.as_ref() == client.id())
        .ok_or_else(not_found)?;
    let status = v.status(state.engine.now());
    Ok(json_response(
        StatusCode::OK,
        to_json(&VerificationView::of(&v, status, &state.app.qr_uri)),
    ))
}

#[derive(Serialize)]
struct CheckView {
    id: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts_left: Option<u8>,
}

pub async fn check(
    State(state): State<Arc<AppState>>,
    Caller(client): Caller,
    IdPath(id): IdPath,
    body: JsonBody<CheckVerification>,
) -> Result<Response, ApiError> {
    let code = Code::parse(&body.value.code)
        .map_err(|e| ApiError::bad_request("invalid_code", e.to_string()).field("code"))?;
    let ip = super::read_ip(body.value.ip.as_deref())?;
    let rules = state.admission.rules();
    let now = state.engine.now();
    let owner = client.id().map(|n| &**n);
    let admission = &state.admission;
    let (result, subject_refused) = if state.engine.store().decides_limits() {
        // One step: the store decides the limits as it counts the attempt.
        let ip = ip.map(ip_key);
        let limits = CheckLimits {
            before: ip.as_ref().and_then(|k| rules.policy.check_ip(k)),
            wrong_per_subject: rules.policy.check_subject_quota(),
            now: nanos(now),
        };
        match state
            .engine
            .check_within(&id, &code, owner, &limits)
            .await
            .map_err(store_error)?
        {
            CheckedWithin::Limited(r) => return Err(refused(admission.check_refused(r))),
            CheckedWithin::NotFound => return Err(not_found()),
            CheckedWithin::Checked {
                result,
                subject_refused,
            } => {
                if let Some(r) = subject_refused {
                    admission.check_refused(r);
                }
                (result, subject_refused)
            }
        }
    } else {
        admission
            .admit_check(&rules, ip, now)
            .await
            .map_err(refused)?;
        let result = state
            .engine
            .check(&id, &code, owner)
            .await
            .map_err(store_error)?
            .ok_or_else(not_found)?;
        let mut subject_refused = None;
        if matches!(
            result.outcome,
            CheckOutcome::Wrong { .. } | CheckOutcome::Locked
        ) && let Some(subject) = &result.subject
            && let Err(refusal) = admission.wrong_code(&rules, subject, now).await
        {
            subject_refused = Some(match refusal {
                Refused::Limited(r) => r,
                other => return Err(refused(other)),
            });
            // Guessing across verifications: lock this one too.
            state
                .engine
                .close(&id, owner, Closing::Lock)
                .await
                .map_err(store_error)?;
        }
        (result, subject_refused)
    };
    let id_text = id.to_string();
    if let Some(refusal) = subject_refused {
        tracing::warn!(%id, "too many wrong codes for the subject: verification locked");
        return Err(ApiError::limited(refusal)
            .about(id_text, "locked")
            .attempts_left(0));
    }
    if result.outcome == CheckOutcome::Approved {
        admission.converted(&rules, result.to, result.country, now);
    }
    let ok = |status: &'static str, attempts_left: Option<u8>| {
        json_response(
            StatusCode::OK,
            to_json(&CheckView {
                id: id_text.clone(),
                status,
                attempts_left,
            }),
        )
    };
    match result.outcome {
        CheckOutcome::Approved => Ok(ok("approved", None)),
        CheckOutcome::Wrong { attempts_left } => Ok(ok("pending", Some(attempts_left))),
        CheckOutcome::Locked => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "max_attempts_reached",
            "too many wrong codes: this verification is locked; request a new code",
        )
        .about(id_text, "locked")
        .attempts_left(0)),
        CheckOutcome::Expired => Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "this code has expired; request a new one",
        )
        .about(id_text, "expired")),
        CheckOutcome::Canceled => Err(ApiError::new(
            StatusCode::CONFLICT,
            "canceled",
            "this verification was canceled",
        )
        .about(id_text, "canceled")),
        CheckOutcome::AlreadyApproved => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_approved",
            "this verification was already approved; a code approves only once",
        )),
        CheckOutcome::Denied => Err(ApiError::new(
            StatusCode::CONFLICT,
            "denied",
            "this request was denied in the app",
        )
        .about(id_text, "denied")),
        CheckOutcome::NoCode => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_code_sent",
            "this approval request sent no code yet: it is answered in the app, and a code goes by SMS only if no answer comes in time",
        )
        .about(id_text, "pending")),
    }
}

pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Caller(client): Caller,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let (outcome, v) = state
        .engine
        .close(&id, client.id().map(|n| &**n), Closing::Cancel)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let id_text = id.to_string();
    match outcome {
        CancelOutcome::Canceled | CancelOutcome::AlreadyCanceled => Ok(json_response(
            StatusCode::OK,
            to_json(&VerificationView::of(
                &v,
                Status::Canceled,
                &state.app.qr_uri,
            )),
        )),
        CancelOutcome::Final(Status::Expired) => Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "this verification has already expired",
        )
        .about(id_text, "expired")),
        CancelOutcome::Final(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_final",
            format!("this verification is already {}", status.as_str()),
        )
        .about(id_text, status.as_str())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The token the push carried (`ack_token` in its data).
    ack_token: String,
}

/// What an acknowledgement answers: nothing about the verification but its state.
#[derive(Serialize)]
struct AckView {
    id: String,
    status: &'static str,
}

/// `POST /v1/verifications/{id}/ack`: the app received the push. The push counts as
/// delivered and the SMS fallback is called off. Repeating it changes nothing.
///
/// Anyone may call it — the id is in the QR code — so it must prove that the push
/// arrived: the body carries the token only the push carried, checked before the
/// store is read. A wrong token is charged to the caller's network. The answer is
/// the id and status only: no number, no subject, no challenge.
pub async fn acknowledge(
    State(state): State<Arc<AppState>>,
    super::CallerAddr(caller): super::CallerAddr,
    IdPath(id): IdPath,
    body: JsonBody<AckBody>,
) -> Result<Response, ApiError> {
    let rules = state.admission.rules();
    let now = state.engine.now();
    state
        .admission
        .answer_allowed(&rules, caller, now)
        .await
        .map_err(refused)?;
    if !state.engine.ack_token(&id).matches(&body.value.ack_token) {
        state.admission.answer_refused(&rules, caller, now).await;
        state.engine.metrics().answer_refused("bad_ack_token");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_ack_token",
            "this is not the acknowledgement token the push carried",
        )
        .field("ack_token"));
    }
    let (outcome, v) = state
        .engine
        .acknowledge(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let id_text = id.to_string();
    match outcome {
        AckOutcome::Acknowledged | AckOutcome::AlreadyAcknowledged => Ok(json_response(
            StatusCode::OK,
            to_json(&AckView {
                id: id_text,
                status: v.status(state.engine.now()).as_str(),
            }),
        )),
        AckOutcome::NotPush => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_push",
            "this verification was not sent by push; there is nothing to acknowledge",
        )
        .about(id_text, "pending")),
        AckOutcome::Final(Status::Expired) => Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "this verification has already expired",
        )
        .about(id_text, "expired")),
        AckOutcome::Final(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_final",
            format!("this verification is already {}", status.as_str()),
        )
        .about(id_text, status.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_subject_names_the_field_and_why_but_not_the_letter() {
        let e = validate_subject("12345678A").unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("invalid_subject", Some("subject"))
        );
        assert_eq!(e.reason, Some("check_letter"));
        assert!(!e.message.contains('Z'), "{}", e.message);
    }
}
