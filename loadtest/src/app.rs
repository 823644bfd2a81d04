//! The reference app for approval in the app (channel `app`), written from the API's
//! documentation and independent of otpd's code: it makes its key pair with ring
//! (as a phone's keystore would), enrolls the public half with its device, reads
//! approval requests from what the push providers received (APNs, FCM and HMS
//! payloads) or from a scanned QR URI, and answers with a signature over the
//! documented message. The end-to-end tests drive it over the HTTP API, and the
//! load tool's people with the app answer with it.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};

/// RFC 5480 / RFC 8410 `SubjectPublicKeyInfo` prefixes of an uncompressed P-256
/// point and of an Ed25519 key.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

enum Pair {
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One app installation with its key.
pub struct AppKey {
    pair: Pair,
    rng: SystemRandom,
}

/// An approval request as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub verification: String,
    pub challenge: String,
    pub match_code: String,
    /// Who asks (from the push; a QR code does not say).
    pub requester: Option<String>,
    pub purpose: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    fn word(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

impl AppKey {
    /// An ECDSA P-256 key, as the Secure Enclave or StrongBox makes.
    pub fn es256() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("its own PKCS#8");
        Self {
            pair: Pair::Es256(pair),
            rng,
        }
    }

    pub fn ed25519() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("an Ed25519 key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("its own PKCS#8");
        Self {
            pair: Pair::Ed25519(pair),
            rng,
        }
    }

    /// An Ed25519 key from a seed: the load tool gives each person the same key at
    /// enrolment and when answering, without keeping millions of them.
    pub fn ed25519_from_seed(seed: &[u8; 32]) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes are a seed");
        Self {
            pair: Pair::Ed25519(pair),
            rng: SystemRandom::new(),
        }
    }

    fn spki(&self) -> Vec<u8> {
        let (prefix, key): (&[u8], &[u8]) = match &self.pair {
            Pair::Es256(p) => (&P256_SPKI_PREFIX, p.public_key().as_ref()),
            Pair::Ed25519(p) => (&ED25519_SPKI_PREFIX, p.public_key().as_ref()),
        };
        [prefix, key].concat()
    }

    /// The `key` object of a device registration.
    pub fn enrollment(&self) -> Value {
        let algorithm = match self.pair {
            Pair::Es256(_) => "ES256",
            Pair::Ed25519(_) => "Ed25519",
        };
        json!({"algorithm": algorithm, "public_key": STANDARD.encode(self.spki())})
    }

    /// The key's thumbprint as documented: SHA-256 of the `SubjectPublicKeyInfo`,
    /// first 16 bytes, base64url without padding.
    pub fn thumbprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.spki());
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
    }

    /// The documented message: `otpd-answer-v1`, the decision, the id, the
    /// challenge, the match code and the timestamp, one per line.
    fn message(decision: Decision, r: &Request, timestamp_ms: i64) -> Vec<u8> {
        format!(
            "otpd-answer-v1\n{}\n{}\n{}\n{}\n{}",
            decision.word(),
            r.verification,
            r.challenge,
            r.match_code,
            timestamp_ms
        )
        .into_bytes()
    }

    /// The body of `POST /v1/verifications/{id}/approve` (or `/deny`).
    pub fn answer(&self, decision: Decision, r: &Request, timestamp_ms: i64) -> Value {
        let message = Self::message(decision, r, timestamp_ms);
        let signature = match &self.pair {
            Pair::Es256(p) => p
                .sign(&self.rng, &message)
                .expect("signs")
                .as_ref()
                .to_vec(),
            Pair::Ed25519(p) => p.sign(&message).as_ref().to_vec(),
        };
        json!({
            "device": self.thumbprint(),
            "timestamp": timestamp_ms,
            "signature": STANDARD.encode(signature),
        })
    }

    /// The path the answer goes to.
    pub fn path(decision: Decision, r: &Request) -> String {
        format!("/v1/verifications/{}/{}", r.verification, decision.word())
    }
}

impl Request {
    /// From a push as a provider received it: APNs carries otpd's fields under
    /// `otpd`, FCM under `message.data`, HMS as a JSON string in `message.data`.
    /// `None` when the push is not an approval request.
    pub fn from_push(body: &Value) -> Option<Request> {
        let data = if let Some(d) = body.get("otpd") {
            d.clone()
        } else {
            match &body["message"]["data"] {
                Value::String(s) => serde_json::from_str(s).ok()?,
                other => other.clone(),
            }
        };
        if data["kind"] != "approval" {
            return None;
        }
        let text = |k: &str| data[k].as_str().map(str::to_string);
        Some(Request {
            verification: text("verification_id")?,
            challenge: text("challenge")?,
            match_code: text("match_code")?,
            requester: text("requester"),
            purpose: text("purpose"),
        })
    }

    /// From a scanned QR code: `scheme://path?v=<id>&c=<challenge>&m=<match>&x=<expiry>`.
    pub fn from_qr(uri: &str) -> Option<Request> {
        let (_, query) = uri.split_once('?')?;
        let field = |k: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(Request {
            verification: field("v")?,
            challenge: field("c")?,
            match_code: field("m")?,
            requester: None,
            purpose: None,
        })
    }
}
