//! Webhook signatures as the Standard Webhooks specification defines them, so that
//! a backend verifies otpd's webhooks with an existing library: the secret is
//! `whsec_` + base64 of its bytes; the signature of a message is
//! `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")), sent in the
//! `webhook-signature` header beside `webhook-id` and `webhook-timestamp` (Unix
//! seconds).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const PREFIX: &str = "whsec_";
/// Shorter keys are refused: the specification asks for 24 to 64 bytes.
const MIN_KEY: usize = 24;
const MAX_KEY: usize = 64;

/// A client's webhook secret. `Debug` never shows the key.
#[derive(Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Why a webhook secret was refused. Never echoes the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("must start with `whsec_`")]
    Prefix,
    #[error("the part after `whsec_` is not base64")]
    Base64,
    #[error("the key must be {MIN_KEY} to {MAX_KEY} bytes, not {0}")]
    Length(usize),
}

impl PartialEq for WebhookSecret {
    fn eq(&self, other: &WebhookSecret) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

/// Written out (the effective configuration) without the key.
impl serde::Serialize for WebhookSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("whsec_<redacted>")
    }
}

impl TryFrom<String> for WebhookSecret {
    type Error = String;

    fn try_from(text: String) -> Result<WebhookSecret, String> {
        WebhookSecret::parse(&text).map_err(|e| e.to_string())
    }
}

impl WebhookSecret {
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let encoded = text.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let key = STANDARD.decode(encoded).map_err(|_| SecretError::Base64)?;
        if !(MIN_KEY..=MAX_KEY).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(WebhookSecret(key))
    }

    /// The `webhook-signature` header's value for message `id`, sent at
    /// `timestamp` (Unix seconds), with `body` as sent.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    /// Whether `header` (space-separated `v1,<base64>` signatures, as a receiver
    /// gets it) holds a good signature of this message; compared in constant time.
    pub fn verify(&self, header: &str, id: &str, timestamp: i64, body: &[u8]) -> bool {
        let expected = self.mac(id, timestamp, body);
        header
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b| STANDARD.decode(b).ok())
            .any(|given| bool::from(given.ct_eq(&expected)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example, checked here against the `standardwebhooks`
    /// package from PyPI (1.3.0): `Webhook(secret).sign(id, 1614265330, body)`.
    #[test]
    fn the_specifications_example_signs_alike() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify(
            &format!("v1,bm9wZQ== {signature}"),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body
        ));
        assert!(!secret.verify(&signature, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body));
        assert!(!secret.verify(&signature, "msg_other", 1614265330, body));
        assert!(!secret.verify(
            &signature,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b"{}"
        ));
    }

    #[test]
    fn bad_secrets_are_refused_without_echo() {
        let refused = |s: &str| WebhookSecret::parse(s).unwrap_err();
        assert_eq!(refused("MfKQ9r8GKYqr"), SecretError::Prefix);
        assert_eq!(refused("whsec_!!!"), SecretError::Base64);
        assert_eq!(refused("whsec_c2hvcnQ="), SecretError::Length(5));
        let s = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(!format!("{s:?}").contains("MfKQ"));
    }
}
