//! A load-test scenario, as read from its TOML file (`config/loadtest/*.toml`): how
//! much traffic and in what shape, who the people are and what they do, the carriers
//! and push providers to simulate, what goes wrong during the run, and how otpd is
//! configured. Every key is checked when the file is read; an error names the key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::profile::RateProfile;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: `{key}` {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seed of every draw (people, behaviour, simulators): runs repeat.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How long new people arrive.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// After the arrivals stop: how long to wait, at most, for codes still on their way
    /// and people still typing.
    #[serde(with = "humantime_serde", default = "default_drain")]
    pub drain: Duration,
    /// No more arrivals than this, whatever the rate.
    pub max_requests: u64,
    /// HTTP/1.1 connections to otpd.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Requests on one connection at once (HTTP/1.1 pipelining): 1 waits for each
    /// answer before the next request, as a plain keep-alive client does; more
    /// writes the requests that are ready together, as a busy backend's client can.
    #[serde(default = "default_pipeline")]
    pub pipeline: usize,
    /// Requests started and not yet answered, at most; an arrival beyond it is not
    /// sent and is counted as dropped by the generator (the offered load was more than
    /// the tool could carry, and the report says so).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// A request's longest wait for its answer: past it the request is counted as
    /// a transport error and its connection is opened again, so a stalled otpd ends
    /// the run on time instead of holding it.
    #[serde(with = "humantime_serde", default = "default_answer_timeout")]
    pub answer_timeout: Duration,
    pub rate: RateProfile,
    #[serde(default)]
    pub population: PopulationConfig,
    #[serde(default)]
    pub behaviour: BehaviourConfig,
    /// A pumping attack mixed into the traffic, if any.
    #[serde(default)]
    pub abuse: Option<AbuseConfig>,
    /// After the people: checks at a fixed rate against codes already issued, to
    /// measure the check path alone.
    #[serde(default)]
    pub check_burst: Option<CheckBurst>,
    /// The SMSCs, one per carrier (at least one).
    pub carriers: Vec<CarrierSim>,
    #[serde(default)]
    pub push: PushSim,
    /// Things that go wrong during the run, in time order.
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default)]
    pub otpd: OtpdConfig,
}

fn default_seed() -> u64 {
    0x05EE_D0FC_1A7E
}
fn default_drain() -> Duration {
    Duration::from_secs(30)
}
fn default_connections() -> usize {
    64
}
fn default_pipeline() -> usize {
    1
}
fn default_answer_timeout() -> Duration {
    crate::http::ANSWER_WITHIN
}
fn default_max_in_flight() -> usize {
    20_000
}

/// Shares are fractions between 0 and 1.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PopulationConfig {
    /// People, each with one identity number and one mobile number.
    pub subjects: u64,
    /// Of the people, those with a NIE (foreign resident) rather than a DNI.
    pub nie_share: f64,
    /// Of the people, those whose mobile number is foreign.
    pub foreign_share: f64,
    /// Foreign numbers by country (ISO code → weight).
    pub foreign: BTreeMap<String, f64>,
    /// Of the people, those with the app on their phone.
    pub app_share: f64,
    /// Apps by push provider (`apns`, `fcm`, `hms` → weight).
    pub apps: BTreeMap<String, f64>,
    /// Of the people with the app, those asked to approve in it (`channel: app`,
    /// Cl@ve Móvil) instead of typing a PIN: their app answers with a signature by
    /// the key it enrolled.
    pub approval_share: f64,
    /// Languages of people with Spanish numbers (es, ca, gl, eu, va, en → weight);
    /// foreign numbers ask in English.
    pub locales: BTreeMap<String, f64>,
    /// Distinct end-user IP addresses the requests come from.
    pub ips: u32,
}

impl Default for PopulationConfig {
    fn default() -> Self {
        let map = |pairs: &[(&str, f64)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        Self {
            subjects: 1_000_000,
            nie_share: 0.1,
            foreign_share: 0.04,
            foreign: map(&[
                ("FR", 0.25),
                ("PT", 0.15),
                ("GB", 0.15),
                ("DE", 0.1),
                ("RO", 0.1),
                ("MA", 0.1),
                ("IT", 0.05),
                ("CO", 0.05),
                ("EC", 0.05),
            ]),
            app_share: 0.3,
            apps: map(&[("apns", 0.4), ("fcm", 0.55), ("hms", 0.05)]),
            approval_share: 0.0,
            locales: map(&[
                ("es", 0.72),
                ("ca", 0.12),
                ("gl", 0.05),
                ("eu", 0.03),
                ("va", 0.05),
                ("en", 0.03),
            ]),
            ips: 1_000_000,
        }
    }
}

/// What people do with the code they receive. The four shares add up to 1.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BehaviourConfig {
    /// Type the right code.
    pub right: f64,
    /// Type a wrong code first, then the right one.
    pub wrong_then_right: f64,
    /// Ask for the code again before typing it.
    pub resend: f64,
    /// Never type anything.
    pub never: f64,
    /// From the code's arrival to the check: drawn uniformly in this range.
    #[serde(with = "humantime_serde")]
    pub typing_min: Duration,
    #[serde(with = "humantime_serde")]
    pub typing_max: Duration,
    /// From the push's arrival to the app's acknowledgement.
    #[serde(with = "humantime_serde")]
    pub app_ack: Duration,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        Self {
            right: 0.86,
            wrong_then_right: 0.05,
            resend: 0.03,
            never: 0.06,
            typing_min: Duration::from_secs(4),
            typing_max: Duration::from_secs(20),
            app_ack: Duration::from_millis(300),
        }
    }
}

/// SMS pumping: requests for numbers in one range that nobody will ever check, from
/// few addresses, mixed into the people's traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbuseConfig {
    /// Of all arrivals, the share that are the attack.
    pub share: f64,
    /// The attacked range: a `+` and digits, then `X` for each digit drawn
    /// (e.g. `+2126XXXXXXXX`); read into a pattern when the file is parsed.
    #[serde(deserialize_with = "abuse_numbers")]
    pub numbers: crate::population::Pattern,
    /// Addresses the attack comes from.
    #[serde(default = "default_abuse_ips")]
    pub ips: u32,
    /// When the attack starts, from the start of the run.
    #[serde(with = "humantime_serde", default)]
    pub start: Duration,
}

/// `abuse.numbers` as a pattern, its error naming the key as the checks of
/// [`Scenario::validate`] do.
fn abuse_numbers<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<crate::population::Pattern, D::Error> {
    let text = String::deserialize(d)?;
    crate::population::Pattern::parse(&text)
        .map_err(|m| serde::de::Error::custom(format!("`abuse.numbers` {m}")))
}

fn default_abuse_ips() -> u32 {
    50
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBurst {
    /// Checks per second, open loop.
    pub rate: f64,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// One carrier's SMSC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierSim {
    pub name: String,
    /// Route prefixes this carrier serves first (E.164 digits, no `+`); a carrier with
    /// none is on the default route.
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default = "default_binds")]
    pub binds: u32,
    #[serde(default = "default_window")]
    pub window: u32,
    /// otpd's cap for this carrier (messages per second across its binds).
    #[serde(default)]
    pub tps: Option<u32>,
    /// The SMSC's answer latency.
    #[serde(with = "humantime_serde", default)]
    pub latency: Duration,
    /// Delay of the delivery receipt after the answer.
    #[serde(with = "humantime_serde", default = "default_receipt_delay")]
    pub receipt_delay: Duration,
    /// Share of receipts saying UNDELIV.
    #[serde(default)]
    pub undeliverable: f64,
}

fn default_binds() -> u32 {
    2
}
fn default_window() -> u32 {
    64
}
fn default_receipt_delay() -> Duration {
    Duration::from_millis(500)
}

/// The push providers' stand-ins (one server per provider, so one can be degraded
/// alone).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSim {
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
}

impl Default for PushSim {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
        }
    }
}

/// Something that happens at a time of the run (`at`, from its start).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The carrier's SMSC stops answering anything (connections stay open).
    CarrierHang {
        #[serde(with = "humantime_serde")]
        at: Duration,
        carrier: String,
    },
    /// It answers again.
    CarrierResume {
        #[serde(with = "humantime_serde")]
        at: Duration,
        carrier: String,
    },
    /// A push provider answers after this long.
    PushLatency {
        #[serde(with = "humantime_serde")]
        at: Duration,
        provider: String,
        #[serde(with = "humantime_serde")]
        latency: Duration,
    },
}

impl Event {
    pub fn at(&self) -> Duration {
        match self {
            Event::CarrierHang { at, .. }
            | Event::CarrierResume { at, .. }
            | Event::PushLatency { at, .. } => *at,
        }
    }
}

/// How the otpd the tool starts is configured, beyond the carriers and providers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtpdConfig {
    /// `embedded` (otpd's default: kept on disk), `memory` (nothing on disk) or
    /// `redis`.
    pub store: String,
    /// A Redis of yours (loopback, `redis://host:port`); by default the tool starts
    /// its own `redis-server` on a free port.
    pub redis_url: Option<String>,
    /// Tokio worker threads of otpd (default: one per core).
    pub worker_threads: Option<usize>,
    pub delivery_concurrency: usize,
    pub queue_capacity: usize,
    /// otpd's `delivery.max_queue_delay`: past it, requests are refused until the
    /// delivery catches up (otpd's default when unset).
    #[serde(default, with = "humantime_serde::option")]
    pub max_queue_delay: Option<Duration>,
    /// The app's acknowledgement is awaited this long before the code goes by SMS.
    #[serde(with = "humantime_serde")]
    pub escalate_after: Duration,
    /// An unanswered SMPP request declares the bind dead.
    #[serde(with = "humantime_serde")]
    pub smpp_response_timeout: Duration,
    /// otpd's push client timeout.
    #[serde(with = "humantime_serde")]
    pub push_timeout: Duration,
    /// More TOML appended to the generated configuration (limits, breaker…).
    pub extra: String,
}

impl Default for OtpdConfig {
    fn default() -> Self {
        Self {
            store: "embedded".into(),
            redis_url: None,
            worker_threads: None,
            delivery_concurrency: 512,
            queue_capacity: 200_000,
            max_queue_delay: None,
            escalate_after: Duration::from_secs(60),
            smpp_response_timeout: Duration::from_secs(2),
            push_timeout: Duration::from_secs(5),
            extra: String::new(),
        }
    }
}

/// The provider names a scenario may use.
pub const PROVIDERS: [&str; 3] = ["apns", "fcm", "hms"];
/// Cl@ve's languages.
pub const LOCALES: [&str; 6] = ["es", "ca", "gl", "eu", "va", "en"];

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Read and check a scenario; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ScenarioError> {
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        scenario.rate.fit(scenario.duration);
        scenario
            .validate()
            .map_err(|(key, message)| ScenarioError::Invalid {
                path: path.to_string(),
                key,
                message,
            })?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: String| Err((key.to_string(), message));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad("name", "must be letters, digits, `-` or `_`".into());
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(24 * 3600) {
            return bad("duration", "must be between 1s and 24h".into());
        }
        if self.drain > Duration::from_secs(3600) {
            return bad("drain", "must be at most 1h".into());
        }
        if self.max_requests == 0 {
            return bad("max_requests", "must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.connections) {
            return bad("connections", "must be between 1 and 10000".into());
        }
        if !(1..=1024).contains(&self.pipeline) {
            return bad("pipeline", "must be between 1 and 1024".into());
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1".into());
        }
        if self.answer_timeout < Duration::from_millis(100)
            || self.answer_timeout > Duration::from_secs(600)
        {
            return bad("answer_timeout", "must be between 100ms and 10m".into());
        }
        self.rate
            .validate()
            .map_err(|(k, m)| (format!("rate.{k}"), m))?;
        self.validate_population()?;
        self.validate_behaviour()?;
        self.validate_carriers()?;
        match self.otpd.store.as_str() {
            "embedded" | "memory" => {}
            "redis" => match &self.otpd.redis_url {
                Some(url) if crate::target::loopback_url(url) => {}
                Some(_) => return bad("otpd.redis_url", "must be a loopback address".into()),
                None => {}
            },
            other => {
                return bad(
                    "otpd.store",
                    format!("`{other}` is not embedded, memory or redis"),
                );
            }
        }
        if self.otpd.delivery_concurrency == 0 || self.otpd.queue_capacity == 0 {
            return bad(
                "otpd",
                "delivery_concurrency and queue_capacity must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// `[population]`: who the simulated people are.
    fn validate_population(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: String| Err((key.to_string(), message));
        let p = &self.population;
        if !(1..=100_000_000).contains(&p.subjects) {
            return bad(
                "population.subjects",
                "must be between 1 and 100000000".into(),
            );
        }
        for (key, share) in [
            ("population.nie_share", p.nie_share),
            ("population.foreign_share", p.foreign_share),
            ("population.app_share", p.app_share),
            ("population.approval_share", p.approval_share),
        ] {
            share_in_range(key, share)?;
        }
        if p.nie_share > 0.3 {
            return bad(
                "population.nie_share",
                "must be at most 0.3 (the NIE numbers available)".into(),
            );
        }
        if p.ips == 0 {
            return bad("population.ips", "must be at least 1".into());
        }
        weights(
            "population.foreign",
            &p.foreign,
            |c| crate::population::foreign_pattern(c).is_some(),
            "a country with a mobile pattern (FR, PT, GB, DE, RO, MA, IT, CO, EC, US)",
        )?;
        weights(
            "population.apps",
            &p.apps,
            |k| PROVIDERS.contains(&k),
            "apns, fcm or hms",
        )?;
        weights(
            "population.locales",
            &p.locales,
            |k| LOCALES.contains(&k),
            "es, ca, gl, eu, va or en",
        )?;
        Ok(())
    }

    /// `[behaviour]`, `[abuse]` and `[check_burst]`: what the people do.
    fn validate_behaviour(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: String| Err((key.to_string(), message));
        let b = &self.behaviour;
        for (key, share) in [
            ("behaviour.right", b.right),
            ("behaviour.wrong_then_right", b.wrong_then_right),
            ("behaviour.resend", b.resend),
            ("behaviour.never", b.never),
        ] {
            share_in_range(key, share)?;
        }
        let total = b.right + b.wrong_then_right + b.resend + b.never;
        if (total - 1.0).abs() > 1e-6 {
            return bad("behaviour", format!("shares add up to {total}, not 1"));
        }
        if b.typing_min > b.typing_max {
            return bad("behaviour.typing_min", "is more than typing_max".into());
        }
        if let Some(a) = &self.abuse {
            share_in_range("abuse.share", a.share)?;
            if a.ips == 0 {
                return bad("abuse.ips", "must be at least 1".into());
            }
        }
        if let Some(c) = &self.check_burst {
            if !(c.rate > 0.0 && c.rate <= 10_000_000.0) {
                return bad(
                    "check_burst.rate",
                    "must be more than 0 and at most 10000000".into(),
                );
            }
            if c.duration.is_zero() || c.duration > Duration::from_secs(3600) {
                return bad("check_burst.duration", "must be between 1s and 1h".into());
            }
        }
        Ok(())
    }

    /// `[[carriers]]` and `[[events]]`: the simulated SMSCs and what befalls them.
    fn validate_carriers(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: String| Err((key.to_string(), message));
        if self.carriers.is_empty() {
            return bad("carriers", "needs at least one carrier".into());
        }
        for (i, c) in self.carriers.iter().enumerate() {
            let key = |k: &str| format!("carriers[{i}].{k}");
            if c.name.is_empty()
                || c.name.len() > 32
                || !c
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err((
                    key("name"),
                    "must be 1 to 32 letters, digits, `-` or `_`".into(),
                ));
            }
            if self.carriers[..i].iter().any(|o| o.name == c.name) {
                return Err((key("name"), format!("`{}` is named twice", c.name)));
            }
            if c.prefixes
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err((key("prefixes"), "must be digits (no `+`)".into()));
            }
            if !(1..=64).contains(&c.binds) {
                return Err((key("binds"), "must be between 1 and 64".into()));
            }
            if !(1..=10_000).contains(&c.window) {
                return Err((key("window"), "must be between 1 and 10000".into()));
            }
            share_in_range(&key("undeliverable"), c.undeliverable)?;
        }
        for (i, e) in self.events.iter().enumerate() {
            let key = format!("events[{i}]");
            if i > 0 && e.at() < self.events[i - 1].at() {
                return Err((key, "is earlier than the event before it".into()));
            }
            match e {
                Event::CarrierHang { carrier, .. } | Event::CarrierResume { carrier, .. } => {
                    if !self.carriers.iter().any(|c| &c.name == carrier) {
                        return Err((
                            format!("{key}.carrier"),
                            format!("`{carrier}` is not a carrier of the scenario"),
                        ));
                    }
                }
                Event::PushLatency { provider, .. } => {
                    if !PROVIDERS.contains(&provider.as_str()) {
                        return Err((format!("{key}.provider"), "must be apns, fcm or hms".into()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Arrivals the rate profile offers over the duration (before `max_requests`).
    pub fn planned_arrivals(&self) -> u64 {
        crate::profile::Schedule::new(&self.rate, self.duration, self.max_requests).count() as u64
    }
}

fn share_in_range(key: &str, share: f64) -> Result<(), (String, String)> {
    if (0.0..=1.0).contains(&share) {
        Ok(())
    } else {
        Err((
            key.to_string(),
            format!("is {share}; a share is between 0 and 1"),
        ))
    }
}

fn weights(
    key: &str,
    map: &BTreeMap<String, f64>,
    known: impl Fn(&str) -> bool,
    expected: &str,
) -> Result<(), (String, String)> {
    for (k, w) in map {
        if !known(k) {
            return Err((format!("{key}.{k}"), format!("is not {expected}")));
        }
        if !(w.is_finite() && *w >= 0.0) {
            return Err((format!("{key}.{k}"), "must be a weight of 0 or more".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
duration = "5s"
max_requests = 100
rate = { kind = "constant", rate = 10 }
[[carriers]]
name = "a"
"#;

    #[test]
    fn a_minimal_scenario_takes_the_defaults() {
        let s = Scenario::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(s.population.subjects, 1_000_000);
        assert_eq!(s.connections, 64);
        assert_eq!(s.carriers[0].binds, 2);
        assert_eq!(s.planned_arrivals(), 50);
    }

    #[test]
    fn errors_name_the_key() {
        let err = |extra: &str| {
            Scenario::parse(&format!("{MINIMAL}\n{extra}"), "t.toml")
                .unwrap_err()
                .to_string()
        };
        assert!(err("[population]\nsubjects = 0").contains("`population.subjects`"));
        assert!(err("[population]\napp_share = 1.5").contains("`population.app_share` is 1.5"));
        assert!(err("[population.foreign]\nXX = 1").contains("`population.foreign.XX`"));
        assert!(err("[behaviour]\nright = 0.5").contains("add up to"));
        let short = Scenario::parse(&format!("answer_timeout = \"10ms\"\n{MINIMAL}"), "t.toml");
        assert!(short.unwrap_err().to_string().contains("`answer_timeout`"));
        assert!(err("[abuse]\nshare = 0.1\nnumbers = \"2126XX\"").contains("`abuse.numbers`"));
        assert!(
            err("[[events]]\nat = \"1s\"\naction = \"carrier_hang\"\ncarrier = \"zz\"")
                .contains("`events[0].carrier`")
        );
        assert!(
            err("[otpd]\nstore = \"redis\"\nredis_url = \"redis://10.0.0.1\"").contains("loopback")
        );
        let unknown = Scenario::parse(&format!("{MINIMAL}\nspeed = 3"), "t.toml").unwrap_err();
        assert!(unknown.to_string().contains("speed"), "{unknown}");
        let wrong_type =
            Scenario::parse(&MINIMAL.replace("100", "\"many\""), "t.toml").unwrap_err();
        assert!(
            wrong_type.to_string().contains("max_requests"),
            "{wrong_type}"
        );
    }
}
