//! Configuration: one TOML file plus `OTPD_*` environment overrides, validated before
//! anything is bound.
//!
//! Every key is documented in `config/otpd.toml`. Unknown keys, wrong types and
//! impossible values stop start-up with a message naming the key. Environment
//! variables use `__` between levels (`OTPD_SERVER__LISTEN=127.0.0.1:9000`,
//! `OTPD_PURPOSES__LOGIN__TTL=5m`); `OTPD_SECRET` is short for `OTPD_CODES__SECRET`.

pub mod events;
pub mod limits;
pub mod network;
pub mod push;
pub mod redis;
pub mod routing;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::domain::locale::{self, Locale};
use crate::numbers::reader::NumberRules;
use crate::secrets::code::CodeLength;
pub use limits::{
    ClientConfig, KeyDigest, LimitsConfig, PumpingConfig, PumpingMode, Rate, RegistryAccess,
};
pub use push::{ApnsSection, FcmSection, HmsSection, PushConfig};
pub use redis::RedisConfig;
pub use routing::{
    BreakerSection, MessagesConfig, RouteCarrier, RouteConfig, RoutingConfig, TemplateConfig,
};

/// The smallest server secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub codes: CodesConfig,
    pub numbers: NumbersConfig,
    /// Purposes by name; each verification belongs to one.
    pub purposes: BTreeMap<String, PurposeConfig>,
    pub store: StoreConfig,
    /// The shared store of many nodes, with `store.kind = "redis"`.
    pub redis: RedisConfig,
    pub idempotency: IdempotencyConfig,
    pub delivery: DeliveryConfig,
    pub channels: ChannelsConfig,
    /// Which carriers numbers go to.
    pub routing: RoutingConfig,
    /// Message texts.
    pub messages: MessagesConfig,
    /// Push providers per platform.
    pub push: PushConfig,
    /// Rate limits and the SMS-pumping defence.
    pub limits: LimitsConfig,
    /// Authentication backends allowed to call otpd; none: the API is open (for
    /// local use only).
    pub clients: Vec<ClientConfig>,
    /// Approval in the app (`channel: app`).
    pub app: AppConfig,
    /// How clients' webhooks are called.
    pub webhooks: events::WebhooksConfig,
    /// The audit trail.
    pub audit: events::AuditConfig,
    pub log: LogConfig,
}

/// Approval in the app: how its challenge is shown and its answers judged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    /// Start of the challenge URI a QR code carries (the app's registered scheme);
    /// otpd appends `?v=<id>&c=<challenge>&m=<match code>&x=<expiry>`.
    pub qr_uri: String,
    /// How far an answer's signed timestamp may be from otpd's clock, either way.
    #[serde(with = "humantime_serde")]
    pub answer_max_skew: Duration,
    /// The requester's name shown in the push when the API is open (clients have
    /// their own `display_name`).
    pub display_name: String,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            qr_uri: "otpd://approve".into(),
            answer_max_skew: Duration::from_secs(60),
            display_name: "otpd".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How long a shutdown waits for in-flight requests and deliveries.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A request's head (request line and headers) must arrive within this once
    /// begun; an HTTP/1.1 connection waiting for its next request is closed after it.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request's body must arrive whole within this (else `408`).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// An HTTP/2 connection with no request in flight is closed after this.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection with answers to send that takes none of their bytes for this
    /// long — a peer that never reads, or never opens its HTTP/2 flow-control
    /// window — is closed.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Connections open at once; past it, new ones are closed at once. Also kept
    /// below the process's file-descriptor limit, so that the store and carriers
    /// always have descriptors left.
    pub max_connections: usize,
    /// HTTP/2 streams one connection may have in flight.
    pub http2_max_streams: u32,
    /// Largest request head accepted, in bytes (HTTP/1.1 request line and headers,
    /// HTTP/2 header list); larger is refused (`431`) or the connection closed.
    pub max_header_bytes: usize,
    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` names the
    /// caller. From any other peer the header is ignored and the connection's
    /// address is the caller's.
    pub trusted_proxies: Vec<String>,
    /// The API over TLS (absent: plain HTTP, for a node behind a proxy that ends
    /// TLS, or on loopback).
    pub tls: Option<tls::TlsConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CodesConfig {
    /// Server secret keying the code MACs (at least 32 bytes). When absent, a random
    /// one is made at start-up: fine for the embedded store, whose codes die with the
    /// process anyway.
    pub secret: Option<otpd_adapters::Secret>,
    /// Purpose used when a request names none.
    pub default_purpose: String,
    /// Language used when a request names none.
    pub default_locale: String,
}

/// How typed numbers are read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NumbersConfig {
    /// Region (ISO 3166-1 alpha-2) of numbers typed without a country code.
    pub default_region: String,
    /// Refuse numbers that are not mobile lines (landlines, toll-free, premium…).
    pub mobile_only: bool,
    /// Parsed numbers remembered (0: none).
    pub cache_capacity: usize,
    /// Accept numbers of the non-geographic calling codes — satellite phones (+870
    /// Inmarsat, +881 Iridium and the like) and international networks (+882,
    /// +883): costly destinations that belong to no country's limits.
    pub allow_non_geographic: bool,
}

impl Default for NumbersConfig {
    fn default() -> Self {
        Self {
            default_region: "ES".into(),
            mobile_only: true,
            cache_capacity: 100_000,
            allow_non_geographic: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PurposeConfig {
    /// How long a code stays valid.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Digits per code, 4 to 10.
    pub code_length: u8,
    /// Checks allowed before the verification locks.
    pub max_attempts: u8,
    /// Sends of one code allowed (the first one included).
    pub max_sends: u8,
    /// Minimum wait between two sends of one code.
    #[serde(with = "humantime_serde")]
    pub resend_cooldown: Duration,
    /// With `channel: auto`, when the code went by push: how long to wait for the
    /// acknowledgement before sending the same code by SMS.
    #[serde(with = "humantime_serde")]
    pub escalate_after: Duration,
    /// What acknowledges a push: `app` (`POST /v1/verifications/{id}/ack`) or
    /// `provider` (the push provider accepted it).
    pub push_ack: PushAck,
    /// How long an approval request (`channel: app`) stays open: Cl@ve Móvil's five
    /// minutes by default.
    #[serde(with = "humantime_serde")]
    pub app_ttl: Duration,
    /// Requests by `subject` must carry the subject's contrast value (the identity
    /// document's validity date or support number, as registered).
    pub require_contrast: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PushAck {
    App,
    Provider,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One node, in memory, its changes kept on disk at `store.path`.
    Embedded,
    /// One node, in memory only: a restart forgets everything.
    Memory,
    Redis,
}

/// When the embedded store counts a change as kept.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreSync {
    /// Written to the operating system: survives otpd being killed, not a power cut.
    Write,
    /// Flushed to the device too (`fdatasync`, grouped across requests).
    Fsync,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Which store: `embedded` (one node, kept on disk at `path`), `memory` (one
    /// node, nothing on disk) or `redis` (shared by many nodes; see `[redis]`).
    pub kind: StoreKind,
    /// The embedded store's data directory (relative to the working directory).
    pub path: std::path::PathBuf,
    /// When the embedded store counts a change as kept: `fsync` or `write`.
    pub sync: StoreSync,
    /// How long a request waits for the embedded store's disk before it fails.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Lock shards of the embedded store (rounded up to a power of two).
    pub shards: usize,
    /// How long a verification stays readable after its validity ends.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often expired records are swept.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// How long a response is kept for replay under its `Idempotency-Key`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Sends waiting for a worker; when full, the API answers 503.
    pub queue_capacity: usize,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Submits per send when the channel reports a temporary failure. A route
    /// whose carriers cannot take messages at all (no live bind, breaker open) uses
    /// none up: the send waits for one to come back while the code is worth sending
    /// (until `routing.min_validity_left` before its expiry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each time.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// `Retry-After` given with a 503 when the queue is full.
    #[serde(with = "humantime_serde")]
    pub overload_retry_after: Duration,
    /// The longest sends may stand in the queue: while even the quickest taken over a
    /// window had waited longer, new requests are answered 503 (the codes would
    /// arrive late) until delivery catches up.
    #[serde(with = "humantime_serde")]
    pub max_queue_delay: Duration,
    /// Channel for SMS: `file`, or `smpp.NAME` for a carrier of [channels.smpp].
    pub sms: String,
    /// Push for platforms without a [push.*] provider: `file` (the outbox) or `none`
    /// (such devices are skipped).
    pub push: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BindModeConfig {
    Transceiver,
    Pair,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataCodingPolicy {
    Gsm7,
    Latin1,
    Ucs2,
}

/// How an SMSC writes, in its receipts, the message ids its submit_sm_resp gave
/// (Kannel calls this `msg-id-type`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiptIdsConfig {
    /// Learned from the ids themselves (see ARCHITECTURE.md).
    #[default]
    Learn,
    /// The same way (case and leading zeros aside).
    AsSubmitted,
    /// Hexadecimal in the submit_sm_resp, decimal in the receipt.
    HexThenDecimal,
    /// Decimal in the submit_sm_resp, hexadecimal in the receipt.
    DecimalThenHex,
}

/// The form of each submit_sm's `validity_period`, always the code's expiry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ValidityConfig {
    /// The time the code has left: no clock but the SMSC's own counts.
    #[default]
    Relative,
    /// The code's expiry in UTC, for SMSCs that mishandle the relative form.
    Absolute,
    /// None: the SMSC's default validity (it may deliver an expired code).
    None,
}

/// What a `delivery.sms` / `delivery.push` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRef {
    File,
    Smpp(String),
}

impl ChannelRef {
    pub fn parse(value: &str) -> Option<ChannelRef> {
        match value {
            "file" => Some(ChannelRef::File),
            _ => value
                .strip_prefix("smpp.")
                .filter(|n| !n.is_empty())
                .map(|n| ChannelRef::Smpp(n.to_string())),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    pub file: FileChannelConfig,
    /// SMPP carriers by name.
    pub smpp: BTreeMap<String, SmppCarrierConfig>,
}

/// One SMPP carrier: its SMSC, credentials, binds and sender.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmppCarrierConfig {
    /// SMSC host and port.
    pub host: String,
    pub port: u16,
    /// Credentials of the ESME account (system_id up to 15 characters, password up
    /// to 8, system_type up to 12).
    pub system_id: String,
    pub password: otpd_adapters::Secret,
    pub system_type: String,
    /// address_range of the bind (usually empty).
    pub address_range: String,
    /// Binds to open (with `bind_mode = "pair"`: transmitter + receiver pairs).
    pub binds: usize,
    /// `transceiver`, or `pair` for a transmitter and a receiver per bind.
    pub bind_mode: BindModeConfig,
    /// submit_sm awaiting a response, per bind.
    pub window: usize,
    /// Messages per second to this carrier, across all its binds (its contract's
    /// cap); absent: no cap. Messages over it wait their turn.
    pub tps: Option<u32>,
    /// Messages that may wait for their turn under `tps`; when full, routing tries
    /// the route's next carrier.
    pub queue_capacity: usize,
    /// submit_sm per second on each bind, when the SMSC limits binds too; absent: no cap.
    pub bind_tps: Option<u32>,
    /// Sender: an alphanumeric id (TON 5, NPI 0, up to 11 characters) or a number.
    pub source_addr: String,
    pub source_ton: u8,
    pub source_npi: u8,
    /// Ask for delivery receipts.
    pub registered_delivery: bool,
    /// Encoding tried first: `gsm7` (GSM 03.38), `latin1` (data_coding 3) or `ucs2`;
    /// text that does not fit it goes as UCS-2.
    pub data_coding: DataCodingPolicy,
    /// Send GSM 7-bit packed (8 septets in 7 octets) instead of one septet per octet.
    pub gsm7_packed: bool,
    /// How the SMSC writes message ids in its receipts: `learn`, `as-submitted`,
    /// `hex-then-decimal` or `decimal-then-hex`.
    pub receipt_ids: ReceiptIdsConfig,
    /// `validity_period` of each submit_sm: `relative`, `absolute` or `none`.
    pub validity_period: ValidityConfig,
    /// How long past the code's expiry a message waits for its final receipt;
    /// then its send is closed as `unconfirmed`.
    #[serde(with = "humantime_serde")]
    pub receipt_wait: Duration,
    /// Keepalive when the link is idle.
    #[serde(with = "humantime_serde")]
    pub enquire_link_interval: Duration,
    /// A request unanswered this long declares the bind dead (it reconnects).
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// How long one message may wait for a bind and its answer.
    #[serde(with = "humantime_serde")]
    pub submit_timeout: Duration,
    /// Reconnect backoff bounds (exponential, with jitter).
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// SMPP over TLS (the carrier's TLS port): the SMSC's certificate is checked
    /// against `tls_ca_file`, or the system's roots without it.
    pub tls: bool,
    /// The CA certificates (PEM) the SMSC's certificate must chain to.
    pub tls_ca_file: Option<PathBuf>,
    /// The name the SMSC's certificate must carry, when it is not `host`.
    pub tls_server_name: Option<String>,
}

impl Default for SmppCarrierConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 2775,
            system_id: String::new(),
            password: Default::default(),
            system_type: String::new(),
            address_range: String::new(),
            binds: 1,
            bind_mode: BindModeConfig::Transceiver,
            window: 64,
            tps: None,
            queue_capacity: 1000,
            bind_tps: None,
            source_addr: "otpd".into(),
            source_ton: 5,
            source_npi: 0,
            registered_delivery: true,
            data_coding: DataCodingPolicy::Gsm7,
            gsm7_packed: false,
            receipt_ids: ReceiptIdsConfig::Learn,
            validity_period: ValidityConfig::Relative,
            receipt_wait: otpd_adapters::smpp::carrier::RECEIPT_WAIT,
            enquire_link_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
            submit_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(30),
            tls: false,
            tls_ca_file: None,
            tls_server_name: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileChannelConfig {
    /// The outbox: one JSON line per message.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `otpd=debug,info`, …
    pub level: String,
    pub format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            codes: CodesConfig::default(),
            numbers: NumbersConfig::default(),
            purposes: BTreeMap::from([("login".to_string(), PurposeConfig::default())]),
            store: StoreConfig::default(),
            redis: RedisConfig::default(),
            idempotency: IdempotencyConfig::default(),
            delivery: DeliveryConfig::default(),
            channels: ChannelsConfig::default(),
            routing: RoutingConfig::default(),
            messages: MessagesConfig::default(),
            push: PushConfig::default(),
            limits: LimitsConfig::default(),
            clients: Vec::new(),
            app: AppConfig::default(),
            webhooks: events::WebhooksConfig::default(),
            audit: events::AuditConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit: 16 * 1024,
            shutdown_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_connections: 4096,
            http2_max_streams: 128,
            max_header_bytes: 16 * 1024,
            trusted_proxies: Vec::new(),
            tls: None,
        }
    }
}

impl Default for CodesConfig {
    fn default() -> Self {
        Self {
            secret: None,
            default_purpose: "login".into(),
            default_locale: "es".into(),
        }
    }
}

impl Default for PurposeConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
            code_length: 6,
            max_attempts: 5,
            max_sends: 5,
            resend_cooldown: Duration::from_secs(30),
            escalate_after: Duration::from_secs(60),
            push_ack: PushAck::App,
            app_ttl: Duration::from_secs(300),
            require_contrast: false,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Embedded,
            path: "otpd-data".into(),
            sync: StoreSync::Fsync,
            write_timeout: Duration::from_secs(2),
            shards: 64,
            retention: Duration::from_secs(600),
            sweep_interval: Duration::from_secs(1),
        }
    }
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 10_000,
            concurrency: 64,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(250),
            overload_retry_after: Duration::from_secs(1),
            max_queue_delay: Duration::from_secs(5),
            sms: "file".into(),
            push: "file".into(),
        }
    }
}

impl Default for FileChannelConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("otpd-outbox.jsonl"),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// A name shown to people in the app: printable, 1 to 64 characters.
pub(crate) fn validate_display_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let n = name.chars().count();
    if n == 0 || n > 64 || name.chars().any(char::is_control) || name.trim() != name {
        return Err(invalid(
            key,
            name,
            "a display name is 1 to 64 printable characters, without leading or trailing spaces",
        ));
    }
    Ok(())
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: `{key}` = {value}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    /// `key` cannot take `value`, and why.
    pub fn invalid(
        key: impl Into<String>,
        value: impl std::fmt::Debug,
        reason: impl Into<String>,
    ) -> ConfigError {
        invalid(key, value, reason)
    }
}

fn invalid(
    key: impl Into<String>,
    value: impl std::fmt::Debug,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: format!("{value:?}"),
        reason: reason.into(),
    }
}

impl Config {
    /// Defaults, then `file` (if any), then `OTPD_*` variables from `env`: read and
    /// typed, not yet validated (`server::Settings` validates and builds what the
    /// sections describe, once).
    pub fn read(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            figment = figment.merge(Toml::string(&text));
        }
        // key path → the variable it came from, to name it in errors.
        let mut from_env = BTreeMap::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("OTPD_") else {
                continue;
            };
            let key = if rest.eq_ignore_ascii_case("SECRET") {
                "codes.secret".to_string()
            } else {
                rest.to_ascii_lowercase().replace("__", ".")
            };
            figment = figment.merge(Serialized::default(&key, parse_env_value(&value)));
            from_env.insert(key, name);
        }
        let source = file.map(|p| p.display().to_string());
        let config: Config = figment.extract().map_err(|e| {
            let mut messages: Vec<String> = e
                .into_iter()
                .map(|e| describe_figment_error(e, source.as_deref(), &from_env))
                .collect();
            messages.dedup();
            ConfigError::Parse(messages.join("; "))
        })?;
        Ok(config)
    }

    /// Check what types cannot: ranges, references between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.body_limit < 1024 || self.server.body_limit > 1 << 20 {
            return Err(invalid(
                "server.body_limit",
                self.server.body_limit,
                "must be between 1024 and 1048576 bytes",
            ));
        }
        self.validate_server()?;
        self.validate_secret()?;
        self.validate_purposes()?;
        self.validate_store()?;
        self.validate_delivery()?;
        self.push.validate()?;
        let purposes: Vec<&str> = self.purposes.keys().map(String::as_str).collect();
        self.limits.validate(&purposes)?;
        limits::validate_clients(&self.clients, &purposes)?;
        validate_display_name("app.display_name", &self.app.display_name)?;
        self.validate_app()?;
        self.webhooks.validate()?;
        self.audit.validate()?;
        self.validate_channels()?;
        if self.channels.file.path.as_os_str().is_empty() {
            return Err(invalid("channels.file.path", "", "must not be empty"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                &self.log.level,
                "not a valid filter (e.g. `info` or `otpd=debug,warn`)",
            ));
        }
        Ok(())
    }

    /// `codes.secret`: long enough, and present where nodes share state.
    fn validate_secret(&self) -> Result<(), ConfigError> {
        if let Some(secret) = &self.codes.secret
            && secret.len() < MIN_SECRET_BYTES
        {
            return Err(ConfigError::Invalid {
                key: "codes.secret".into(),
                value: "<redacted>".into(),
                reason: format!(
                    "must be at least {MIN_SECRET_BYTES} bytes, got {}",
                    secret.len()
                ),
            });
        }
        if self.store.kind == StoreKind::Redis && self.codes.secret.is_none() {
            return Err(ConfigError::Invalid {
                key: "codes.secret".into(),
                value: "<absent>".into(),
                reason: "required with store.kind = \"redis\": every node must key codes alike \
                         (set it, or OTPD_SECRET)"
                    .into(),
            });
        }
        Ok(())
    }

    /// `[purposes.*]` and the defaults that name a purpose and a language.
    fn validate_purposes(&self) -> Result<(), ConfigError> {
        if self.purposes.is_empty() {
            return Err(invalid("purposes", "{}", "at least one purpose is needed"));
        }
        for (name, p) in &self.purposes {
            let key = |k: &str| format!("purposes.{name}.{k}");
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    format!("purposes.{name}"),
                    name,
                    "a purpose name is 1 to 32 of a-z, 0-9, _ and -",
                ));
            }
            if CodeLength::new(p.code_length).is_none() {
                return Err(invalid(
                    key("code_length"),
                    p.code_length,
                    "must be between 4 and 10",
                ));
            }
            if p.ttl < Duration::from_secs(1) || p.ttl > Duration::from_secs(24 * 3600) {
                return Err(invalid(
                    key("ttl"),
                    humantime::format_duration(p.ttl).to_string(),
                    "must be between 1s and 24h",
                ));
            }
            if !(1..=20).contains(&p.max_attempts) {
                return Err(invalid(
                    key("max_attempts"),
                    p.max_attempts,
                    "must be between 1 and 20",
                ));
            }
            if !(1..=20).contains(&p.max_sends) {
                return Err(invalid(
                    key("max_sends"),
                    p.max_sends,
                    "must be between 1 and 20",
                ));
            }
            if p.escalate_after < Duration::from_secs(1) || p.escalate_after >= p.ttl {
                return Err(invalid(
                    key("escalate_after"),
                    humantime::format_duration(p.escalate_after).to_string(),
                    format!(
                        "must be at least 1s and shorter than the ttl ({})",
                        humantime::format_duration(p.ttl)
                    ),
                ));
            }
            if p.app_ttl < Duration::from_secs(10) || p.app_ttl > Duration::from_secs(24 * 3600) {
                return Err(invalid(
                    key("app_ttl"),
                    humantime::format_duration(p.app_ttl).to_string(),
                    "must be between 10s and 24h",
                ));
            }
            if p.escalate_after >= p.app_ttl {
                return Err(invalid(
                    key("escalate_after"),
                    humantime::format_duration(p.escalate_after).to_string(),
                    format!(
                        "must be shorter than the app_ttl ({})",
                        humantime::format_duration(p.app_ttl)
                    ),
                ));
            }
            if p.resend_cooldown >= p.ttl {
                return Err(invalid(
                    key("resend_cooldown"),
                    humantime::format_duration(p.resend_cooldown).to_string(),
                    format!(
                        "must be shorter than the ttl ({})",
                        humantime::format_duration(p.ttl)
                    ),
                ));
            }
        }
        if !self.purposes.contains_key(&self.codes.default_purpose) {
            return Err(invalid(
                "codes.default_purpose",
                &self.codes.default_purpose,
                format!(
                    "no such purpose; configured: {}",
                    self.purposes.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if Locale::parse(&self.codes.default_locale).is_none() {
            return Err(invalid(
                "codes.default_locale",
                &self.codes.default_locale,
                format!("unsupported language; supported: {}", locale::SUPPORTED),
            ));
        }
        Ok(())
    }

    /// `[numbers]`, `[store]`, `[redis]` and `[idempotency]`.
    fn validate_store(&self) -> Result<(), ConfigError> {
        if let Err(e) = NumberRules::new(&self.numbers.default_region, true) {
            return Err(invalid(
                "numbers.default_region",
                &self.numbers.default_region,
                e.to_string(),
            ));
        }
        if self.numbers.cache_capacity > 10_000_000 {
            return Err(invalid(
                "numbers.cache_capacity",
                self.numbers.cache_capacity,
                "must be at most 10000000",
            ));
        }
        if !(1..=65_536).contains(&self.store.shards) {
            return Err(invalid(
                "store.shards",
                self.store.shards,
                "must be between 1 and 65536",
            ));
        }
        if self.store.sweep_interval < Duration::from_millis(10) {
            return Err(invalid(
                "store.sweep_interval",
                humantime::format_duration(self.store.sweep_interval).to_string(),
                "must be at least 10ms",
            ));
        }
        if self.store.kind == StoreKind::Redis {
            self.redis.validate()?;
        }
        if self.store.kind == StoreKind::Embedded && self.store.path.as_os_str().is_empty() {
            return Err(invalid(
                "store.path",
                "\"\"",
                "the embedded store needs a directory (or store.kind = \"memory\" to keep nothing on disk)",
            ));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60))
            .contains(&self.store.write_timeout)
        {
            return Err(invalid(
                "store.write_timeout",
                humantime::format_duration(self.store.write_timeout).to_string(),
                "must be between 10ms and 60s",
            ));
        }
        if self.idempotency.ttl < Duration::from_secs(1) {
            return Err(invalid(
                "idempotency.ttl",
                humantime::format_duration(self.idempotency.ttl).to_string(),
                "must be at least 1s",
            ));
        }
        Ok(())
    }

    /// `[delivery]`: the queue, the workers and their retries.
    fn validate_delivery(&self) -> Result<(), ConfigError> {
        if !(1..=10_000_000).contains(&self.delivery.queue_capacity) {
            return Err(invalid(
                "delivery.queue_capacity",
                self.delivery.queue_capacity,
                "must be between 1 and 10000000",
            ));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(600))
            .contains(&self.delivery.max_queue_delay)
        {
            return Err(invalid(
                "delivery.max_queue_delay",
                humantime::format_duration(self.delivery.max_queue_delay).to_string(),
                "must be between 10ms and 10m",
            ));
        }
        if !(1..=100_000).contains(&self.delivery.concurrency) {
            return Err(invalid(
                "delivery.concurrency",
                self.delivery.concurrency,
                "must be between 1 and 100000",
            ));
        }
        if !(1..=10).contains(&self.delivery.max_attempts) {
            return Err(invalid(
                "delivery.max_attempts",
                self.delivery.max_attempts,
                "must be between 1 and 10",
            ));
        }
        if !matches!(self.delivery.push.as_str(), "file" | "none") {
            return Err(invalid(
                "delivery.push",
                &self.delivery.push,
                "expected `file` or `none` (providers are configured in [push.apns], [push.fcm], [push.hms])",
            ));
        }
        Ok(())
    }

    /// `[app]`: approval in the app.
    fn validate_app(&self) -> Result<(), ConfigError> {
        let scheme_ok = self.app.qr_uri.split_once(':').is_some_and(|(scheme, _)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        if !scheme_ok || self.app.qr_uri.contains(['?', '#', ' ']) {
            return Err(invalid(
                "app.qr_uri",
                &self.app.qr_uri,
                "expected a URI with a scheme and no query or fragment, such as `clave://approve`",
            ));
        }
        if self.app.answer_max_skew < Duration::from_secs(1)
            || self.app.answer_max_skew > Duration::from_secs(600)
        {
            return Err(invalid(
                "app.answer_max_skew",
                humantime::format_duration(self.app.answer_max_skew).to_string(),
                "must be between 1s and 10m",
            ));
        }
        Ok(())
    }

    /// `delivery.sms` and `[channels.smpp.*]`.
    fn validate_channels(&self) -> Result<(), ConfigError> {
        for (key, value) in [("delivery.sms", &self.delivery.sms)] {
            match ChannelRef::parse(value) {
                Some(ChannelRef::File) => {}
                Some(ChannelRef::Smpp(name)) if self.channels.smpp.contains_key(&name) => {}
                Some(ChannelRef::Smpp(name)) => {
                    return Err(invalid(
                        key,
                        value,
                        format!("no carrier `{name}` in [channels.smpp]"),
                    ));
                }
                None => return Err(invalid(key, value, "expected `file` or `smpp.NAME`")),
            }
        }
        for (name, c) in &self.channels.smpp {
            let key = |k: &str| format!("channels.smpp.{name}.{k}");
            let too_long = |k: &str, v: &str, max: usize| -> Result<(), ConfigError> {
                if v.len() > max {
                    Err(invalid(
                        key(k),
                        v,
                        format!("SMPP allows at most {max} characters"),
                    ))
                } else {
                    Ok(())
                }
            };
            if c.host.is_empty() {
                return Err(invalid(key("host"), &c.host, "must not be empty"));
            }
            if c.port == 0 {
                return Err(invalid(key("port"), c.port, "must not be 0"));
            }
            if c.system_id.is_empty() {
                return Err(invalid(key("system_id"), &c.system_id, "must not be empty"));
            }
            validate_carrier_tls(name, c)?;
            too_long("system_id", &c.system_id, 15)?;
            too_long("system_type", &c.system_type, 12)?;
            too_long("address_range", &c.address_range, 40)?;
            too_long("source_addr", &c.source_addr, 20)?;
            if c.password.len() > 8 {
                return Err(ConfigError::Invalid {
                    key: key("password"),
                    value: "<redacted>".into(),
                    reason: "SMPP allows at most 8 characters".into(),
                });
            }
            if c.source_ton == 5 && c.source_addr.chars().count() > 11 {
                return Err(invalid(
                    key("source_addr"),
                    &c.source_addr,
                    "an alphanumeric sender (source_ton = 5) has at most 11 characters",
                ));
            }
            if !(1..=64).contains(&c.binds) {
                return Err(invalid(key("binds"), c.binds, "must be between 1 and 64"));
            }
            if !(1..=10_000).contains(&c.window) {
                return Err(invalid(
                    key("window"),
                    c.window,
                    "must be between 1 and 10000",
                ));
            }
            for (k, tps) in [("tps", c.tps), ("bind_tps", c.bind_tps)] {
                if tps == Some(0) {
                    return Err(invalid(
                        key(k),
                        0,
                        "must be at least 1 (leave it out for no cap)",
                    ));
                }
            }
            if !(1..=1_000_000).contains(&c.queue_capacity) {
                return Err(invalid(
                    key("queue_capacity"),
                    c.queue_capacity,
                    "must be between 1 and 1000000",
                ));
            }
            if name == "file" {
                return Err(invalid(
                    format!("channels.smpp.{name}"),
                    name,
                    "`file` names the outbox; give the carrier another name",
                ));
            }
            if c.reconnect_min.is_zero() || c.reconnect_min > c.reconnect_max {
                return Err(invalid(
                    key("reconnect_min"),
                    humantime::format_duration(c.reconnect_min).to_string(),
                    "must be above zero and at most reconnect_max",
                ));
            }
            for (k, d) in [
                ("response_timeout", c.response_timeout),
                ("submit_timeout", c.submit_timeout),
                ("enquire_link_interval", c.enquire_link_interval),
            ] {
                if d < Duration::from_millis(10) {
                    return Err(invalid(
                        key(k),
                        humantime::format_duration(d).to_string(),
                        "must be at least 10ms",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if let Some(t) = &s.tls {
            tls::server_config(t).map_err(|e| {
                let (key, path) = match &e {
                    tls::TlsError::File { path, .. } if *path == t.key_file => {
                        ("server.tls.key_file", path)
                    }
                    tls::TlsError::File { path, .. } if t.client_ca_file.as_ref() == Some(path) => {
                        ("server.tls.client_ca_file", path)
                    }
                    _ => ("server.tls.cert_file", &t.cert_file),
                };
                invalid(key, path.display().to_string(), e.to_string())
            })?;
        }
        for (key, d) in [
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.body_read_timeout", s.body_read_timeout),
            ("server.idle_timeout", s.idle_timeout),
            ("server.write_timeout", s.write_timeout),
        ] {
            if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&d) {
                return Err(invalid(
                    key,
                    humantime::format_duration(d).to_string(),
                    "must be between 100ms and 1h",
                ));
            }
        }
        if !(1..=1_000_000).contains(&s.max_connections) {
            return Err(invalid(
                "server.max_connections",
                s.max_connections,
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=10_000).contains(&s.http2_max_streams) {
            return Err(invalid(
                "server.http2_max_streams",
                s.http2_max_streams,
                "must be between 1 and 10000",
            ));
        }
        if !(8192..=1 << 20).contains(&s.max_header_bytes) {
            return Err(invalid(
                "server.max_header_bytes",
                s.max_header_bytes,
                "must be between 8192 and 1048576",
            ));
        }
        for (i, p) in s.trusted_proxies.iter().enumerate() {
            if let Err(e) = p.parse::<network::Network>() {
                return Err(invalid(
                    format!("server.trusted_proxies[{i}]"),
                    p,
                    e.to_string(),
                ));
            }
        }
        Ok(())
    }
}

/// Environment values are strings; read numbers and booleans as such so that
/// `OTPD_PURPOSES__LOGIN__CODE_LENGTH=8` is a number, and leave the rest as text.
fn parse_env_value(value: &str) -> figment::value::Value {
    use figment::value::Value;
    if let Ok(n) = value.parse::<i64>() {
        return Value::from(n);
    }
    match value {
        "true" => Value::from(true),
        "false" => Value::from(false),
        _ => Value::from(value.to_string()),
    }
}

/// Keys whose values are credentials, or may hold one (a Redis URL's password).
fn is_credential(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    matches!(last, "secret" | "password" | "client_secret" | "username")
        || key.starts_with("redis.urls")
}

/// Figment's message, with the key and where it came from (file or variable).
fn describe_figment_error(
    e: figment::Error,
    file: Option<&str>,
    from_env: &BTreeMap<String, String>,
) -> String {
    let key = e.path.join(".");
    let message = if is_credential(&key) {
        // The value may be (part of) a credential: say what was expected, not what
        // was found.
        match &e.kind {
            figment::error::Kind::InvalidType(_, expected)
            | figment::error::Kind::InvalidValue(_, expected) => {
                format!("invalid value (not shown); expected {expected}")
            }
            _ => "invalid value (not shown)".to_string(),
        }
    } else {
        e.kind.to_string()
    };
    let origin = from_env
        .iter()
        .find(|(k, _)| {
            key == **k || key.starts_with(&format!("{k}.")) || k.starts_with(&format!("{key}."))
        })
        .map(|(_, var)| format!(" (from environment variable {var})"))
        .or_else(|| file.map(|f| format!(" (in {f})")))
        .unwrap_or_default();
    if key.is_empty() {
        format!("{message}{origin}")
    } else {
        format!("`{key}`: {message}{origin}")
    }
}

/// A carrier's `tls_*` keys: only with `tls = true`, a CA file that holds
/// certificates, a server name that is one.
fn validate_carrier_tls(name: &str, c: &SmppCarrierConfig) -> Result<(), ConfigError> {
    if !c.tls
        && let Some(path) = &c.tls_ca_file
    {
        return Err(invalid(
            format!("channels.smpp.{name}.tls_ca_file"),
            path.display().to_string(),
            "set without tls = true",
        ));
    }
    c.tls_connector(name).map(drop)
}

impl SmppCarrierConfig {
    /// The connector of SMPP over TLS when `tls` is set; a refusal names the key.
    pub fn tls_connector(
        &self,
        name: &str,
    ) -> Result<Option<otpd_adapters::smpp::session::TlsTcp>, ConfigError> {
        use otpd_adapters::smpp::session::{TlsTcp, TlsTcpError};
        if !self.tls {
            return Ok(None);
        }
        let key = |k: &str| format!("channels.smpp.{name}.{k}");
        let ca = match &self.tls_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                invalid(
                    key("tls_ca_file"),
                    path.display().to_string(),
                    e.to_string(),
                )
            })?),
            None => None,
        };
        let server_name = self.tls_server_name.as_deref().unwrap_or(&self.host);
        TlsTcp::new(ca.as_deref(), server_name)
            .map(Some)
            .map_err(|e| match e {
                TlsTcpError::Roots(_) => invalid(
                    key("tls_ca_file"),
                    self.tls_ca_file
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "the system's roots".into()),
                    e.to_string(),
                ),
                TlsTcpError::ServerName(_) => {
                    invalid(key("tls_server_name"), server_name, e.to_string())
                }
            })
    }
}
