//! `[limits]` (rate limits and SMS-pumping defence) and `[[clients]]` (the
//! authentication backends allowed to call otpd). Both can be changed by a reload.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ConfigError, invalid};
use crate::numbers::reader::Region;

/// A rate limit as written: `"COUNT/PERIOD"` (all COUNT allowed at once),
/// `{ rate = "COUNT/PERIOD", burst = N }`, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Off,
    Limit {
        count: u32,
        period: Duration,
        burst: u32,
    },
}

impl Rate {
    pub const fn per(count: u32, secs: u64) -> Rate {
        Rate::Limit {
            count,
            period: Duration::from_secs(secs),
            burst: count,
        }
    }

    pub const fn with_burst(count: u32, secs: u64, burst: u32) -> Rate {
        Rate::Limit {
            count,
            period: Duration::from_secs(secs),
            burst,
        }
    }

    /// Count per second, for shares of a rate.
    pub fn per_second(self) -> f64 {
        match self {
            Rate::Off => f64::INFINITY,
            Rate::Limit { count, period, .. } => f64::from(count) / period.as_secs_f64(),
        }
    }

    pub(super) fn validate(self, key: &str) -> Result<(), ConfigError> {
        if let Rate::Limit { burst, .. } = self
            && (burst == 0 || burst > 1_000_000)
        {
            return Err(invalid(key, self.to_string(), "burst must be 1 to 1000000"));
        }
        // The spacing GCRA keeps between requests, period / count, must be a
        // whole nanosecond at least and at most a year.
        let year = Duration::from_secs(365 * 24 * 3600);
        if let Rate::Limit { count, period, .. } = self
            && (count == 0 || !(Duration::from_nanos(1)..=year).contains(&(period / count)))
        {
            return Err(invalid(
                key,
                self.to_string(),
                "the count must be at least 1, and the period divided by the count between 1ns and a year",
            ));
        }
        Ok(())
    }

    /// Parse `COUNT/PERIOD` or `off`.
    fn parse(s: &str) -> Result<Rate, String> {
        let s = s.trim();
        if s == "off" {
            return Ok(Rate::Off);
        }
        let (count, period) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected COUNT/PERIOD (like \"5/10m\") or \"off\""))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: the count must be a whole number"))?;
        let period = period.trim();
        // "5/s", "100/min": a bare unit is one of it.
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            humantime::parse_duration(period)
        } else {
            humantime::parse_duration(&format!("1{period}"))
        }
        .map_err(|e| format!("`{s}`: the period: {e}"))?;
        Ok(Rate::Limit {
            count,
            period,
            burst: count,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Off => f.write_str("off"),
            Rate::Limit {
                count,
                period,
                burst,
            } => {
                write!(f, "{count}/{}", humantime::format_duration(*period))?;
                if burst != count {
                    write!(f, " (burst {burst})")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RateForm {
    Text(String),
    Table {
        rate: String,
        #[serde(default)]
        burst: Option<u32>,
    },
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let form = RateForm::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a rate: \"COUNT/PERIOD\", { rate = \"COUNT/PERIOD\", burst = N } or \"off\"",
            )
        })?;
        let (text, burst) = match form {
            RateForm::Text(t) => (t, None),
            RateForm::Table { rate, burst } => (rate, burst),
        };
        let rate = Rate::parse(&text).map_err(serde::de::Error::custom)?;
        Ok(match (rate, burst) {
            (Rate::Limit { count, period, .. }, Some(burst)) => Rate::Limit {
                count,
                period,
                burst,
            },
            (rate, _) => rate,
        })
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Rate::Off => s.serialize_str("off"),
            Rate::Limit {
                count,
                period,
                burst,
            } => {
                let rate = format!("{count}/{}", humantime::format_duration(period));
                if burst == count {
                    s.serialize_str(&rate)
                } else {
                    RateForm::Table {
                        rate,
                        burst: Some(burst),
                    }
                    .serialize(s)
                }
            }
        }
    }
}

/// Rate limits, checked together before a code is made: a request refused by one
/// of them is charged to none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Codes sent to one number.
    pub destination: Rate,
    /// Codes requested for one subject (identity number).
    pub subject: Rate,
    /// Codes requested from one end-user IP address (the request's `ip`).
    pub ip: Rate,
    /// Codes requested from one network (`ipv4_prefix`, `ipv6_prefix`).
    pub ip_prefix: Rate,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Codes sent to one country, for every country…
    pub country: Rate,
    /// …or, for the countries named here (ISO 3166-1 alpha-2), this rate instead.
    pub countries: BTreeMap<String, Rate>,
    /// Codes sent under a number prefix (`"+88213"`); the longest prefix applies.
    pub prefixes: BTreeMap<String, Rate>,
    /// All codes of a purpose, from every client: the capacity that clients'
    /// `reserved` shares divide.
    pub purposes: BTreeMap<String, Rate>,
    /// Checks from one end-user IP address, across verifications.
    pub check_ip: Rate,
    /// Wrong codes for one subject, across verifications. Past it, the verification
    /// being guessed is locked and no new code is made for the subject until the
    /// rate allows again.
    pub check_subject: Rate,
    /// Calls to the routes anyone may call without an API key (the app's answers
    /// and acknowledgements), per caller network (the connection's address, or a
    /// trusted proxy's word; IPv4 addresses, IPv6 /64s), on each node. Bounds the
    /// work a flood can cause.
    pub public_ip: Rate,
    /// Refused answers and acknowledgements (no valid signature of an enrolled key,
    /// a wrong acknowledgement token) per caller network, across nodes. Past it, the
    /// network's answers are refused before they are judged. A refusal is never
    /// charged to the subject: a stranger cannot lock a citizen out.
    pub answer_ip: Rate,
    /// Identical requests (same client, number and purpose) this close to the last
    /// send are the same request: they get the same verification and send nothing.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// How often keys back to a full burst are forgotten.
    #[serde(with = "humantime_serde")]
    pub reclaim_interval: Duration,
    pub pumping: PumpingConfig,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            destination: Rate::per(5, 600),
            subject: Rate::per(10, 3600),
            ip: Rate::with_burst(30, 600, 10),
            ip_prefix: Rate::with_burst(300, 600, 100),
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            country: Rate::Off,
            countries: BTreeMap::new(),
            prefixes: BTreeMap::new(),
            purposes: BTreeMap::new(),
            check_ip: Rate::with_burst(60, 600, 20),
            check_subject: Rate::per(10, 3600),
            public_ip: Rate::with_burst(100, 1, 200),
            answer_ip: Rate::with_burst(30, 600, 10),
            dedupe_window: Duration::from_secs(10),
            reclaim_interval: Duration::from_secs(10),
            pumping: PumpingConfig::default(),
        }
    }
}

/// What happens to a prefix whose conversion fell too low.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PumpingMode {
    /// Refuse every request to it.
    Block,
    /// Let `throttle` through, refuse the rest.
    Throttle,
    /// Let everything through; log and count what would have been refused.
    Monitor,
}

impl PumpingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PumpingMode::Block => "block",
            PumpingMode::Throttle => "throttle",
            PumpingMode::Monitor => "monitor",
        }
    }
}

/// SMS-pumping defence: sends against successful checks, per country and prefix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PumpingConfig {
    pub mode: PumpingMode,
    /// How far back sends and successful checks count.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Sends younger than this are not counted yet: people need time to type.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Sends (in the window, past the grace) before conversion is judged.
    pub min_sends: u32,
    /// Successful checks per send below which a prefix or country is suspect.
    pub min_conversion: f64,
    /// Digits of the number (country code included) that make a tracked prefix.
    pub prefix_digits: u8,
    /// What a suspect prefix still gets in `throttle` mode.
    pub throttle: Rate,
    /// Prefixes and countries tracked at once; beyond, the quietest are forgotten.
    pub max_tracked: usize,
    /// Never judged (countries, or prefixes like `"+3460"`).
    pub allow: Vec<String>,
    /// Always refused.
    pub deny: Vec<String>,
}

impl Default for PumpingConfig {
    fn default() -> Self {
        Self {
            mode: PumpingMode::Throttle,
            window: Duration::from_secs(3600),
            grace: Duration::from_secs(120),
            min_sends: 50,
            min_conversion: 0.2,
            prefix_digits: 6,
            throttle: Rate::per(1, 60),
            max_tracked: 100_000,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// An authentication backend allowed to call otpd.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Shown in logs, metrics and verifications.
    pub name: String,
    /// SHA-256 of its API key, written in hex (`otpd hash-key` makes a key and its
    /// hash); read into bytes when the file is parsed.
    pub key_sha256: KeyDigest,
    /// Codes it may request.
    #[serde(default = "client_rate")]
    pub rate: Rate,
    /// Purposes it may use; empty: all.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// Countries it may send to (ISO 3166-1 alpha-2); empty: all.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Share (0 to 1) of each purpose's capacity (`limits.purposes`) kept for this
    /// client alone, so that another client's surge cannot take it.
    #[serde(default)]
    pub reserved: f64,
    /// May use `/v1/admin/*`.
    #[serde(default)]
    pub admin: bool,
    /// Its name as people know it, shown in the app when it asks for an approval;
    /// absent: `name`.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Its requests by `subject` must carry the subject's contrast value.
    #[serde(default)]
    pub require_contrast: bool,
    /// What it may do with the subscriber registry (`/v1/subscribers`): `none`,
    /// `read` (look a subject's number and devices up) or `write` (register, change
    /// and remove subjects, enroll devices and their keys). Only the backend that
    /// enrolls citizens should write.
    #[serde(default)]
    pub registry: RegistryAccess,
    /// Its requests by a registered subject may carry another `to` than the
    /// subject's number (the code then goes by SMS to that number only, and the
    /// verification records the override). Without it such requests are refused.
    #[serde(default)]
    pub override_to: bool,
    /// Where its events are POSTed (Standard Webhooks); absent: no webhook.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The key its webhooks are signed with: `whsec_` and 24 to 64 bytes in base64.
    /// Required with `webhook_url`.
    #[serde(default)]
    pub webhook_secret: Option<crate::secrets::webhook::WebhookSecret>,
    /// Keep its events for `GET /v1/events` even without a webhook.
    #[serde(default)]
    pub keep_events: bool,
}

impl ClientConfig {
    /// Whether its events are kept (for its webhook or `GET /v1/events`).
    pub fn keeps_events(&self) -> bool {
        self.keep_events || self.webhook_url.is_some()
    }
}

/// The SHA-256 of an API key. The file writes it as 64 hex digits; it is read
/// into bytes when the file is parsed, so that a malformed one is refused there,
/// by its line, and nothing later has to decode it again.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of `key`.
    pub fn of(key: &str) -> KeyDigest {
        use sha2::{Digest, Sha256};
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl TryFrom<String> for KeyDigest {
    type Error = String;

    fn try_from(hex_digits: String) -> Result<KeyDigest, String> {
        let mut digest = [0u8; 32];
        match hex::decode_to_slice(&hex_digits, &mut digest) {
            Ok(()) => Ok(KeyDigest(digest)),
            Err(_) => Err(format!(
                "expected the SHA-256 of the API key, 64 hex digits (`otpd hash-key` prints one), not {hex_digits:?}"
            )),
        }
    }
}

impl From<KeyDigest> for String {
    fn from(d: KeyDigest) -> String {
        d.to_string()
    }
}

impl fmt::Display for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({self})")
    }
}

/// A client's access to the subscriber registry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistryAccess {
    #[default]
    None,
    Read,
    Write,
}

impl RegistryAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryAccess::None => "none",
            RegistryAccess::Read => "read",
            RegistryAccess::Write => "write",
        }
    }
}

fn client_rate() -> Rate {
    Rate::Off
}

impl ClientConfig {
    /// A client known by its name and key's digest and nothing else: no quota of
    /// its own, every purpose and country, no reserved share, no admin, registry or
    /// override rights — what the file gives a `[[clients]]` entry with those two.
    pub fn new(name: impl Into<String>, key_sha256: KeyDigest) -> Self {
        ClientConfig {
            name: name.into(),
            key_sha256,
            rate: client_rate(),
            purposes: Vec::new(),
            countries: Vec::new(),
            reserved: 0.0,
            admin: false,
            display_name: None,
            require_contrast: false,
            registry: RegistryAccess::None,
            override_to: false,
            webhook_url: None,
            webhook_secret: None,
            keep_events: false,
        }
    }
}

/// A destination in an allow or deny list: a country or a number prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Country(Region),
    /// Digits of the number, country code first.
    Prefix {
        digits: u64,
        len: u8,
    },
}

/// `ES`, or `+88213` / `88213`.
pub fn parse_destination(s: &str) -> Option<Destination> {
    if let Some(r) = Region::parse(s)
        && s.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return Some(Destination::Country(r));
    }
    parse_prefix(s).map(|(digits, len)| Destination::Prefix { digits, len })
}

/// `+88213` or `88213`: 1 to 15 digits, not starting with 0.
pub fn parse_prefix(s: &str) -> Option<(u64, u8)> {
    let d = s.strip_prefix('+').unwrap_or(s);
    (!d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0'))
        .then(|| (d.parse().expect("digits"), d.len() as u8))
}

impl LimitsConfig {
    pub(super) fn validate(&self, purposes: &[&str]) -> Result<(), ConfigError> {
        for (key, rate) in [
            ("destination", self.destination),
            ("subject", self.subject),
            ("ip", self.ip),
            ("ip_prefix", self.ip_prefix),
            ("country", self.country),
            ("check_ip", self.check_ip),
            ("check_subject", self.check_subject),
            ("public_ip", self.public_ip),
            ("answer_ip", self.answer_ip),
            ("pumping.throttle", self.pumping.throttle),
        ] {
            rate.validate(&format!("limits.{key}"))?;
        }
        if !(8..=32).contains(&self.ipv4_prefix) {
            return Err(invalid(
                "limits.ipv4_prefix",
                self.ipv4_prefix,
                "must be between 8 and 32",
            ));
        }
        if !(16..=128).contains(&self.ipv6_prefix) {
            return Err(invalid(
                "limits.ipv6_prefix",
                self.ipv6_prefix,
                "must be between 16 and 128",
            ));
        }
        for (country, rate) in &self.countries {
            let key = format!("limits.countries.{country}");
            if Region::parse(country).is_none() {
                return Err(invalid(key, country, "expected a two-letter country code"));
            }
            rate.validate(&key)?;
        }
        for (prefix, rate) in &self.prefixes {
            let key = format!("limits.prefixes.\"{prefix}\"");
            if parse_prefix(prefix).is_none() {
                return Err(invalid(
                    key,
                    prefix,
                    "expected a number prefix: 1 to 15 digits after an optional +",
                ));
            }
            rate.validate(&key)?;
        }
        for (purpose, rate) in &self.purposes {
            let key = format!("limits.purposes.{purpose}");
            if !purposes.contains(&purpose.as_str()) {
                return Err(invalid(
                    key,
                    purpose,
                    format!("no such purpose; configured: {}", purposes.join(", ")),
                ));
            }
            rate.validate(&key)?;
        }
        if self.dedupe_window > Duration::from_secs(300) {
            return Err(invalid(
                "limits.dedupe_window",
                humantime::format_duration(self.dedupe_window).to_string(),
                "must be at most 5m",
            ));
        }
        if self.reclaim_interval < Duration::from_millis(100) {
            return Err(invalid(
                "limits.reclaim_interval",
                humantime::format_duration(self.reclaim_interval).to_string(),
                "must be at least 100ms",
            ));
        }
        self.pumping.validate()
    }
}

impl PumpingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("limits.pumping.{k}");
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(7 * 86_400) {
            return Err(invalid(
                key("window"),
                humantime::format_duration(self.window).to_string(),
                "must be between 1s and 7d",
            ));
        }
        if self.grace >= self.window {
            return Err(invalid(
                key("grace"),
                humantime::format_duration(self.grace).to_string(),
                "must be shorter than the window",
            ));
        }
        if self.min_sends == 0 {
            return Err(invalid(
                key("min_sends"),
                self.min_sends,
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.min_conversion) {
            return Err(invalid(
                key("min_conversion"),
                self.min_conversion,
                "must be between 0 and 1",
            ));
        }
        if !(1..=15).contains(&self.prefix_digits) {
            return Err(invalid(
                key("prefix_digits"),
                self.prefix_digits,
                "must be between 1 and 15",
            ));
        }
        if self.pumping_throttle_off() {
            return Err(invalid(
                key("throttle"),
                "off",
                "throttle mode needs a rate (use mode = \"block\" to refuse all)",
            ));
        }
        if !(1..=10_000_000).contains(&self.max_tracked) {
            return Err(invalid(
                key("max_tracked"),
                self.max_tracked,
                "must be between 1 and 10000000",
            ));
        }
        for (list, entries) in [("allow", &self.allow), ("deny", &self.deny)] {
            for entry in entries {
                if parse_destination(entry).is_none() {
                    return Err(invalid(
                        key(list),
                        entry,
                        "expected a country (\"ES\") or a number prefix (\"+88213\")",
                    ));
                }
            }
        }
        Ok(())
    }

    fn pumping_throttle_off(&self) -> bool {
        self.mode == PumpingMode::Throttle && self.throttle == Rate::Off
    }
}

/// `[[clients]]`: checked against the purposes and each other.
pub(super) fn validate_clients(
    clients: &[ClientConfig],
    purposes: &[&str],
) -> Result<(), ConfigError> {
    let mut reserved = 0.0;
    for (i, c) in clients.iter().enumerate() {
        let key = |k: &str| format!("clients[{i}].{k}");
        if c.name.is_empty()
            || c.name.len() > 64
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                key("name"),
                &c.name,
                "a client name is 1 to 64 of A-Z, a-z, 0-9, -, _ and .",
            ));
        }
        if clients[..i].iter().any(|o| o.name == c.name) {
            return Err(invalid(key("name"), &c.name, "two clients have this name"));
        }
        if clients[..i].iter().any(|o| o.key_sha256 == c.key_sha256) {
            return Err(invalid(
                key("key_sha256"),
                c.key_sha256.to_string(),
                "two clients have the same key",
            ));
        }
        if let Some(d) = &c.display_name {
            super::validate_display_name(&key("display_name"), d)?;
        }
        c.rate.validate(&key("rate"))?;
        for p in &c.purposes {
            if !purposes.contains(&p.as_str()) {
                return Err(invalid(
                    key("purposes"),
                    p,
                    format!("no such purpose; configured: {}", purposes.join(", ")),
                ));
            }
        }
        for country in &c.countries {
            if Region::parse(country).is_none() {
                return Err(invalid(
                    key("countries"),
                    country,
                    "expected a two-letter country code",
                ));
            }
        }
        super::events::validate_webhook(
            &key("webhook_url"),
            c.webhook_url.as_deref(),
            c.webhook_secret.is_some(),
        )?;
        if !(0.0..=1.0).contains(&c.reserved) {
            return Err(invalid(
                key("reserved"),
                c.reserved,
                "must be between 0 and 1",
            ));
        }
        reserved += c.reserved;
    }
    if reserved > 1.0 + 1e-9 {
        return Err(invalid(
            "clients[].reserved",
            reserved,
            "the reserved shares add up to more than 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(toml_value: &str) -> Result<Rate, String> {
        #[derive(Deserialize)]
        struct W {
            r: Rate,
        }
        toml_value_parse(toml_value).map(|w: W| w.r)
    }

    fn toml_value_parse<T: serde::de::DeserializeOwned>(v: &str) -> Result<T, String> {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(&format!("r = {v}")))
            .extract()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn rates_read_as_written() {
        assert_eq!(rate("\"5/10m\"").unwrap(), Rate::per(5, 600));
        assert_eq!(rate("\"100/s\"").unwrap(), Rate::per(100, 1));
        assert_eq!(rate("\"off\"").unwrap(), Rate::Off);
        assert_eq!(
            rate("{ rate = \"30/10m\", burst = 10 }").unwrap(),
            Rate::with_burst(30, 600, 10)
        );
        assert!(rate("\"5\"").unwrap_err().contains("COUNT/PERIOD"));
        assert!(rate("\"x/10m\"").unwrap_err().contains("whole number"));
        assert!(rate("\"5/ten\"").unwrap_err().contains("period"));
        assert!(rate("5").unwrap_err().contains("expected a rate"));
    }

    #[test]
    fn rates_write_back_the_same() {
        for r in [Rate::per(5, 600), Rate::with_burst(30, 600, 10), Rate::Off] {
            let text = toml_string(&r);
            assert_eq!(rate(&text).unwrap(), r, "{text}");
        }
    }

    fn toml_string(r: &Rate) -> String {
        serde_json::to_string(r)
            .unwrap()
            .replace("\"rate\":", "rate = ")
            .replace("\"burst\":", "burst = ")
            .replace(',', ", ")
    }

    #[test]
    fn destinations_are_countries_or_prefixes() {
        assert_eq!(
            parse_destination("ES"),
            Some(Destination::Country(Region::parse("ES").unwrap()))
        );
        assert_eq!(
            parse_destination("+88213"),
            Some(Destination::Prefix {
                digits: 88213,
                len: 5
            })
        );
        assert_eq!(parse_destination("0034"), None);
        assert_eq!(parse_destination("E1"), None);
        assert_eq!(parse_destination(""), None);
    }
}
