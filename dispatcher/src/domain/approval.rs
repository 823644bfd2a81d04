//! Approval in the app (channel `app`), the pure part: the challenge URI a QR code
//! carries, and the judgement of an app's signed answer — which device, whether its
//! signature is good, whether it is fresh. No I/O and no clock of its own; the store
//! makes the first good answer final ([`crate::store::Store::answer`]).
//!
//! An answer is authentic when a device key enrolled for the verification's subject
//! signed [`AnswerMessage`] over this verification's id, challenge and match code,
//! the decision and a timestamp close to otpd's clock. The decision is signed, so an
//! approval cannot be turned into a denial; the challenge and id are signed, so an
//! answer to one request cannot approve another; the timestamp bounds how long a
//! captured answer could be held back; and the first answer is final, so a replay
//! changes nothing.

use std::time::Duration;

use crate::domain::clock::UnixMillis;
use crate::domain::subscriber::Device;
use crate::domain::verification::{RequestedChannel, Verification};
use crate::secrets::device_key::{AnswerMessage, Decision, SignatureError};

/// An app's answer as it arrives: which key signed, when, and the signature.
#[derive(Debug, Clone, Copy)]
pub struct SignedAnswer<'a> {
    /// The thumbprint of the device key (as enrolment showed it).
    pub device: &'a str,
    /// Unix milliseconds, as signed.
    pub timestamp_ms: i64,
    /// Base64 (standard or URL-safe): DER or raw `r‖s` for ES256, 64 bytes for
    /// Ed25519.
    pub signature: &'a str,
}

/// Why an answer is not accepted (before the store sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnswerRefusal {
    #[error("this verification is not an approval request (channel `app`)")]
    NotApp,
    #[error("no device key with this thumbprint is enrolled for the verification's subject")]
    UnknownDevice,
    #[error("the signature does not verify with the device's key")]
    BadSignature,
    #[error("the signature is not base64, or not a signature of the key's algorithm")]
    MalformedSignature,
    #[error(
        "the answer's timestamp is {off_by_ms} ms from otpd's clock; at most {max_ms} ms is accepted"
    )]
    Stale { off_by_ms: u64, max_ms: u64 },
}

impl AnswerRefusal {
    /// The machine-readable error code (and metric label).
    pub fn code(self) -> &'static str {
        match self {
            AnswerRefusal::NotApp => "not_app",
            AnswerRefusal::UnknownDevice => "unknown_device",
            AnswerRefusal::BadSignature => "bad_signature",
            AnswerRefusal::MalformedSignature => "malformed_signature",
            AnswerRefusal::Stale { .. } => "stale_answer",
        }
    }
    /// Whether the answer was a try at a device key it did not have (anything but
    /// an answer to a verification that is not an approval request): such answers
    /// are charged to the caller's network (`limits.answer_ip`) — never to the
    /// subject, whose budget a stranger must not be able to spend.
    pub fn is_guess(self) -> bool {
        !matches!(self, AnswerRefusal::NotApp)
    }
}

/// Check that `answer` is `decision` on `v`, signed by one of `devices` (the
/// subject's), and fresh. Checks are in this order so that the cheap ones refuse
/// first and the signature (about 50 µs) is verified only for an enrolled device.
pub fn judge(
    v: &Verification,
    devices: &[Device],
    decision: Decision,
    answer: &SignedAnswer<'_>,
    now: UnixMillis,
    max_skew: Duration,
) -> Result<(), AnswerRefusal> {
    let (Some(challenge), Some(match_code), RequestedChannel::App) =
        (v.challenge(), v.match_code, v.channel)
    else {
        return Err(AnswerRefusal::NotApp);
    };
    let key = devices
        .iter()
        .filter_map(|d| d.key.as_ref())
        .find(|k| k.thumbprint() == answer.device)
        .ok_or(AnswerRefusal::UnknownDevice)?;
    let message = AnswerMessage {
        decision,
        verification: &v.id.to_string(),
        challenge: &challenge.to_string(),
        match_code: &match_code.to_string(),
        timestamp_ms: answer.timestamp_ms,
    }
    .to_bytes();
    key.verify(&message, answer.signature)
        .map_err(|e| match e {
            SignatureError::Base64 | SignatureError::Malformed(_) => {
                AnswerRefusal::MalformedSignature
            }
            SignatureError::Invalid => AnswerRefusal::BadSignature,
        })?;
    let off_by_ms = now.0.abs_diff(answer.timestamp_ms);
    let max_ms = max_skew.as_millis() as u64;
    if off_by_ms > max_ms {
        return Err(AnswerRefusal::Stale { off_by_ms, max_ms });
    }
    Ok(())
}

/// The challenge URI for a QR code: `base?v=<id>&c=<challenge>&m=<match code>&x=<expiry>`
/// (expiry in Unix seconds). Every value is URL-safe as it is (ids and challenges
/// are base64url-free of `+/=`, the others digits), so nothing needs escaping.
pub fn qr_uri(base: &str, v: &Verification) -> Option<String> {
    let challenge = v.challenge()?;
    let match_code = v.match_code?;
    Some(format!(
        "{base}?v={}&c={challenge}&m={match_code}&x={}",
        v.id,
        v.expires_at.0.div_euclid(1000)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::locale::Locale;
    use crate::domain::subscriber::Platform;
    use crate::domain::verification::{Challenge, MatchCode, NewVerification, Policy};
    use crate::numbers::e164::E164;
    use crate::numbers::reader::NumberLine;
    use crate::secrets::code::{CodeLength, CodeMac, SealedCode};
    use crate::secrets::device_key::DeviceKey;
    use crate::secrets::id::{ShardTag, VerificationId};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use ed25519_dalek::Signer as _;
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    use otpd_adapters::ChannelKind;

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);

    fn approval_request() -> Verification {
        Verification::new(
            NewVerification {
                id: VerificationId::new(ShardTag(3), [4; 14]),
                to: E164::parse_international("+34600123456").unwrap(),
                line: NumberLine::default(),
                purpose: crate::domain::name::Name::new("login"),
                subject: Some("12345678Z".into()),
                client: None,
                locale: Locale::Es,
                channel: RequestedChannel::App,
                first_send: ChannelKind::Push,
                code_mac: CodeMac([0; 32]),
                sealed_code: SealedCode(0),
                policy: Policy {
                    ttl: Duration::from_secs(300),
                    code_length: CodeLength::new(6).unwrap(),
                    max_attempts: 5,
                    max_sends: 3,
                    resend_cooldown: Duration::from_secs(30),
                    escalate_after: Duration::from_secs(60),
                },
                match_code: MatchCode::new(7),
                challenge: Some(Challenge([9; 16])),
            },
            T0,
        )
    }

    fn device(seed: u8) -> (ed25519_dalek::SigningKey, Device) {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let spki = signing.verifying_key().to_public_key_der().unwrap();
        let key = DeviceKey::parse("Ed25519", &STANDARD.encode(spki.as_bytes())).unwrap();
        let device = Device {
            platform: Platform::Fcm,
            token: format!("token-{seed}").into(),
            app: "es.gob.clave".into(),
            added_at: T0,
            key: Some(key),
        };
        (signing, device)
    }

    fn sign(key: &ed25519_dalek::SigningKey, v: &Verification, d: Decision, ts: i64) -> String {
        let message = AnswerMessage {
            decision: d,
            verification: &v.id.to_string(),
            challenge: &v.challenge().unwrap().to_string(),
            match_code: "007",
            timestamp_ms: ts,
        }
        .to_bytes();
        STANDARD.encode(key.sign(&message).to_bytes())
    }

    #[test]
    fn a_good_answer_passes_and_each_flaw_is_named() {
        let v = approval_request();
        let (key, dev) = device(1);
        let (other_key, other) = device(2);
        let thumb = dev.key.as_ref().unwrap().thumbprint();
        let skew = Duration::from_secs(60);
        let devices = [dev.clone()];
        let judge_with = |decision, device: &str, ts, sig: &str| {
            let answer = SignedAnswer {
                device,
                timestamp_ms: ts,
                signature: sig,
            };
            judge(&v, &devices, decision, &answer, T0, skew)
        };
        let good = sign(&key, &v, Decision::Approve, T0.0);
        assert_eq!(judge_with(Decision::Approve, &thumb, T0.0, &good), Ok(()));
        // The decision is signed: an approval is no denial.
        assert_eq!(
            judge_with(Decision::Deny, &thumb, T0.0, &good),
            Err(AnswerRefusal::BadSignature)
        );
        // Another device's key, enrolled elsewhere.
        let other_thumb = other.key.as_ref().unwrap().thumbprint();
        let by_other = sign(&other_key, &v, Decision::Approve, T0.0);
        assert_eq!(
            judge_with(Decision::Approve, &other_thumb, T0.0, &by_other),
            Err(AnswerRefusal::UnknownDevice)
        );
        // Signed by another key but claiming the enrolled one.
        assert_eq!(
            judge_with(Decision::Approve, &thumb, T0.0, &by_other),
            Err(AnswerRefusal::BadSignature)
        );
        // The timestamp is signed, and must be fresh either way.
        assert_eq!(
            judge_with(Decision::Approve, &thumb, T0.0 + 1, &good),
            Err(AnswerRefusal::BadSignature)
        );
        let old = T0.0 - 60_001;
        let stale = sign(&key, &v, Decision::Approve, old);
        assert_eq!(
            judge_with(Decision::Approve, &thumb, old, &stale),
            Err(AnswerRefusal::Stale {
                off_by_ms: 60_001,
                max_ms: 60_000
            })
        );
        let future = T0.0 + 60_000;
        let ahead = sign(&key, &v, Decision::Approve, future);
        assert_eq!(
            judge_with(Decision::Approve, &thumb, future, &ahead),
            Ok(())
        );
        assert_eq!(
            judge_with(Decision::Approve, &thumb, T0.0, "not base64!"),
            Err(AnswerRefusal::MalformedSignature)
        );
    }

    #[test]
    fn only_approval_requests_take_answers() {
        let mut v = approval_request();
        v.channel = RequestedChannel::Auto;
        let (key, dev) = device(1);
        let answer = SignedAnswer {
            device: &dev.key.as_ref().unwrap().thumbprint(),
            timestamp_ms: T0.0,
            signature: &sign(&key, &approval_request(), Decision::Approve, T0.0),
        };
        assert_eq!(
            judge(
                &v,
                std::slice::from_ref(&dev),
                Decision::Approve,
                &answer,
                T0,
                Duration::from_secs(60)
            ),
            Err(AnswerRefusal::NotApp)
        );
    }

    #[test]
    fn the_qr_uri_carries_id_challenge_match_code_and_expiry() {
        let v = approval_request();
        let uri = qr_uri("clave://approve", &v).unwrap();
        assert_eq!(
            uri,
            format!(
                "clave://approve?v={}&c={}&m=007&x={}",
                v.id,
                Challenge([9; 16]),
                (T0.0 + 300_000) / 1000
            )
        );
    }
}
