//! What verifying an app's signed answer costs: parsing the signature and checking
//! it against the device's stored key, for ECDSA P-256 (DER and raw `r‖s`) and
//! Ed25519, and parsing a stored key; beside each check, the other library's. The
//! HMAC that checks a typed PIN runs beside as the baseline: the price of approving
//! in the app over typing a code. `answer_judged` is the whole judgement of one
//! answer (device found by thumbprint among the subject's, message rebuilt, verified).

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otpd::secrets::code::{Code, CodeKeys};
use otpd::secrets::device_key::{AnswerMessage, Decision, DeviceKey, KeyAlgorithm};
use otpd::secrets::id::{ShardTag, VerificationId};
use otpd_benches::SECRET;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;

fn answer() -> Vec<u8> {
    AnswerMessage {
        decision: Decision::Approve,
        verification: "vf_8c45acd5d012d3a5b2d2cc9f234e6077",
        challenge: "Qm9uam91ciwgQ2xAdmUh",
        match_code: "42",
        timestamp_ms: 1_795_435_200_000,
    }
    .to_bytes()
}

fn verify(c: &mut Criterion) {
    let m = answer();
    let mut g = c.benchmark_group("answer_signature");
    g.throughput(Throughput::Elements(1));

    let p256_signing = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let p256_spki = p256_signing
        .verifying_key()
        .to_public_key_der()
        .unwrap()
        .into_vec();
    let p256_key = DeviceKey::from_spki(KeyAlgorithm::EcdsaP256, &p256_spki).unwrap();
    let sig: p256::ecdsa::Signature = p256_signing.sign(&m);
    let (der, raw) = (
        STANDARD.encode(sig.to_der().as_bytes()),
        STANDARD.encode(sig.to_bytes()),
    );
    g.bench_function("es256_der", |b| {
        b.iter(|| p256_key.verify(black_box(&m), black_box(&der)).unwrap())
    });
    g.bench_function("es256_raw", |b| {
        b.iter(|| p256_key.verify(black_box(&m), black_box(&raw)).unwrap())
    });

    let ed_signing = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let ed_spki = {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        ed_signing
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec()
    };
    let ed_key = DeviceKey::from_spki(KeyAlgorithm::Ed25519, &ed_spki).unwrap();
    let ed_sig = {
        use ed25519_dalek::Signer as _;
        STANDARD.encode(ed_signing.sign(&m).to_bytes())
    };
    g.bench_function("ed25519", |b| {
        b.iter(|| ed_key.verify(black_box(&m), black_box(&ed_sig)).unwrap())
    });

    // The other implementation of each check, for the choice made: ES256 with the
    // pure-Rust p256 (otpd uses ring's), Ed25519 with ring (otpd uses dalek).
    g.bench_function("other_p256_es256", |b| {
        use p256::ecdsa::signature::Verifier as _;
        let key = p256_signing.verifying_key();
        b.iter(|| key.verify(black_box(&m), black_box(&sig)).unwrap())
    });
    let ring_ed = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        ed_signing.verifying_key().to_bytes().to_vec(),
    );
    let ed_bytes = {
        use ed25519_dalek::Signer as _;
        ed_signing.sign(&m).to_bytes().to_vec()
    };
    g.bench_function("other_ring_ed25519", |b| {
        b.iter(|| ring_ed.verify(black_box(&m), black_box(&ed_bytes)).unwrap())
    });

    // Keys are stored as their SubjectPublicKeyInfo: each answer parses one.
    g.bench_function("es256_key_parse", |b| {
        b.iter(|| DeviceKey::from_spki(KeyAlgorithm::EcdsaP256, black_box(&p256_spki)).unwrap())
    });
    g.bench_function("ed25519_key_parse", |b| {
        b.iter(|| DeviceKey::from_spki(KeyAlgorithm::Ed25519, black_box(&ed_spki)).unwrap())
    });

    // Baseline: checking a typed PIN (its MAC under the server's keys).
    let keys = CodeKeys::derive(SECRET);
    let id = VerificationId::new(ShardTag(7), [3; 14]);
    let code = Code::parse("123456").unwrap();
    g.bench_function("baseline_pin_mac", |b| {
        b.iter(|| keys.mac(black_box(&id), black_box(&code)))
    });
    g.finish();
}

/// The whole judgement of one answer as `POST …/approve` makes it: find the device
/// among the subject's three by thumbprint, rebuild the signed message, verify.
fn judge(c: &mut Criterion) {
    use otpd::domain::approval::{SignedAnswer, judge};
    use otpd::domain::clock::UnixMillis;
    use otpd::domain::subscriber::{Device, Platform};
    use otpd::domain::verification::{
        Challenge, MatchCode, NewVerification, Policy, RequestedChannel, Verification,
    };
    use std::time::Duration;

    let now = UnixMillis(1_795_435_200_000);
    let id = VerificationId::new(ShardTag(7), [3; 14]);
    let keys = CodeKeys::derive(SECRET);
    let code = Code::parse("123456").unwrap();
    let v = Verification::new(
        NewVerification {
            id,
            to: otpd::numbers::e164::E164::parse_international("+34600123456").unwrap(),
            line: Default::default(),
            purpose: otpd::domain::name::Name::new("login"),
            subject: Some("12345678Z".into()),
            client: None,
            locale: otpd::domain::locale::Locale::Es,
            channel: RequestedChannel::App,
            first_send: otpd_adapters::ChannelKind::Push,
            code_mac: keys.mac(&id, &code),
            sealed_code: keys.seal(&id, &code),
            policy: Policy {
                ttl: Duration::from_secs(300),
                code_length: otpd::secrets::code::CodeLength::new(6).unwrap(),
                max_attempts: 5,
                max_sends: 5,
                resend_cooldown: Duration::from_secs(30),
                escalate_after: Duration::from_secs(60),
            },
            match_code: MatchCode::new(427),
            challenge: Some(Challenge([9; 16])),
        },
        now,
    );
    let message = AnswerMessage {
        decision: Decision::Approve,
        verification: &id.to_string(),
        challenge: &Challenge([9; 16]).to_string(),
        match_code: "427",
        timestamp_ms: now.0,
    }
    .to_bytes();
    let device = |key: DeviceKey, n: u8| Device {
        platform: Platform::Fcm,
        token: format!("token-{n}").into(),
        app: "es.gob.clave".into(),
        added_at: now,
        key: Some(key),
    };
    let p256_signing = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let p256_key = DeviceKey::from_spki(
        KeyAlgorithm::EcdsaP256,
        &p256_signing
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec(),
    )
    .unwrap();
    let ed_signing = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let ed_key = {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        DeviceKey::from_spki(
            KeyAlgorithm::Ed25519,
            &ed_signing
                .verifying_key()
                .to_public_key_der()
                .unwrap()
                .into_vec(),
        )
        .unwrap()
    };
    let other = DeviceKey::from_spki(KeyAlgorithm::Ed25519, &{
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        ed25519_dalek::SigningKey::from_bytes(&[5; 32])
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec()
    })
    .unwrap();
    let devices = [
        device(other, 0),
        device(p256_key.clone(), 1),
        device(ed_key.clone(), 2),
    ];
    let es_sig = {
        let sig: p256::ecdsa::Signature = p256_signing.sign(&message);
        STANDARD.encode(sig.to_der().as_bytes())
    };
    let ed_sig = {
        use ed25519_dalek::Signer as _;
        STANDARD.encode(ed_signing.sign(&message).to_bytes())
    };
    let mut g = c.benchmark_group("answer_judged");
    g.throughput(Throughput::Elements(1));
    for (name, key, sig) in [("es256", &p256_key, &es_sig), ("ed25519", &ed_key, &ed_sig)] {
        let thumbprint = key.thumbprint();
        let answer = SignedAnswer {
            device: &thumbprint,
            timestamp_ms: now.0,
            signature: sig,
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                judge(
                    black_box(&v),
                    black_box(&devices),
                    Decision::Approve,
                    black_box(&answer),
                    now,
                    Duration::from_secs(60),
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, verify, judge);
criterion_main!(benches);
