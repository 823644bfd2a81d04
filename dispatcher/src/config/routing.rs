//! `[routing]` (which carriers a number goes to) and `[messages]` (the texts): the
//! parts of the configuration a reload can change while otpd runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix routes, the default route, failover and carrier health.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Carriers for numbers no prefix matches; empty: the `delivery.sms` carrier.
    pub default: Vec<RouteCarrier>,
    /// Routes by number prefix (country code and more digits, without `+`); the
    /// longest matching prefix wins.
    pub routes: Vec<RouteConfig>,
    /// A code with less validity left than this is not sent: it is marked expired.
    #[serde(with = "humantime_serde")]
    pub min_validity_left: Duration,
    /// When a carrier counts as unhealthy.
    pub breaker: BreakerSection,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            default: Vec::new(),
            routes: Vec::new(),
            min_validity_left: Duration::from_secs(30),
            breaker: BreakerSection::default(),
        }
    }
}

/// One prefix route: carriers in order, or blocked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    #[serde(default)]
    pub carriers: Vec<RouteCarrier>,
    /// Numbers under this prefix are refused (premium ranges, countries not served).
    #[serde(default)]
    pub blocked: bool,
}

/// A carrier of a route: its name (priority by position), or a table with
/// `carrier`, `priority` (lower first) and `weight` (share among equal priorities).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RouteCarrier {
    Name(String),
    Weighted {
        carrier: String,
        #[serde(default)]
        priority: Option<u32>,
        #[serde(default)]
        weight: Option<u32>,
    },
}

impl RouteCarrier {
    pub fn name(&self) -> &str {
        match self {
            RouteCarrier::Name(n) => n,
            RouteCarrier::Weighted { carrier, .. } => carrier,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// How far back sends count for the error rate.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Sends in the window before the rate is judged.
    pub min_sends: u32,
    /// Share of failed sends (0 to 1) that opens the breaker.
    pub error_rate: f64,
    /// How long an open breaker waits before one probe.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
}

impl Default for BreakerSection {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            min_sends: 20,
            error_rate: 0.5,
            cool_down: Duration::from_secs(15),
        }
    }
}

/// Message texts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// What `{app}` says.
    pub app: String,
    /// SMS (segments) one message may take, 1 to 10.
    pub max_segments: usize,
    /// Language by the number's country (ISO 3166-1 alpha-2), used when neither the
    /// request nor the subscriber names one.
    pub country_locales: BTreeMap<String, String>,
    /// Templates by purpose (`*`: every purpose) and language.
    pub templates: Vec<TemplateConfig>,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self {
            app: "Cl@ve".into(),
            max_segments: 2,
            country_locales: [
                ("ES", "es"),
                ("AD", "ca"),
                ("GB", "en"),
                ("IE", "en"),
                ("US", "en"),
                ("CA", "en"),
                ("AU", "en"),
                ("NZ", "en"),
            ]
            .into_iter()
            .map(|(c, l)| (c.to_string(), l.to_string()))
            .collect(),
            templates: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// A purpose of [purposes], or `*` for all.
    pub purpose: String,
    pub locale: String,
    /// With `{code}`, and optionally `{ttl_minutes}` and `{app}`.
    pub text: String,
    /// Android SMS Retriever: the app's 11-character hash, added on its own line.
    #[serde(default)]
    pub android_app_hash: Option<String>,
    /// Domain-bound code (iOS, WebOTP): adds `@domain #code` as the last line.
    #[serde(default)]
    pub domain: Option<String>,
}
