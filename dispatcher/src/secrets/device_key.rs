//! Device keys: the public half of a key pair an app creates in the phone's secure
//! keystore (Android Keystore, the iOS Secure Enclave) when it is registered, used
//! to sign its answer to an approval request. otpd keeps only the public key.
//!
//! Keys arrive as a `SubjectPublicKeyInfo` (DER, base64) — what both keystores
//! export and every crypto library reads — for ECDSA over P-256 (the only curve the
//! Secure Enclave and StrongBox offer) or Ed25519. An ECDSA signature may come
//! DER-encoded (what the platforms' APIs return) or as the raw 64-byte `r‖s`.
//!
//! ECDSA signatures are checked by ring (already in otpd for TLS), whose
//! assembly-backed P-256 verifies in about a fifth of the time of the pure-Rust
//! `p256` (criterion, `device_key` bench); Ed25519 by `ed25519-dalek`, faster there
//! than ring. `p256` parses and validates the keys at enrolment.
//!
//! What is signed is built here, byte for byte ([`AnswerMessage`]), so that an app
//! and otpd cannot disagree about it: the decision is part of it, so that an
//! approval can never be replayed as a denial or the other way round.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::DecodePublicKey as _;
use p256::pkcs8::EncodePublicKey as _;

/// The algorithms a device key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA over P-256 with SHA-256 (`ES256`).
    EcdsaP256,
    Ed25519,
}

impl KeyAlgorithm {
    pub fn parse(s: &str) -> Option<KeyAlgorithm> {
        match s {
            "ES256" => Some(KeyAlgorithm::EcdsaP256),
            "Ed25519" | "EdDSA" => Some(KeyAlgorithm::Ed25519),
            _ => None,
        }
    }

    /// The name the API uses (`ES256`, `Ed25519`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ES256",
            KeyAlgorithm::Ed25519 => "Ed25519",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key was refused at enrolment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key algorithm must be \"ES256\" or \"Ed25519\"")]
    Algorithm,
    #[error("the public key is not base64")]
    Base64,
    #[error("the public key is longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
    #[error("the public key is not a {0} SubjectPublicKeyInfo")]
    Malformed(KeyAlgorithm),
}

/// Why an answer's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature is not base64")]
    Base64,
    #[error("the signature is not a {0} signature")]
    Malformed(KeyAlgorithm),
    #[error("the signature does not verify with the device's key")]
    Invalid,
}

/// Longer than any P-256 or Ed25519 `SubjectPublicKeyInfo` (91 and 44 bytes).
pub const MAX_KEY_BYTES: usize = 256;

/// A device's public key, checked to be a point on its curve.
#[derive(Clone, PartialEq, Eq)]
pub enum DeviceKey {
    EcdsaP256(P256Key),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A P-256 key, and its uncompressed point for ring to verify with.
#[derive(Clone, PartialEq, Eq)]
pub struct P256Key {
    key: p256::ecdsa::VerifyingKey,
    point: Box<[u8]>,
}

impl P256Key {
    fn new(key: p256::ecdsa::VerifyingKey) -> Self {
        let point = key.to_encoded_point(false).as_bytes().into();
        Self { key, point }
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({}, {})", self.algorithm(), self.thumbprint())
    }
}

/// Base64 with or without padding, standard or URL-safe: apps send either.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let trimmed = s.trim_end_matches('=');
    if s.contains(['-', '_']) {
        URL_SAFE_NO_PAD.decode(trimmed).ok()
    } else {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .ok()
    }
}

impl DeviceKey {
    /// A key as the API receives it: its algorithm's name and its
    /// `SubjectPublicKeyInfo` in base64.
    pub fn parse(algorithm: &str, spki_base64: &str) -> Result<DeviceKey, KeyError> {
        let algorithm = KeyAlgorithm::parse(algorithm).ok_or(KeyError::Algorithm)?;
        if spki_base64.len() > MAX_KEY_BYTES * 4 / 3 + 4 {
            return Err(KeyError::TooLong);
        }
        let der = decode_base64(spki_base64).ok_or(KeyError::Base64)?;
        Self::from_spki(algorithm, &der)
    }

    pub fn from_spki(algorithm: KeyAlgorithm, der: &[u8]) -> Result<DeviceKey, KeyError> {
        if der.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong);
        }
        let malformed = |_| KeyError::Malformed(algorithm);
        Ok(match algorithm {
            KeyAlgorithm::EcdsaP256 => DeviceKey::EcdsaP256(P256Key::new(
                p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(malformed)?,
            )),
            KeyAlgorithm::Ed25519 => DeviceKey::Ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(malformed)?,
            ),
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            DeviceKey::EcdsaP256(_) => KeyAlgorithm::EcdsaP256,
            DeviceKey::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// The key's `SubjectPublicKeyInfo` (DER): how it is stored.
    pub fn to_spki(&self) -> Vec<u8> {
        match self {
            DeviceKey::EcdsaP256(k) => k
                .key
                .to_public_key_der()
                .expect("a P-256 key encodes")
                .into_vec(),
            DeviceKey::Ed25519(k) => {
                use ed25519_dalek::pkcs8::EncodePublicKey as _;
                k.to_public_key_der()
                    .expect("an Ed25519 key encodes")
                    .into_vec()
            }
        }
    }

    /// The key's `SubjectPublicKeyInfo` in standard base64, as the API shows it.
    pub fn to_spki_base64(&self) -> String {
        STANDARD.encode(self.to_spki())
    }

    /// A short name for the key (SHA-256 of its `SubjectPublicKeyInfo`, first 16
    /// bytes, base64url): for logs and views, where the key itself is noise.
    pub fn thumbprint(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.to_spki());
        URL_SAFE_NO_PAD.encode(&digest[..16])
    }

    /// Verify `signature` (base64) over `message`.
    pub fn verify(&self, message: &[u8], signature_base64: &str) -> Result<(), SignatureError> {
        // No signature of either kind is longer than 72 bytes (ECDSA, DER).
        if signature_base64.len() > 128 {
            return Err(SignatureError::Malformed(self.algorithm()));
        }
        let bytes = decode_base64(signature_base64).ok_or(SignatureError::Base64)?;
        self.verify_bytes(message, &bytes)
    }

    pub fn verify_bytes(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let malformed = SignatureError::Malformed(self.algorithm());
        match self {
            DeviceKey::EcdsaP256(key) => {
                let check = |algorithm| {
                    ring::signature::UnparsedPublicKey::new(algorithm, &key.point)
                        .verify(message, signature)
                        .is_ok()
                };
                // Raw r‖s is 64 bytes. A DER signature is 8 to 72 bytes, and 64 only
                // when both integers are short (about one in 2^48): tried as DER
                // when it does not verify raw.
                let ok = if signature.len() == 64 {
                    check(&ring::signature::ECDSA_P256_SHA256_FIXED)
                        || (signature[0] == 0x30 && check(&ring::signature::ECDSA_P256_SHA256_ASN1))
                } else {
                    p256::ecdsa::Signature::from_der(signature).map_err(|_| malformed)?;
                    check(&ring::signature::ECDSA_P256_SHA256_ASN1)
                };
                if ok {
                    Ok(())
                } else {
                    Err(SignatureError::Invalid)
                }
            }
            DeviceKey::Ed25519(key) => {
                let sig = ed25519_dalek::Signature::from_slice(signature).map_err(|_| malformed)?;
                key.verify_strict(message, &sig)
                    .map_err(|_| SignatureError::Invalid)
            }
        }
    }
}

/// An app's decision on an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

/// What a device signs to answer: the lines
///
/// ```text
/// otpd-answer-v1
/// <decision: approve | deny>
/// <verification id>
/// <challenge>
/// <match code>
/// <timestamp: Unix milliseconds>
/// ```
///
/// joined by `\n`, in UTF-8, with no trailing newline. None of the fields can
/// contain a newline, so no two answers sign the same bytes.
#[derive(Debug, Clone, Copy)]
pub struct AnswerMessage<'a> {
    pub decision: Decision,
    pub verification: &'a str,
    pub challenge: &'a str,
    pub match_code: &'a str,
    pub timestamp_ms: i64,
}

impl AnswerMessage<'_> {
    pub const VERSION: &'static str = "otpd-answer-v1";

    pub fn to_bytes(&self) -> Vec<u8> {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            Self::VERSION,
            self.decision.as_str(),
            self.verification,
            self.challenge,
            self.match_code,
            self.timestamp_ms
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;

    fn p256_pair(seed: u8) -> (p256::ecdsa::SigningKey, DeviceKey) {
        let signing = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        let spki = signing
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec();
        let key = DeviceKey::parse("ES256", &STANDARD.encode(spki)).unwrap();
        (signing, key)
    }

    fn ed25519_pair(seed: u8) -> (ed25519_dalek::SigningKey, DeviceKey) {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let spki = signing
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec();
        let key = DeviceKey::parse("Ed25519", &URL_SAFE_NO_PAD.encode(spki)).unwrap();
        (signing, key)
    }

    fn message(decision: Decision) -> Vec<u8> {
        AnswerMessage {
            decision,
            verification: "vf_0123",
            challenge: "c-xyz",
            match_code: "42",
            timestamp_ms: 1_795_435_200_000,
        }
        .to_bytes()
    }

    #[test]
    fn the_signed_message_is_fixed_byte_for_byte() {
        assert_eq!(
            message(Decision::Approve),
            b"otpd-answer-v1\napprove\nvf_0123\nc-xyz\n42\n1795435200000"
        );
    }

    #[test]
    fn p256_signatures_verify_in_der_and_raw_form_and_only_over_their_message() {
        let (signing, key) = p256_pair(7);
        let m = message(Decision::Approve);
        let sig: p256::ecdsa::Signature = signing.sign(&m);
        key.verify(&m, &STANDARD.encode(sig.to_der().as_bytes()))
            .unwrap();
        key.verify(&m, &URL_SAFE_NO_PAD.encode(sig.to_bytes()))
            .unwrap();
        // The same signature over the other decision, or by another key: refused.
        assert_eq!(
            key.verify(&message(Decision::Deny), &STANDARD.encode(sig.to_bytes())),
            Err(SignatureError::Invalid)
        );
        let (_, other) = p256_pair(8);
        assert_eq!(
            other.verify(&m, &STANDARD.encode(sig.to_bytes())),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn ed25519_signatures_verify_only_over_their_message() {
        use ed25519_dalek::Signer as _;
        let (signing, key) = ed25519_pair(3);
        let m = message(Decision::Deny);
        let sig = signing.sign(&m);
        key.verify(&m, &STANDARD.encode(sig.to_bytes())).unwrap();
        let mut flipped = sig.to_bytes();
        flipped[10] ^= 1;
        assert_eq!(
            key.verify(&m, &STANDARD.encode(flipped)),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            key.verify(
                &message(Decision::Approve),
                &STANDARD.encode(sig.to_bytes())
            ),
            Err(SignatureError::Invalid)
        );
    }

    /// Keys and signatures made by another implementation (ring), the public keys
    /// wrapped in their `SubjectPublicKeyInfo` by the fixed DER prefixes of the
    /// two algorithms (RFC 5480, RFC 8410).
    #[test]
    fn keys_and_signatures_from_an_independent_implementation_verify() {
        use ring::rand::SystemRandom;
        use ring::signature::{self as sig, KeyPair as _};
        let rng = SystemRandom::new();
        let m = message(Decision::Approve);

        let pkcs8 =
            sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = sig::EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        spki.extend_from_slice(pair.public_key().as_ref());
        let key = DeviceKey::parse("ES256", &STANDARD.encode(&spki)).unwrap();
        assert_eq!(key.to_spki(), spki);
        let signature = pair.sign(&rng, &m).unwrap();
        key.verify(&m, &STANDARD.encode(signature.as_ref()))
            .unwrap();

        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut spki = hex::decode("302a300506032b6570032100").unwrap();
        spki.extend_from_slice(pair.public_key().as_ref());
        let key = DeviceKey::parse("Ed25519", &STANDARD.encode(&spki)).unwrap();
        assert_eq!(key.to_spki(), spki);
        key.verify(&m, &STANDARD.encode(pair.sign(&m).as_ref()))
            .unwrap();
        assert_eq!(
            key.verify(b"another message", &STANDARD.encode(pair.sign(&m).as_ref())),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn keys_round_trip_through_their_stored_form() {
        let (_, p) = p256_pair(9);
        let (_, e) = ed25519_pair(9);
        for key in [p, e] {
            let again = DeviceKey::parse(key.algorithm().as_str(), &key.to_spki_base64()).unwrap();
            assert_eq!(again, key);
            assert_eq!(again.thumbprint(), key.thumbprint());
        }
    }

    #[test]
    fn bad_keys_and_signatures_are_named() {
        let (_, p) = p256_pair(5);
        let (_, e) = ed25519_pair(5);
        assert_eq!(
            DeviceKey::parse("RS256", &p.to_spki_base64()),
            Err(KeyError::Algorithm)
        );
        assert_eq!(
            DeviceKey::parse("ES256", "not base64!"),
            Err(KeyError::Base64)
        );
        // An Ed25519 key offered as P-256, and the other way round.
        assert_eq!(
            DeviceKey::parse("ES256", &e.to_spki_base64()),
            Err(KeyError::Malformed(KeyAlgorithm::EcdsaP256))
        );
        assert_eq!(
            DeviceKey::parse("Ed25519", &p.to_spki_base64()),
            Err(KeyError::Malformed(KeyAlgorithm::Ed25519))
        );
        assert_eq!(
            DeviceKey::parse("ES256", &"A".repeat(2000)),
            Err(KeyError::TooLong)
        );
        // A P-256 key whose point is not on the curve.
        let mut spki = p.to_spki();
        let last = spki.len() - 1;
        spki[last] ^= 0x55;
        assert_eq!(
            DeviceKey::from_spki(KeyAlgorithm::EcdsaP256, &spki),
            Err(KeyError::Malformed(KeyAlgorithm::EcdsaP256))
        );
        assert_eq!(p.verify(b"m", "%%%"), Err(SignatureError::Base64));
        assert_eq!(
            p.verify(b"m", &STANDARD.encode([1u8; 10])),
            Err(SignatureError::Malformed(KeyAlgorithm::EcdsaP256))
        );
        assert_eq!(
            e.verify(b"m", &STANDARD.encode([1u8; 63])),
            Err(SignatureError::Malformed(KeyAlgorithm::Ed25519))
        );
    }
}
