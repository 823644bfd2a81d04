//! Pure hot paths with no I/O: the verification state machine, SMPP PDU encoding and
//! decoding (and receipt texts), GSM 03.38 encoding, and building the push requests
//! for APNs, FCM and HMS. Each counts elements per second; where a simpler way
//! exists, it runs beside as the baseline.

use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otpd::domain::clock::UnixMillis;
use otpd::domain::locale::Locale;
use otpd::domain::verification::{
    CheckOutcome, NewVerification, Policy, RequestedChannel, SendResult, SendState, Verification,
};
use otpd::numbers::e164::E164;
use otpd::numbers::reader::NumberLine;
use otpd::secrets::code::{Code, CodeKeys, CodeLength};
use otpd::secrets::id::{ShardTag, VerificationId};
use otpd_adapters::ChannelKind;
use otpd_adapters::push::Notification;
use otpd_adapters::smpp::receipt;
use otpd_adapters::smpp::{encoding, pdu};
use otpd_benches::SECRET;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::{Command, CommandStatus};
use tokio_util::codec::{Decoder, Encoder};

fn lifecycle(c: &mut Criterion) {
    let keys = CodeKeys::derive(SECRET);
    let id = VerificationId::new(ShardTag(7), [3; 14]);
    let code = Code::parse("123456").unwrap();
    let (mac, sealed) = (keys.mac(&id, &code), keys.seal(&id, &code));
    let policy = Policy {
        ttl: Duration::from_secs(600),
        code_length: CodeLength::new(6).unwrap(),
        max_attempts: 5,
        max_sends: 5,
        resend_cooldown: Duration::from_secs(30),
        escalate_after: Duration::from_secs(60),
    };
    let purpose = otpd::domain::name::Name::new("login");
    let now = UnixMillis(1_795_435_200_000);
    let fresh = || {
        Verification::new(
            NewVerification {
                id,
                to: E164::from_digits_unchecked(34_600_123_456),
                line: NumberLine::default(),
                purpose,
                subject: Some("12345678Z".into()),
                client: None,
                locale: Locale::Es,
                channel: RequestedChannel::Auto,
                first_send: ChannelKind::Sms,
                code_mac: mac,
                sealed_code: sealed,
                policy,
                match_code: None,
                challenge: None,
            },
            now,
        )
    };
    let mut group = c.benchmark_group("verification");
    group.throughput(Throughput::Elements(1));
    // A whole life: created, sent, receipted, one wrong code, the right one.
    group.bench_function("lifecycle: new, sent, delivered, wrong, approved", |b| {
        b.iter(|| {
            let mut v = fresh();
            v.record_send(
                1,
                SendResult::Sent {
                    reference: "4F2A1C".into(),
                },
                now,
            );
            v.record_report(1, SendState::Delivered, None, now);
            let wrong = v.check(false, now);
            let right = v.check(true, now);
            assert!(matches!(right, CheckOutcome::Approved), "{wrong:?}");
            v
        })
    });
    group.bench_function("check: mac compare + state step", |b| {
        let typed = Code::parse("123456").unwrap();
        b.iter_batched_ref(
            fresh,
            |v| {
                let right = keys.mac(&id, &typed).matches(&v.code_mac);
                v.check(right, now)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn smpp(c: &mut Criterion) {
    let submit = otpd_benches::bench_submit_sm();
    let mut group = c.benchmark_group("smpp codec");
    group.throughput(Throughput::Elements(1));
    let mut codec = CommandCodec::new();
    let command = Command::new(CommandStatus::EsmeRok, 42, submit.clone());
    group.bench_function("encode submit_sm", |b| {
        let mut buf = BytesMut::with_capacity(512);
        b.iter(|| {
            buf.clear();
            codec.encode(command.clone(), &mut buf).unwrap();
            buf.len()
        })
    });
    let mut wire = BytesMut::new();
    codec.encode(command.clone(), &mut wire).unwrap();
    group.bench_function("decode submit_sm", |b| {
        b.iter(|| {
            let mut buf = wire.clone();
            codec.decode(&mut buf).unwrap().unwrap()
        })
    });
    let deliver = pdu::receipt_deliver_sm(
        &pdu::Address::international("+34600123456"),
        &pdu::Address { ton: 5, npi: 0, addr: "Clave".into() },
        "id:0A1B2C3D sub:001 dlvrd:001 submit date:2611231200 done date:2611231201 stat:DELIVRD err:000 text:",
        Vec::new(),
    )
    .unwrap();
    let mut receipt_wire = BytesMut::new();
    codec
        .encode(
            Command::new(CommandStatus::EsmeRok, 7, deliver),
            &mut receipt_wire,
        )
        .unwrap();
    group.bench_function("decode deliver_sm receipt + parse its text", |b| {
        b.iter(|| {
            let mut buf = receipt_wire.clone();
            let command = codec.decode(&mut buf).unwrap().unwrap();
            match command.pdu() {
                Some(rusmpp::Pdu::DeliverSm(d)) => pdu::receipt_of(d).unwrap().unwrap(),
                other => panic!("{other:?}"),
            }
        })
    });
    let text = "id:0A1B2C3D sub:001 dlvrd:001 submit date:2611231200 done date:2611231201 stat:DELIVRD err:000 text:";
    group.bench_function("receipt text parse", |b| {
        b.iter(|| receipt::parse_text(text).unwrap())
    });
    let sms = "123456 es tu código Cl@ve. Caduca en 10 minutos. No lo compartas con nadie.";
    group.bench_function("GSM 03.38 / UCS-2 encode (one code message)", |b| {
        b.iter(|| encoding::encode(sms, 1))
    });
    // Baseline: UTF-16 big-endian of the same text, the least any encoder does.
    group.bench_function("UTF-16BE bytes (baseline)", |b| {
        b.iter(|| {
            sms.encode_utf16()
                .flat_map(u16::to_be_bytes)
                .collect::<Vec<u8>>()
        })
    });
    group.finish();
}

fn push(c: &mut Criterion) {
    let note = Notification {
        token: "5a0f3c9e1b7d4a2e8c6f0b1d3e5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a",
        title: "Cl@ve · 427",
        body: "123456 es tu código Cl@ve. Caduca en 10 min.",
        verification_id: "vf_0123456789abcdef0123456789abcdef",
        expires_at: 4_102_444_800,
        ttl_secs: 600,
        match_code: Some("427"),
        approval: None,
        ack_token: None,
    };
    let mut group = c.benchmark_group("push request");
    group.throughput(Throughput::Elements(1));
    group.bench_function("APNs", |b| {
        b.iter(|| otpd_adapters::apns::request::build(&note, "es.gob.clave").unwrap())
    });
    group.bench_function("FCM v1", |b| {
        b.iter(|| otpd_adapters::fcm::build(&note, "clave-prod", Some("es.gob.clave")).unwrap())
    });
    group.bench_function("HMS", |b| {
        b.iter(|| otpd_adapters::hms::build(&note, "104523").unwrap())
    });
    // Baseline: the visible text alone as a JSON string, the least any request carries.
    group.bench_function("JSON of the text alone (baseline)", |b| {
        b.iter(|| serde_json::to_vec(note.body).unwrap())
    });
    group.finish();
}

criterion_group!(benches, lifecycle, smpp, push);
criterion_main!(benches);
