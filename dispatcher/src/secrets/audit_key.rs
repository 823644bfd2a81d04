//! The key that signs the audit trail's checkpoints: Ed25519, configured as the
//! base64 of its 32-byte seed (`otpd audit keygen` makes one). Only its public half
//! is ever written out; whoever holds the public key can tell that a checkpoint —
//! and the whole chain before it — is otpd's, and nobody without the seed can make
//! one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// The signing key. `Debug` and serialisation never show the seed.
#[derive(Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct AuditKey(SigningKey);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey(public {})", self.public())
    }
}

impl PartialEq for AuditKey {
    fn eq(&self, other: &AuditKey) -> bool {
        self.0.verifying_key() == other.0.verifying_key()
    }
}

impl serde::Serialize for AuditKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl TryFrom<String> for AuditKey {
    type Error = String;

    fn try_from(text: String) -> Result<AuditKey, String> {
        AuditKey::parse(&text)
    }
}

impl AuditKey {
    /// The base64 of a 32-byte seed.
    pub fn parse(text: &str) -> Result<AuditKey, String> {
        let seed = STANDARD
            .decode(text.trim())
            .map_err(|_| "not base64 (otpd audit keygen makes a key)".to_string())?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|s: Vec<u8>| format!("an Ed25519 seed is 32 bytes, not {}", s.len()))?;
        Ok(AuditKey(SigningKey::from_bytes(&seed)))
    }

    /// A new key from the operating system's randomness: (seed, public key), both
    /// in base64.
    pub fn generate() -> Result<(String, String), getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        let key = AuditKey(SigningKey::from_bytes(&seed));
        Ok((STANDARD.encode(seed), key.public()))
    }

    /// The public key, in base64.
    pub fn public(&self) -> String {
        STANDARD.encode(self.0.verifying_key().as_bytes())
    }

    /// The signature of `message`, in base64.
    pub fn sign(&self, message: &[u8]) -> String {
        STANDARD.encode(self.0.sign(message).to_bytes())
    }
}

/// Whether `signature` (base64) is `public`'s (base64) over `message`.
pub fn verify(public: &str, message: &[u8], signature: &str) -> bool {
    let Some(key) = STANDARD
        .decode(public)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
    else {
        return false;
    };
    let Some(sig) = STANDARD
        .decode(signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        return false;
    };
    key.verify(message, &Signature::from_bytes(&sig)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_public_key_only() {
        let (seed, public) = AuditKey::generate().unwrap();
        let key = AuditKey::parse(&seed).unwrap();
        assert_eq!(key.public(), public);
        let sig = key.sign(b"head");
        assert!(verify(&public, b"head", &sig));
        assert!(!verify(&public, b"other", &sig));
        let (_, other) = AuditKey::generate().unwrap();
        assert!(!verify(&other, b"head", &sig));
        assert!(!format!("{key:?}").contains(&seed));
        assert!(
            AuditKey::parse("c2hvcnQ=")
                .unwrap_err()
                .contains("32 bytes")
        );
    }
}
