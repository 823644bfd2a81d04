//! An SMPP carrier as otpd's Channel, against the simulator: submits, multi-part
//! messages, receipts in either id base, receipts that overtake their response,
//! unmatched receipts, no live bind, and refusals.

use std::sync::atomic::Ordering;
use std::time::Duration;

use otpd_adapters::smpp::carrier::{CarrierConfig, SmppCarrier};
use otpd_adapters::smpp::pdu::Address;
use otpd_adapters::smpp::receipt::MessageState;
use otpd_adapters::smpp::session::BindConfig;
use otpd_adapters::{
    Channel, ChannelError, ChannelKind, DeliveryReport, Message, MessageText, ReportState,
};
use otpd_simulators::smsc::{Fault, IdFormat, ReceiptPolicy, Smsc, SmscConfig};

fn carrier_config(name: &str, address: String) -> CarrierConfig {
    CarrierConfig {
        name: name.into(),
        bind: BindConfig {
            address,
            system_id: "otpd".into(),
            password: "secret".into(),
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(50),
            ..BindConfig::default()
        },
        binds: 2,
        pair: false,
        source: Address {
            ton: 5,
            npi: 0,
            addr: "Clave".into(),
        },
        registered_delivery: 1,
        submit_timeout: Duration::from_secs(10),
        unmatched_grace: Duration::from_millis(200),
        encoding: Default::default(),
        receipt_ids: Default::default(),
        validity: Default::default(),
        receipt_wait: Duration::from_secs(900),
        tls: None,
    }
}

fn message(id: &str, text: &str) -> Message {
    Message {
        verification_id: id.into(),
        send: 1,
        to: "+34600123456".into(),
        kind: ChannelKind::Sms,
        locale: "es",
        purpose: "login".into(),
        text: MessageText::new(text.into()),
        expires_at_ms: 0,
    }
}

async fn started(name: &str, smsc: &Smsc) -> SmppCarrier {
    let carrier = SmppCarrier::start(carrier_config(name, smsc.addr().to_string()));
    assert!(carrier.wait_bound(Duration::from_secs(10)).await);
    carrier
}

async fn next_report(rx: &mut tokio::sync::mpsc::Receiver<DeliveryReport>) -> DeliveryReport {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a report in time")
        .expect("open")
}

#[tokio::test]
async fn a_submit_is_reported_delivered_with_its_verification() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let carrier = started("movistar", &smsc).await;
    let mut reports = carrier.take_reports().unwrap();
    let receipt = carrier
        .submit(&message("vf_1", "123456 is your code"))
        .await
        .unwrap();
    let id = &smsc.received()[0].message_id;
    assert_eq!(receipt.reference, format!("movistar:{id}"));
    let report = next_report(&mut reports).await;
    assert_eq!(report.reference, receipt.reference);
    assert_eq!((report.verification_id.as_str(), report.send), ("vf_1", 1));
    assert_eq!(report.state, ReportState::Delivered);
    assert_eq!(smsc.received()[0].destination.addr, "34600123456");
    assert_eq!(smsc.received()[0].source.addr, "Clave");
    carrier.shutdown().await;
}

#[tokio::test]
async fn a_long_message_goes_in_parts_and_is_reported_once() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let carrier = started("c", &smsc).await;
    let mut reports = carrier.take_reports().unwrap();
    let text = "042317 es tu código de verificación. Caduca en 10 min. No lo compartas con nadie.";
    carrier.submit(&message("vf_2", text)).await.unwrap();
    let parts = smsc.received();
    assert_eq!(parts.len(), 2, "UCS-2, over 70 characters");
    assert!(
        parts
            .iter()
            .all(|p| p.data_coding == 0x08 && p.esm_class == 0x40)
    );
    let report = next_report(&mut reports).await;
    assert_eq!(report.state, ReportState::Delivered);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), reports.recv())
            .await
            .is_err(),
        "one report per message"
    );
}

#[tokio::test]
async fn one_failed_part_fails_the_message() {
    let smsc = Smsc::start(SmscConfig {
        receipts: ReceiptPolicy {
            outcomes: vec![
                (MessageState::Delivered, 1),
                (MessageState::Undeliverable, 1),
            ],
            ..ReceiptPolicy::default()
        },
        seed: 3,
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let carrier = started("c", &smsc).await;
    let mut reports = carrier.take_reports().unwrap();
    let mut states = Vec::new();
    for n in 0..8 {
        carrier
            .submit(&message(&format!("vf_{n}"), &"ó".repeat(100)))
            .await
            .unwrap();
    }
    for _ in 0..8 {
        states.push(next_report(&mut reports).await.state);
    }
    // 2 parts each, half the receipts undeliverable: most messages fail, and none is
    // reported delivered unless both its parts were.
    assert!(states.contains(&ReportState::Undeliverable));
    assert_eq!(smsc.stats().receipts_sent.load(Ordering::Relaxed), 16);
}

/// The carrier habit that left every id with a letter unmatched: ids answered in
/// zero-padded hexadecimal, receipted in decimal, 40 messages awaiting their
/// receipts at once, so that `10` in a receipt reads as both `0000000A` and
/// `00000010`. Every message gets its own report; no receipt is left over.
#[tokio::test]
async fn receipts_in_the_other_base_still_match() {
    let smsc = Smsc::start(SmscConfig {
        message_ids: IdFormat::Hex,
        receipts: ReceiptPolicy {
            id_format: IdFormat::Decimal,
            tlvs: false,
            delay: Duration::from_millis(300),
            ..ReceiptPolicy::default()
        },
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let mut config = carrier_config("c", smsc.addr().to_string());
    config.unmatched_grace = Duration::from_secs(5);
    let carrier = SmppCarrier::start(config);
    assert!(carrier.wait_bound(Duration::from_secs(10)).await);
    let mut reports = carrier.take_reports().unwrap();
    let messages: Vec<Message> = (0..40)
        .map(|n| message(&format!("vf_{n}"), "123456"))
        .collect();
    let submits = futures_util::future::join_all(messages.iter().map(|m| carrier.submit(m))).await;
    assert!(submits.iter().all(Result::is_ok), "{submits:?}");
    assert!(
        smsc.received().iter().any(|r| r.message_id.contains('A')),
        "some ids hold a letter"
    );
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..40 {
        let r = next_report(&mut reports).await;
        assert_eq!(r.state, ReportState::Delivered);
        seen.push(r.verification_id);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 40);
    assert_eq!(carrier.stats().receipts_matched.load(Ordering::Relaxed), 40);
    assert_eq!(
        carrier.stats().receipts_unmatched.load(Ordering::Relaxed),
        0
    );
}

/// Every submit_sm carries the code's expiry as its validity_period (relative by
/// default, absolute when asked), read back at the SMSC.
#[tokio::test]
async fn every_submit_carries_the_codes_validity() {
    use otpd_adapters::smpp::validity::{self, ValidityForm};
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    for form in [
        ValidityForm::Relative,
        ValidityForm::Absolute,
        ValidityForm::Omitted,
    ] {
        let mut config = carrier_config("c", smsc.addr().to_string());
        config.validity = form;
        let carrier = SmppCarrier::start(config);
        assert!(carrier.wait_bound(Duration::from_secs(10)).await);
        let mut m = message(
            "vf_1",
            "123456 es tu código; caduca en 10 minutos, no lo compartas con nadie, nunca te lo pediremos",
        );
        m.expires_at_ms = now_ms() + 600_000;
        let before = smsc.received().len();
        carrier.submit(&m).await.unwrap();
        let sent = smsc.received();
        let parts = &sent[before..];
        assert_eq!(parts.len(), 2, "a long text goes in two parts");
        for part in parts {
            let value = &part.validity_period;
            if form == ValidityForm::Omitted {
                assert_eq!(value, "", "{form:?}");
                continue;
            }
            assert_eq!(value.len(), 16, "{value:?}");
            assert_eq!(
                value.ends_with('R'),
                form == ValidityForm::Relative,
                "{value:?}"
            );
            let left = validity::parse(value, now_ms()).expect("a valid SMPP time");
            assert!(
                left <= Duration::from_secs(600) && left >= Duration::from_secs(590),
                "{form:?}: {value:?} leaves {left:?}"
            );
        }
        carrier.shutdown().await;
    }
}

#[tokio::test]
async fn a_receipt_that_overtakes_its_response_still_lands() {
    // Responses take 150 ms, receipts come at once: every receipt arrives first.
    let smsc = Smsc::start(SmscConfig {
        latency: (Duration::from_millis(150), Duration::from_millis(150)),
        receipts: ReceiptPolicy {
            delay: Duration::ZERO,
            ..ReceiptPolicy::default()
        },
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let mut config = carrier_config("c", smsc.addr().to_string());
    config.unmatched_grace = Duration::from_secs(5);
    let carrier = SmppCarrier::start(config);
    assert!(carrier.wait_bound(Duration::from_secs(10)).await);
    let mut reports = carrier.take_reports().unwrap();
    carrier
        .submit(&message("vf_early", "123456"))
        .await
        .unwrap();
    let report = next_report(&mut reports).await;
    assert_eq!(report.verification_id, "vf_early");
    assert_eq!(
        carrier.stats().receipts_unmatched.load(Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn receipts_for_nobody_are_counted() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    // The simulator sends an account's receipts to its first receiving bind: start the
    // bystander first, so the sender's receipts reach it and match nothing there.
    let mut bystander_config = carrier_config("bystander", smsc.addr().to_string());
    bystander_config.binds = 1;
    let bystander = SmppCarrier::start(bystander_config);
    assert!(bystander.wait_bound(Duration::from_secs(10)).await);
    let sender = started("sender", &smsc).await;
    sender.submit(&message("vf_x", "123456")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bystander.stats().receipts_unmatched.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stray receipt was not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn no_live_bind_is_a_temporary_error_at_once() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = dead.local_addr().unwrap().to_string();
    drop(dead);
    let carrier = SmppCarrier::start(carrier_config("down", address));
    let err = carrier
        .submit(&message("vf_1", "123456"))
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(err.to_string().contains("no live bind"), "{err}");
    assert!(!carrier.is_healthy());
}

#[tokio::test]
async fn a_refused_destination_is_rejected_with_the_status_name() {
    let smsc = Smsc::start(SmscConfig {
        script: vec![Fault::Status(0x0B)],
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let carrier = started("c", &smsc).await;
    let err = carrier
        .submit(&message("vf_1", "123456"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ChannelError::Rejected { reason } if reason.contains("ESME_RINVDSTADR")),
        "{err}"
    );
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn the_carriers_encoding_policy_is_applied() {
    use otpd_adapters::smpp::encoding::{Policy, Preferred, unpack_septets};
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let with = |name: &str, policy: Policy| {
        let mut config = carrier_config(name, smsc.addr().to_string());
        config.binds = 1;
        config.encoding = policy;
        SmppCarrier::start(config)
    };
    let latin = with(
        "latin",
        Policy {
            preferred: Preferred::Latin1,
            gsm7_packed: false,
        },
    );
    let packed = with(
        "packed",
        Policy {
            preferred: Preferred::Gsm7,
            gsm7_packed: true,
        },
    );
    assert!(latin.wait_bound(Duration::from_secs(10)).await);
    assert!(packed.wait_bound(Duration::from_secs(10)).await);

    latin
        .submit(&message("vf_1", "123456 es tu código"))
        .await
        .unwrap();
    let received = smsc.received();
    assert_eq!(received[0].data_coding, 0x03);
    assert_eq!(
        received[0].body,
        "123456 es tu código"
            .chars()
            .map(|c| c as u32 as u8)
            .collect::<Vec<_>>()
    );

    packed
        .submit(&message("vf_2", "123456 is your code"))
        .await
        .unwrap();
    let received = smsc.received();
    assert_eq!(received[1].data_coding, 0x00);
    assert_eq!(
        received[1].body.len(),
        (19 * 7usize).div_ceil(8),
        "19 septets packed"
    );
    assert_eq!(unpack_septets(&received[1].body, 0, 6), b"123456".to_vec());
}

#[tokio::test]
async fn a_transmitter_receiver_pair_submits_on_one_link_and_takes_receipts_on_the_other() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let mut config = carrier_config("pair", smsc.addr().to_string());
    config.binds = 1;
    config.pair = true;
    let carrier = SmppCarrier::start(config);
    assert!(carrier.wait_bound(Duration::from_secs(10)).await);
    assert_eq!(carrier.binds().len(), 2);
    let mut reports = carrier.take_reports().unwrap();
    for n in 0..4 {
        carrier
            .submit(&message(&format!("vf_{n}"), "123456"))
            .await
            .unwrap();
    }
    for _ in 0..4 {
        assert_eq!(
            next_report(&mut reports).await.state,
            ReportState::Delivered
        );
    }
    use otpd_adapters::smpp::session::BindMode;
    let submitted: Vec<u64> = carrier
        .binds()
        .iter()
        .map(|(mode, b)| {
            assert!(matches!(mode, BindMode::Transmitter | BindMode::Receiver));
            b.stats().submits.load(Ordering::Relaxed)
        })
        .collect();
    assert_eq!(
        submitted,
        vec![4, 0],
        "the transmitter submits, the receiver only receives"
    );
    carrier.shutdown().await;
    assert_eq!(
        smsc.stats().unbinds.load(Ordering::Relaxed),
        2,
        "both halves unbind"
    );
}

/// Two nodes bound to one account: the SMSC sends every receipt to the first bind,
/// so the node that submitted never sees its receipts. Through the shared directory
/// the other node finds whose they are, whole messages and multi-part ones alike.
#[tokio::test]
async fn a_receipt_reaching_another_node_finds_its_message_in_the_directory() {
    use otpd_adapters::smpp::directory::{MemoryDirectory, MessageDirectory};
    use std::sync::Arc;

    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let directory: Arc<dyn MessageDirectory> = Arc::new(MemoryDirectory::new());
    let config = |name: &str| CarrierConfig {
        binds: 1,
        unmatched_grace: Duration::from_secs(3),
        ..carrier_config(name, smsc.addr().to_string())
    };
    // The receiving node binds first: the simulator sends receipts to it.
    let receiving = SmppCarrier::start_shared(config("movistar"), directory.clone());
    assert!(receiving.wait_bound(Duration::from_secs(10)).await);
    let sending = SmppCarrier::start_shared(config("movistar"), directory.clone());
    assert!(sending.wait_bound(Duration::from_secs(10)).await);
    let mut here = receiving.take_reports().unwrap();
    let mut there = sending.take_reports().unwrap();

    let short = sending
        .submit(&message("vf_short", "123456 is your code"))
        .await
        .unwrap();
    let long = "042317 es tu código de verificación. Caduca en 10 min. No lo compartas con nadie.";
    let long = sending.submit(&message("vf_long", long)).await.unwrap();
    assert_eq!(smsc.received().len(), 3, "one part and two parts");

    let mut reports = [next_report(&mut here).await, next_report(&mut here).await];
    reports.sort_by(|a, b| a.verification_id.cmp(&b.verification_id));
    assert_eq!(reports[0].verification_id, "vf_long");
    assert_eq!(reports[0].reference, long.reference);
    assert_eq!(reports[1].verification_id, "vf_short");
    assert_eq!(reports[1].reference, short.reference);
    assert!(reports.iter().all(|r| r.state == ReportState::Delivered));
    // Once for the two-part message, not once per part; nothing left unmatched.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(here.try_recv().is_err());
    assert!(
        there.try_recv().is_err(),
        "the sender never saw the receipts"
    );
    assert_eq!(
        receiving.stats().receipts_unmatched.load(Ordering::Relaxed),
        0
    );
    receiving.shutdown().await;
    sending.shutdown().await;
}

/// Without a directory such a receipt is counted as unmatched, as before.
#[tokio::test]
async fn without_a_directory_another_nodes_receipt_is_unmatched() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let config = |name: &str| CarrierConfig {
        binds: 1,
        ..carrier_config(name, smsc.addr().to_string())
    };
    let receiving = SmppCarrier::start(config("movistar"));
    assert!(receiving.wait_bound(Duration::from_secs(10)).await);
    let sending = SmppCarrier::start(config("movistar"));
    assert!(sending.wait_bound(Duration::from_secs(10)).await);
    sending
        .submit(&message("vf_1", "123456 is your code"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiving.stats().receipts_unmatched.load(Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiving.shutdown().await;
    sending.shutdown().await;
}

/// A SMSC that stops answering: the carrier gives its messages up soon after the
/// bind is lost (not at `submit_timeout`), so that they can go elsewhere, and the bind
/// does not send them later when the SMSC is back.
#[tokio::test]
async fn a_hung_smsc_gives_its_messages_up_for_failover_and_never_sends_them_later() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let mut config = carrier_config("hangs", smsc.addr().to_string());
    config.bind.response_timeout = Duration::from_millis(200);
    config.submit_timeout = Duration::from_secs(30);
    let carrier = SmppCarrier::start(config);
    assert!(carrier.wait_bound(Duration::from_secs(10)).await);
    smsc.set_hung(true);
    let started = std::time::Instant::now();
    let err = carrier
        .submit(&message("vf_hung", "123456 es tu codigo"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, ChannelError::Temporary { reason, .. } if reason.contains("not bound again")),
        "{err:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "given up after {took:?}, not at the 30 s submit timeout"
    );
    // The SMSC answers again: the bind comes back, and the message given up is not
    // sent behind the caller's back.
    smsc.set_hung(false);
    assert!(carrier.wait_bound(Duration::from_secs(10)).await);
    carrier
        .submit(&message("vf_after", "654321 es tu codigo"))
        .await
        .unwrap();
    let bodies: Vec<Vec<u8>> = smsc.received().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, vec![b"654321 es tu codigo".to_vec()]);
}

/// A message whose final receipt never comes is not left awaiting it for ever: past
/// the code's expiry and `receipt_wait`, it is reported unconfirmed, once.
#[tokio::test]
async fn a_message_whose_receipt_never_comes_is_reported_unconfirmed() {
    let smsc = Smsc::start(SmscConfig {
        receipts: ReceiptPolicy {
            delay: Duration::from_secs(3600),
            ..ReceiptPolicy::default()
        },
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let mut config = carrier_config("c", smsc.addr().to_string());
    config.receipt_wait = Duration::from_millis(300);
    let carrier = SmppCarrier::start(config);
    assert!(carrier.wait_bound(Duration::from_secs(10)).await);
    let mut reports = carrier.take_reports().unwrap();
    let mut m = message("vf_lost", "123456");
    m.expires_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 200;
    let submitted = carrier.submit(&m).await.unwrap();
    let r = next_report(&mut reports).await;
    assert_eq!(r.state, ReportState::Unconfirmed);
    assert_eq!(r.verification_id, "vf_lost");
    assert_eq!(r.reference, submitted.reference);
    assert_eq!(carrier.stats().receipts_missing.load(Ordering::Relaxed), 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), reports.recv())
            .await
            .is_err(),
        "reported once"
    );
    carrier.shutdown().await;
}
