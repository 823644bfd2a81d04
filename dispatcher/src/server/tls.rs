//! The API over TLS: the configuration in force is an `Arc<ServerConfig>` swapped
//! whole. A reload (SIGHUP, `POST /v1/admin/reload`) reads the files again and, only
//! if they make a usable configuration, installs it: handshakes already begun
//! finish on the old one and every connection after uses the new one. A renewed
//! certificate needs no restart, and a broken renewal leaves the working one.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::tls::{TlsConfig, TlsError, server_config};

/// The TLS configuration in force, swapped whole on reload.
pub struct Certificates {
    current: ArcSwap<rustls::ServerConfig>,
}

impl Certificates {
    pub fn load(tls: &TlsConfig) -> Result<Certificates, TlsError> {
        Ok(Certificates {
            current: ArcSwap::from_pointee(server_config(tls)?),
        })
    }

    /// Read `tls`'s files again; installed only if they make a configuration.
    pub fn reload(&self, tls: &TlsConfig) -> Result<(), TlsError> {
        self.current.store(Arc::new(server_config(tls)?));
        Ok(())
    }

    /// An acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }
}
