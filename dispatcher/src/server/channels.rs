//! The channels a configuration names: every SMPP carrier (each bind started), the
//! outbox when something routes to it, and a pusher per push platform (its provider,
//! the outbox, or none).

use std::sync::Arc;
use std::time::Duration;

use otpd_adapters::Channel;
use otpd_adapters::apns::{ApnsConfig, ApnsPusher};
use otpd_adapters::fcm::{FcmConfig, FcmPusher, ServiceAccount};
use otpd_adapters::file::{FileChannel, FilePusher};
use otpd_adapters::hms::{HmsConfig, HmsPusher};
use otpd_adapters::push::http::HttpOptions;
use otpd_adapters::push::{Notification, Outcome, Pusher};
use otpd_adapters::smpp::carrier::{CarrierConfig, SmppCarrier};
use otpd_adapters::smpp::directory::MessageDirectory;
use otpd_adapters::smpp::encoding::{Policy as EncodingPolicy, Preferred};
use otpd_adapters::smpp::matcher::{IdForm, IdForms};
use otpd_adapters::smpp::pdu::Address;
use otpd_adapters::smpp::session::BindConfig;
use otpd_adapters::smpp::validity::ValidityForm;

use super::ServerError;
use crate::config::{
    BindModeConfig, Config, DataCodingPolicy, ReceiptIdsConfig, SmppCarrierConfig, ValidityConfig,
};
use crate::delivery::router::Plan;
use crate::delivery::{Channels, Pushers};

pub(super) fn configured_channels(
    config: &Config,
    plan: &Plan,
    directory: Option<Arc<dyn MessageDirectory>>,
) -> Result<Channels, ServerError> {
    let mut outbox: Option<Arc<FileChannel>> = None;
    let mut open_outbox = || -> Result<Arc<FileChannel>, ServerError> {
        if let Some(f) = &outbox {
            return Ok(f.clone());
        }
        let path = &config.channels.file.path;
        let file = Arc::new(
            FileChannel::open(path).map_err(|source| ServerError::Outbox {
                path: path.display().to_string(),
                source,
            })?,
        );
        outbox = Some(file.clone());
        Ok(file)
    };
    // Every configured carrier runs, whether a route names it now or not, so that a
    // reload can route to it; the outbox only when something names it.
    let mut sms: Vec<Arc<dyn Channel>> = config
        .channels
        .smpp
        .iter()
        .map(|(name, c)| {
            let config = carrier_config(name, c)?;
            Ok(Arc::new(match &directory {
                Some(d) => SmppCarrier::start_shared(config, d.clone()),
                None => SmppCarrier::start(config),
            }) as Arc<dyn Channel>)
        })
        .collect::<Result<_, ServerError>>()?;
    if plan.carriers().contains("file") {
        sms.push(open_outbox()?);
    }
    let mut fallback = |platform: &'static str| -> Result<Arc<dyn Pusher>, ServerError> {
        Ok(match config.delivery.push.as_str() {
            "file" => Arc::new(FilePusher::new(open_outbox()?, platform)),
            _ => Arc::new(NoProvider(platform)),
        })
    };
    let push = &config.push;
    let apns: Arc<dyn Pusher> = match &push.apns {
        Some(a) => Arc::new(apns_pusher(a)?),
        None => fallback("apns")?,
    };
    let fcm: Arc<dyn Pusher> = match &push.fcm {
        Some(f) => Arc::new(fcm_pusher(f)?),
        None => fallback("fcm")?,
    };
    let hms: Arc<dyn Pusher> = match &push.hms {
        Some(h) => Arc::new(hms_pusher(h)?),
        None => fallback("hms")?,
    };
    Ok(Channels {
        sms,
        push: Pushers { apns, fcm, hms },
    })
}

/// The push stand-in for a platform with no provider and `delivery.push = "none"`.
struct NoProvider(&'static str);

#[async_trait::async_trait]
impl Pusher for NoProvider {
    fn name(&self) -> &str {
        "none"
    }

    async fn push(&self, _: &Notification<'_>, _: &str) -> Outcome {
        Outcome::Fail {
            reason: format!("no push provider is configured for {}", self.0),
        }
    }
}

fn read(key: &str, path: &std::path::Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| ServerError::Push {
        key: key.to_string(),
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

fn http_options(
    section: &str,
    ca_file: &Option<std::path::PathBuf>,
    connections: usize,
    max_streams: usize,
    timeout: Duration,
) -> Result<HttpOptions, ServerError> {
    Ok(HttpOptions {
        ca_pem: match ca_file {
            Some(path) => Some(read(&format!("push.{section}.ca_file"), path)?),
            None => None,
        },
        connections,
        max_streams,
        timeout,
    })
}

fn push_error(section: &str) -> impl Fn(otpd_adapters::push::http::SetupError) -> ServerError {
    let key = format!("[push.{section}]");
    move |e| ServerError::Push {
        key: key.clone(),
        reason: e.to_string(),
    }
}

fn apns_pusher(a: &crate::config::ApnsSection) -> Result<ApnsPusher, ServerError> {
    ApnsPusher::new(ApnsConfig {
        base_url: a.url.clone(),
        key_pem: read("push.apns.key_file", &a.key_file)?,
        key_id: a.key_id.clone(),
        team_id: a.team_id.clone(),
        default_topic: a.topic.clone().filter(|t| !t.is_empty()),
        http: http_options("apns", &a.ca_file, a.connections, a.max_streams, a.timeout)?,
    })
    .map_err(push_error("apns"))
}

fn fcm_pusher(f: &crate::config::FcmSection) -> Result<FcmPusher, ServerError> {
    let json = read("push.fcm.service_account_file", &f.service_account_file)?;
    let mut account = ServiceAccount::from_json(&json).map_err(|e| ServerError::Push {
        key: "push.fcm.service_account_file".into(),
        reason: e.to_string(),
    })?;
    if let Some(url) = &f.token_url {
        account.token_uri = url.clone();
    }
    FcmPusher::new(FcmConfig {
        base_url: f.url.clone(),
        account,
        project_id: f.project_id.clone(),
        http: http_options("fcm", &f.ca_file, f.connections, f.max_streams, f.timeout)?,
    })
    .map_err(push_error("fcm"))
}

fn hms_pusher(h: &crate::config::HmsSection) -> Result<HmsPusher, ServerError> {
    HmsPusher::new(HmsConfig {
        base_url: h.url.clone(),
        token_url: h.token_url.clone(),
        app_id: h.app_id.clone().unwrap_or_else(|| h.client_id.clone()),
        client_id: h.client_id.clone(),
        client_secret: h.client_secret.expose().to_string().into(),
        http: http_options("hms", &h.ca_file, h.connections, h.max_streams, h.timeout)?,
    })
    .map_err(push_error("hms"))
}

fn carrier_config(name: &str, c: &SmppCarrierConfig) -> Result<CarrierConfig, ServerError> {
    Ok(CarrierConfig {
        name: name.to_string(),
        bind: BindConfig {
            address: format!("{}:{}", c.host, c.port),
            system_id: c.system_id.clone(),
            password: c.password.clone(),
            system_type: c.system_type.clone(),
            address_range: c.address_range.clone(),
            window: c.window,
            tps: c.bind_tps,
            enquire_link_interval: c.enquire_link_interval,
            response_timeout: c.response_timeout,
            reconnect_min: c.reconnect_min,
            reconnect_max: c.reconnect_max,
            ..BindConfig::default()
        },
        binds: c.binds,
        pair: c.bind_mode == BindModeConfig::Pair,
        source: Address {
            ton: c.source_ton,
            npi: c.source_npi,
            addr: c.source_addr.clone(),
        },
        registered_delivery: u8::from(c.registered_delivery),
        submit_timeout: c.submit_timeout,
        unmatched_grace: Duration::from_secs(30),
        encoding: EncodingPolicy {
            preferred: match c.data_coding {
                DataCodingPolicy::Gsm7 => Preferred::Gsm7,
                DataCodingPolicy::Latin1 => Preferred::Latin1,
                DataCodingPolicy::Ucs2 => Preferred::Ucs2,
            },
            gsm7_packed: c.gsm7_packed,
        },
        receipt_ids: match c.receipt_ids {
            ReceiptIdsConfig::Learn => IdForms::Learn,
            ReceiptIdsConfig::AsSubmitted => IdForms::Fixed(IdForm::AsSubmitted),
            ReceiptIdsConfig::HexThenDecimal => IdForms::Fixed(IdForm::HexThenDecimal),
            ReceiptIdsConfig::DecimalThenHex => IdForms::Fixed(IdForm::DecimalThenHex),
        },
        validity: match c.validity_period {
            ValidityConfig::Relative => ValidityForm::Relative,
            ValidityConfig::Absolute => ValidityForm::Absolute,
            ValidityConfig::None => ValidityForm::Omitted,
        },
        receipt_wait: c.receipt_wait,
        tls: c.tls_connector(name)?,
    })
}
