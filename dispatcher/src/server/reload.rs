//! Reloading: read the configuration file again and install what can change while
//! otpd runs — routes, templates, carriers' caps and breakers, limits and clients,
//! and the API's TLS certificate.
//! An invalid configuration is refused with its error, and the one in force stays.

use std::path::PathBuf;
use std::sync::Arc;

use super::Settings;
use super::tls::Certificates;
use crate::delivery::router::Router;
use crate::policy::admission::{Admission, Rules};

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    NotRunning(#[from] crate::delivery::router::NotRunning),
    #[error("server.tls: {0}")]
    Tls(#[from] crate::config::tls::TlsError),
    #[error("server.tls is read at start only: restart otpd to turn TLS on or off")]
    TlsSwitched,
}

/// Reads the configuration again and installs its plan. One reload at a time.
pub struct Reloader {
    router: Arc<Router>,
    admission: Arc<Admission>,
    tls: Option<Arc<Certificates>>,
    file: Option<PathBuf>,
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        router: Arc<Router>,
        admission: Arc<Admission>,
        tls: Option<Arc<Certificates>>,
        file: Option<PathBuf>,
    ) -> Reloader {
        Reloader {
            router,
            admission,
            tls,
            file,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _one = self.lock.lock().await;
        let result = (|| {
            let settings = Settings::load(self.file.as_deref(), std::env::vars())?;
            let rules = Rules::new(&settings.config);
            // The certificate first: files that make no certificate leave all as it was.
            match (&self.tls, &settings.config.server.tls) {
                (Some(certificates), Some(files)) => certificates.reload(files)?,
                (None, None) => {}
                _ => return Err(ReloadError::TlsSwitched),
            }
            self.router.install(settings.plan)?;
            self.admission.install(rules);
            Ok::<_, ReloadError>(())
        })();
        match &result {
            Ok(()) => {
                ::metrics::counter!("otpd_config_reloads_total", "result" => "ok").increment(1);
                tracing::info!(file = ?self.file, "configuration reloaded: routes, templates, carrier caps, limits, clients and the TLS certificate");
            }
            Err(e) => {
                ::metrics::counter!("otpd_config_reloads_total", "result" => "refused")
                    .increment(1);
                tracing::error!(error = %e, "configuration reload refused; the one in force stays");
            }
        }
        result
    }
}

#[async_trait::async_trait]
impl crate::api::Reload for Reloader {
    async fn reload(&self) -> Result<(), String> {
        Reloader::reload(self).await.map_err(|e| e.to_string())
    }
}
