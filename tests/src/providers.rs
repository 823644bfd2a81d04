//! The push mock, started with the credentials otpd's test configuration uses, and
//! the configuration that points otpd's APNs, FCM and HMS providers at it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use otpd::config::{ApnsSection, Config, FcmSection, HmsSection};
use otpd_simulators::push::{
    ApnsKey, FcmAccount, HmsClient, MockConfig, Provider, PushMock, Recorded,
};
use serde_json::json;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../adapters/tests/fixtures")
        .join(name)
}

/// The mock and the files otpd's configuration points at.
pub struct Providers {
    pub mock: PushMock,
    dir: tempfile::TempDir,
}

impl Providers {
    pub async fn start() -> Self {
        let mock = PushMock::start(MockConfig {
            apns_keys: vec![ApnsKey {
                key_id: "ABC123DEFG".into(),
                team_id: "TEAM123456".into(),
                public_pem: std::fs::read(fixture("apns-test-key.pub")).unwrap(),
            }],
            apns_topics: vec!["es.gob.clave".into()],
            fcm_accounts: vec![FcmAccount {
                client_email: "otpd@clave-test.iam.gserviceaccount.com".into(),
                public_pem: std::fs::read(fixture("fcm-test-account.pub")).unwrap(),
            }],
            hms_clients: vec![HmsClient {
                client_id: "104523".into(),
                client_secret: "hms-secret".into(),
            }],
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), mock.ca_pem().unwrap()).unwrap();
        let account = json!({
            "type": "service_account",
            "project_id": "clave-test",
            "private_key_id": "k1",
            "private_key": std::fs::read_to_string(fixture("fcm-test-account.pem")).unwrap(),
            "client_email": "otpd@clave-test.iam.gserviceaccount.com",
            "token_uri": format!("{}/token", mock.url()),
        });
        std::fs::write(dir.path().join("account.json"), account.to_string()).unwrap();
        Self { mock, dir }
    }

    /// Point otpd's three providers at the mock.
    pub fn configure(&self, c: &mut Config) {
        let ca = Some(self.dir.path().join("ca.pem"));
        c.push.apns = Some(ApnsSection {
            url: self.mock.url(),
            key_file: fixture("apns-test-key.p8"),
            key_id: "ABC123DEFG".into(),
            team_id: "TEAM123456".into(),
            topic: Some("es.gob.clave".into()),
            ca_file: ca.clone(),
            connections: 1,
            max_streams: 100,
            timeout: Duration::from_secs(5),
        });
        c.push.fcm = Some(FcmSection {
            url: self.mock.url(),
            service_account_file: self.dir.path().join("account.json"),
            project_id: None,
            token_url: None,
            ca_file: ca.clone(),
            connections: 1,
            max_streams: 100,
            timeout: Duration::from_secs(5),
        });
        c.push.hms = Some(HmsSection {
            url: self.mock.url(),
            token_url: format!("{}/oauth2/v3/token", self.mock.url()),
            app_id: None,
            client_id: "104523".into(),
            client_secret: "hms-secret".into(),
            ca_file: ca,
            connections: 1,
            max_streams: 100,
            timeout: Duration::from_secs(5),
        });
        c.delivery.retry_backoff = Duration::from_millis(10);
    }

    /// The `[push.fcm]` table of a configuration file pointing at the mock, its
    /// requests given up after `timeout` (a humantime duration).
    pub fn fcm_table(&self, timeout: &str) -> String {
        format!(
            "[push.fcm]\nurl = \"{}\"\nservice_account_file = \"{}\"\nca_file = \"{}\"\ntimeout = \"{timeout}\"\n",
            self.mock.url(),
            self.dir.path().join("account.json").display(),
            self.dir.path().join("ca.pem").display(),
        )
    }

    /// Wait (bounded) until the mock has `n` requests for `provider`.
    pub async fn requests(&self, provider: Provider, n: usize) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.mock.requests(Some(provider));
            if seen.len() >= n {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{provider:?} got {} requests, expected {n}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
