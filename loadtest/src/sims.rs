//! The carriers and push providers of a run, simulated in this process on loopback:
//! one SMSC per carrier (otpd's SMSC simulator, real SMPP over TCP) and one push mock
//! per provider (real HTTP/2 over TLS, validating as the providers do), so that one
//! carrier or one provider can be made to misbehave alone. Every message they accept
//! is handed to the run as it arrives, which is how the tool learns the codes.

use std::path::Path;
use std::sync::atomic::Ordering;

use otpd_adapters::smpp::receipt::MessageState;
use otpd_simulators::push::{
    ApnsKey, Behaviour, FcmAccount, HmsClient, MockConfig, MockError, Provider, PushMock, PushTap,
};
use otpd_simulators::smsc::{Account, ReceiptPolicy, Smsc, SmscConfig, Tap};
use serde::Serialize;

use crate::scenario::{Event, Scenario};
use crate::target::{self, Endpoints};

/// Throwaway test keys (see `adapters/tests/fixtures`): the mocks check otpd's
/// signatures with the public halves.
const APNS_KEY: &[u8] = include_bytes!("../../adapters/tests/fixtures/apns-test-key.p8");
const APNS_PUB: &[u8] = include_bytes!("../../adapters/tests/fixtures/apns-test-key.pub");
const FCM_KEY: &str = include_str!("../../adapters/tests/fixtures/fcm-test-account.pem");
const FCM_PUB: &[u8] = include_bytes!("../../adapters/tests/fixtures/fcm-test-account.pub");

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot start the SMSC of carrier `{0}`: {1}")]
    Smsc(String, std::io::Error),
    #[error("cannot start the {0} mock: {1}")]
    Push(&'static str, MockError),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
}

pub struct Sims {
    pub smscs: Vec<(String, Smsc)>,
    pub push: Vec<(Provider, PushMock)>,
    endpoints: Endpoints,
}

/// What a simulator saw, for the report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SimStats {
    pub name: String,
    pub accepted: u64,
    pub refused: u64,
    pub receipts: u64,
    pub binds: u64,
}

impl Sims {
    /// Start every simulator of `scenario`; key files for otpd go to `dir`.
    pub async fn start(
        scenario: &Scenario,
        dir: &Path,
        sms: Tap,
        push: PushTap,
    ) -> Result<Self, SimError> {
        let mut smscs = Vec::new();
        for (i, c) in scenario.carriers.iter().enumerate() {
            let undeliverable = (c.undeliverable * 1000.0).round() as u32;
            let config = SmscConfig {
                system_id: c.name.chars().take(15).collect(),
                accounts: vec![Account {
                    system_id: target::SYSTEM_ID.into(),
                    password: target::PASSWORD.into(),
                }],
                latency: (c.latency, c.latency),
                receipts: ReceiptPolicy {
                    delay: c.receipt_delay,
                    outcomes: vec![
                        (MessageState::Delivered, 1000 - undeliverable),
                        (MessageState::Undeliverable, undeliverable),
                    ],
                    ..ReceiptPolicy::default()
                },
                seed: scenario.seed ^ (i as u64 + 1),
                keep: 0,
                tap: Some(sms.clone()),
                ..SmscConfig::default()
            };
            let smsc = Smsc::start(config)
                .await
                .map_err(|e| SimError::Smsc(c.name.clone(), e))?;
            smscs.push((c.name.clone(), smsc));
        }
        let mut mocks = Vec::new();
        for provider in Provider::ALL {
            let mock = PushMock::start(MockConfig {
                apns_keys: vec![ApnsKey {
                    key_id: target::APNS_KEY_ID.into(),
                    team_id: target::APNS_TEAM.into(),
                    public_pem: APNS_PUB.to_vec(),
                }],
                apns_topics: vec![target::APP.into()],
                fcm_accounts: vec![FcmAccount {
                    client_email: target::FCM_EMAIL.into(),
                    public_pem: FCM_PUB.to_vec(),
                }],
                hms_clients: vec![HmsClient {
                    client_id: target::HMS_CLIENT.into(),
                    client_secret: target::HMS_SECRET.into(),
                }],
                behaviour: Behaviour {
                    latency_ms: scenario.push.latency.as_millis() as u64,
                    ..Behaviour::default()
                },
                keep: 0,
                tap: Some(push.clone()),
                ..MockConfig::default()
            })
            .await
            .map_err(|e| SimError::Push(provider.as_str(), e))?;
            mocks.push((provider, mock));
        }
        // Every mock has its own self-signed certificate; otpd trusts them all.
        let ca: String = mocks.iter().filter_map(|(_, m)| m.ca_pem()).collect();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes)
                .map(|()| path)
                .map_err(|e| SimError::Write(name.into(), e))
        };
        let ca_file = write("push-ca.pem", ca.as_bytes())?;
        let apns_key = write("apns-key.p8", APNS_KEY)?;
        let fcm_url = mocks
            .iter()
            .find(|(p, _)| *p == Provider::Fcm)
            .map(|(_, m)| m.url())
            .unwrap_or_default();
        let account = serde_json::json!({
            "type": "service_account",
            "project_id": "clave-load",
            "private_key_id": "load1",
            "private_key": FCM_KEY,
            "client_email": target::FCM_EMAIL,
            "token_uri": format!("{fcm_url}/token"),
        });
        let fcm_account = write("fcm-account.json", account.to_string().as_bytes())?;
        let endpoints = Endpoints {
            smscs: smscs.iter().map(|(n, s)| (n.clone(), s.addr())).collect(),
            push: mocks.iter().map(|(p, m)| (p.as_str(), m.url())).collect(),
            ca_file,
            apns_key,
            fcm_account,
        };
        Ok(Self {
            smscs,
            push: mocks,
            endpoints,
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Make `event` happen.
    pub fn apply(&self, event: &Event) {
        match event {
            Event::CarrierHang { carrier, .. } | Event::CarrierResume { carrier, .. } => {
                let hung = matches!(event, Event::CarrierHang { .. });
                if let Some((_, smsc)) = self.smscs.iter().find(|(n, _)| n == carrier) {
                    smsc.set_hung(hung);
                }
            }
            Event::PushLatency {
                provider, latency, ..
            } => {
                if let Some((_, mock)) = self.push.iter().find(|(p, _)| p.as_str() == provider) {
                    mock.set_behaviour(Behaviour {
                        latency_ms: latency.as_millis() as u64,
                        ..Behaviour::default()
                    });
                }
            }
        }
    }

    pub fn stats(&self) -> (Vec<SimStats>, Vec<SimStats>) {
        let smscs = self
            .smscs
            .iter()
            .map(|(name, s)| {
                let st = s.stats();
                SimStats {
                    name: name.clone(),
                    accepted: st.accepted.load(Ordering::Relaxed),
                    refused: st.refused.load(Ordering::Relaxed),
                    receipts: st.receipts_sent.load(Ordering::Relaxed),
                    binds: st.binds.load(Ordering::Relaxed),
                }
            })
            .collect();
        let push = self
            .push
            .iter()
            .map(|(p, m)| {
                let c = m.counts(*p);
                SimStats {
                    name: p.as_str().into(),
                    accepted: c.accepted,
                    refused: c.rejected,
                    receipts: 0,
                    binds: c.tokens_issued,
                }
            })
            .collect();
        (smscs, push)
    }

    pub fn stop(&self) {
        for (_, s) in &self.smscs {
            s.stop();
        }
    }
}
