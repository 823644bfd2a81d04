//! The SMSC simulator over TCP, driven by a bare rusmpp client: binds, submits,
//! receipts, faults, throttling, keepalive, unbind, and garbage.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use otpd_adapters::smpp::pdu::{self, Address, SubmitOptions};
use otpd_adapters::smpp::receipt::MessageState;
use otpd_simulators::smsc::{Account, Fault, IdFormat, ReceiptPolicy, Smsc, SmscConfig};
use rusmpp::pdus::{BindTransceiver, BindTransmitter, DeliverSmResp};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::COctetString;
use rusmpp::values::InterfaceVersion;
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

type Client = Framed<TcpStream, CommandCodec>;

fn c<const MAX: usize>(s: &str) -> COctetString<1, MAX> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    COctetString::from_vec(v).unwrap()
}

async fn connect(smsc: &Smsc) -> Client {
    Framed::new(
        TcpStream::connect(smsc.addr()).await.unwrap(),
        CommandCodec::new(),
    )
}

async fn next(client: &mut Client) -> Command {
    tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("an answer in time")
        .expect("connection open")
        .expect("a valid PDU")
}

async fn bind(client: &mut Client, system_id: &str, password: &str) -> CommandStatus {
    let bind = BindTransceiver::builder()
        .system_id(c(system_id))
        .password(c(password))
        .interface_version(InterfaceVersion::Smpp3_4)
        .build();
    client
        .send(Command::new(CommandStatus::EsmeRok, 1, bind))
        .await
        .unwrap();
    let resp = next(client).await;
    assert!(
        matches!(resp.pdu(), Some(Pdu::BindTransceiverResp(_))),
        "{resp:?}"
    );
    resp.status()
}

async fn submit(client: &mut Client, seq: u32, registered_delivery: u8) {
    let submit = pdu::submit_sm(
        &Address {
            ton: 5,
            npi: 0,
            addr: "otpd".into(),
        },
        &Address::international("+34600123456"),
        b"123456 es tu codigo",
        SubmitOptions {
            data_coding: 0,
            registered_delivery,
            esm_class: 0,
            validity_period: None,
        },
    )
    .unwrap();
    client
        .send(Command::new(CommandStatus::EsmeRok, seq, submit))
        .await
        .unwrap();
}

fn message_id(command: &Command) -> String {
    match command.pdu() {
        Some(Pdu::SubmitSmResp(r)) => r.message_id().as_str().to_string(),
        other => panic!("not a submit_sm_resp: {other:?}"),
    }
}

fn accounts() -> SmscConfig {
    SmscConfig {
        accounts: vec![Account {
            system_id: "otpd".into(),
            password: "secret".into(),
        }],
        ..SmscConfig::default()
    }
}

#[tokio::test]
async fn binds_check_credentials() {
    let smsc = Smsc::start(accounts()).await.unwrap();
    let mut ok = connect(&smsc).await;
    assert_eq!(
        bind(&mut ok, "otpd", "secret").await,
        CommandStatus::EsmeRok
    );
    let mut again = ok;
    assert_eq!(
        bind(&mut again, "otpd", "secret").await,
        CommandStatus::EsmeRalybnd
    );
    let mut bad = connect(&smsc).await;
    assert_eq!(
        bind(&mut bad, "otpd", "wrong").await,
        CommandStatus::EsmeRinvpaswd
    );
    let mut unknown = connect(&smsc).await;
    assert_eq!(
        bind(&mut unknown, "nobody", "secret").await,
        CommandStatus::EsmeRinvsysid
    );
}

#[tokio::test]
async fn submits_are_accepted_recorded_and_receipted() {
    let smsc = Smsc::start(SmscConfig {
        message_ids: IdFormat::Hex,
        receipts: ReceiptPolicy {
            id_format: IdFormat::Decimal,
            tlvs: false,
            ..ReceiptPolicy::default()
        },
        ..accounts()
    })
    .await
    .unwrap();
    let mut client = connect(&smsc).await;
    bind(&mut client, "otpd", "secret").await;
    submit(&mut client, 2, 1).await;
    let resp = next(&mut client).await;
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
    assert_eq!(resp.sequence_number(), 2);
    let id = message_id(&resp);
    assert_eq!(id, "00000001", "hex, zero-padded");

    let received = smsc.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].destination.addr, "34600123456");
    assert_eq!(received[0].source.ton, 5);
    assert_eq!(received[0].esm_class, 0);
    assert_eq!(received[0].body, b"123456 es tu codigo");

    let deliver = next(&mut client).await;
    let Some(Pdu::DeliverSm(d)) = deliver.pdu() else {
        panic!("{deliver:?}")
    };
    let receipt = pdu::receipt_of(d).unwrap().unwrap();
    assert_eq!(
        receipt.message_id, "1",
        "decimal in the receipt, text form only"
    );
    assert_eq!(receipt.state, MessageState::Delivered);
    client
        .send(Command::new(
            CommandStatus::EsmeRok,
            deliver.sequence_number(),
            DeliverSmResp::default(),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn receipt_outcomes_follow_the_mix_and_carry_tlvs() {
    let smsc = Smsc::start(SmscConfig {
        receipts: ReceiptPolicy {
            outcomes: vec![(MessageState::Undeliverable, 1)],
            ..ReceiptPolicy::default()
        },
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let mut client = connect(&smsc).await;
    bind(&mut client, "any", "any").await;
    submit(&mut client, 2, 1).await;
    let id = message_id(&next(&mut client).await);
    let deliver = next(&mut client).await;
    let Some(Pdu::DeliverSm(d)) = deliver.pdu() else {
        panic!("{deliver:?}")
    };
    let receipt = pdu::receipt_of(d).unwrap().unwrap();
    assert_eq!(receipt.message_id, id);
    assert_eq!(receipt.state, MessageState::Undeliverable);
    assert_eq!(receipt.error.as_deref(), Some("3:34"));
}

#[tokio::test]
async fn no_receipt_unless_asked() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let mut client = connect(&smsc).await;
    bind(&mut client, "any", "any").await;
    submit(&mut client, 2, 0).await;
    next(&mut client).await;
    // A keepalive round trip after the receipt delay: nothing came before its answer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    client
        .send(Command::new(CommandStatus::EsmeRok, 3, Pdu::EnquireLink))
        .await
        .unwrap();
    let answer = next(&mut client).await;
    assert!(
        matches!(answer.pdu(), Some(Pdu::EnquireLinkResp)),
        "{answer:?}"
    );
    assert_eq!(
        smsc.stats()
            .receipts_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn scripted_faults_apply_in_order() {
    let smsc = Smsc::start(SmscConfig {
        script: vec![Fault::Status(0x58), Fault::Status(0x0B), Fault::None],
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let mut client = connect(&smsc).await;
    bind(&mut client, "any", "any").await;
    for seq in 2..=4 {
        submit(&mut client, seq, 0).await;
    }
    let statuses: Vec<(u32, CommandStatus)> = vec![
        next(&mut client).await,
        next(&mut client).await,
        next(&mut client).await,
    ]
    .into_iter()
    .map(|c| (c.sequence_number(), c.status()))
    .collect();
    assert_eq!(
        statuses,
        vec![
            (2, CommandStatus::EsmeRthrottled),
            (3, CommandStatus::EsmeRinvdstadr),
            (4, CommandStatus::EsmeRok)
        ]
    );
    assert_eq!(smsc.received().len(), 1);
}

#[tokio::test]
async fn a_dropped_connection_closes_without_an_answer() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    smsc.inject([Fault::Drop]);
    let mut client = connect(&smsc).await;
    bind(&mut client, "any", "any").await;
    submit(&mut client, 2, 0).await;
    let end = tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .unwrap();
    assert!(end.is_none(), "closed, got {end:?}");
    assert!(smsc.received().is_empty());
}

#[tokio::test]
async fn silence_means_no_answer_but_the_link_lives() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    smsc.inject([Fault::Silence]);
    let mut client = connect(&smsc).await;
    bind(&mut client, "any", "any").await;
    submit(&mut client, 2, 0).await;
    client
        .send(Command::new(CommandStatus::EsmeRok, 3, Pdu::EnquireLink))
        .await
        .unwrap();
    // The first answer is the keepalive's: the submit got none.
    let answer = next(&mut client).await;
    assert_eq!(answer.sequence_number(), 3);
}

#[tokio::test]
async fn submits_over_the_bind_tps_are_throttled() {
    let smsc = Smsc::start(SmscConfig {
        tps_per_bind: Some(5),
        ..SmscConfig::default()
    })
    .await
    .unwrap();
    let mut client = connect(&smsc).await;
    bind(&mut client, "any", "any").await;
    for seq in 2..10 {
        submit(&mut client, seq, 0).await;
    }
    let mut throttled = 0;
    for _ in 2..10 {
        if next(&mut client).await.status() == CommandStatus::EsmeRthrottled {
            throttled += 1;
        }
    }
    assert_eq!(throttled, 3);
}

#[tokio::test]
async fn transmitter_binds_submit_and_receipts_go_to_a_receiver_of_the_account() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let mut tx = transmitter(&smsc).await;
    let mut rx = receiver(&smsc).await;

    submit(&mut tx, 2, 1).await;
    let id = message_id(&next(&mut tx).await);
    let deliver = next(&mut rx).await;
    let Some(Pdu::DeliverSm(d)) = deliver.pdu() else {
        panic!("{deliver:?}")
    };
    assert_eq!(pdu::receipt_of(d).unwrap().unwrap().message_id, id);
}

#[tokio::test]
async fn unbind_is_answered_then_the_link_closes() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let mut client = connect(&smsc).await;
    bind(&mut client, "any", "any").await;
    client
        .send(Command::new(CommandStatus::EsmeRok, 5, Pdu::Unbind))
        .await
        .unwrap();
    let answer = next(&mut client).await;
    assert!(matches!(answer.pdu(), Some(Pdu::UnbindResp)));
    assert!(
        tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn submitting_before_binding_is_refused() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let mut client = connect(&smsc).await;
    submit(&mut client, 1, 0).await;
    assert_eq!(
        next(&mut client).await.status(),
        CommandStatus::EsmeRinvbndsts
    );
}

#[tokio::test]
async fn garbage_gets_a_generic_nack_and_the_link_closes() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let mut raw = TcpStream::connect(smsc.addr()).await.unwrap();
    // A whole header whose command_length (0x7FFFFFFF) is far over any maximum.
    raw.write_all(&[0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1])
        .await
        .unwrap();
    let mut client = Framed::new(raw, CommandCodec::new());
    let nack = next(&mut client).await;
    assert!(matches!(nack.pdu(), Some(Pdu::GenericNack)), "{nack:?}");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_unknown_command_gets_a_generic_nack_and_the_link_stays() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let mut raw = TcpStream::connect(smsc.addr()).await.unwrap();
    // A well-framed PDU with a command_id SMPP does not define.
    raw.write_all(&[0, 0, 0, 16, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 9])
        .await
        .unwrap();
    let mut client = Framed::new(raw, CommandCodec::new());
    let nack = next(&mut client).await;
    assert!(matches!(nack.pdu(), Some(Pdu::GenericNack)), "{nack:?}");
    assert_eq!(nack.status(), CommandStatus::EsmeRinvcmdid);
    assert_eq!(nack.sequence_number(), 9);
    client
        .send(Command::new(CommandStatus::EsmeRok, 10, Pdu::EnquireLink))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut client).await.pdu(),
        Some(Pdu::EnquireLinkResp)
    ));
}

#[tokio::test]
async fn a_tap_sees_every_message_and_keep_bounds_what_is_kept() {
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let tap = {
        let seen = seen.clone();
        otpd_simulators::smsc::Tap(std::sync::Arc::new(move |r| {
            seen.lock()
                .push((r.destination.addr.clone(), r.body.clone()))
        }))
    };
    let smsc = Smsc::start(SmscConfig {
        keep: 1,
        tap: Some(tap),
        ..accounts()
    })
    .await
    .unwrap();
    let mut client = connect(&smsc).await;
    bind(&mut client, "otpd", "secret").await;
    for seq in 2..5 {
        submit(&mut client, seq, 0).await;
        assert_eq!(next(&mut client).await.status(), CommandStatus::EsmeRok);
    }
    assert_eq!(smsc.received().len(), 1, "only `keep` messages are kept");
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 3, "the tap saw every accepted message");
    assert!(
        seen.iter()
            .all(|(to, body)| to == "34600123456" && body == b"123456 es tu codigo")
    );
}

#[tokio::test]
async fn a_hung_smsc_reads_but_answers_nothing_until_it_resumes() {
    let smsc = Smsc::start(accounts()).await.unwrap();
    let mut client = connect(&smsc).await;
    bind(&mut client, "otpd", "secret").await;
    smsc.set_hung(true);
    submit(&mut client, 2, 1).await;
    client
        .send(Command::new(CommandStatus::EsmeRok, 3, Pdu::EnquireLink))
        .await
        .unwrap();
    let silent = tokio::time::timeout(Duration::from_millis(300), client.next()).await;
    assert!(silent.is_err(), "a hung SMSC answered: {silent:?}");
    assert_eq!(
        smsc.stats()
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // A fresh connection is accepted but its bind is not answered either.
    let mut other = connect(&smsc).await;
    let bind_pdu = BindTransceiver::builder()
        .system_id(c("otpd"))
        .password(c("secret"))
        .interface_version(InterfaceVersion::Smpp3_4)
        .build();
    other
        .send(Command::new(CommandStatus::EsmeRok, 1, bind_pdu))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), other.next())
            .await
            .is_err()
    );
    smsc.set_hung(false);
    submit(&mut client, 4, 0).await;
    let resp = next(&mut client).await;
    assert_eq!(resp.sequence_number(), 4);
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
}

/// Bind as `bind` (a bind PDU of account `acct`), checked accepted.
async fn bound(smsc: &Smsc, bind: impl Into<Pdu>) -> Client {
    let mut client = connect(smsc).await;
    client
        .send(Command::new(CommandStatus::EsmeRok, 1, bind.into()))
        .await
        .unwrap();
    assert_eq!(next(&mut client).await.status(), CommandStatus::EsmeRok);
    client
}

/// Bind a transmitter of account `acct`.
async fn transmitter(smsc: &Smsc) -> Client {
    let bind = BindTransmitter::builder()
        .system_id(c("acct"))
        .password(c("pw"))
        .interface_version(InterfaceVersion::Smpp3_4)
        .build();
    bound(smsc, bind).await
}

/// Bind a receiver of account `acct`.
async fn receiver(smsc: &Smsc) -> Client {
    let bind = rusmpp::pdus::BindReceiver::builder()
        .system_id(c("acct"))
        .password(c("pw"))
        .interface_version(InterfaceVersion::Smpp3_4)
        .build();
    bound(smsc, bind).await
}

/// As a real SMSC: a receipt is kept until its deliver_sm_resp. The first receiver
/// takes it and drops its link without answering; the receipt goes again to the
/// other receiver of the account, which acknowledges it; it goes no third time.
/// With no receiver bound, a receipt waits for one.
#[tokio::test]
async fn an_unacknowledged_receipt_goes_again_on_another_bind() {
    let smsc = Smsc::start(SmscConfig::default()).await.unwrap();
    let mut tx = transmitter(&smsc).await;
    let mut first = receiver(&smsc).await;
    let mut second = receiver(&smsc).await;

    submit(&mut tx, 2, 1).await;
    let id = message_id(&next(&mut tx).await);
    let deliver = next(&mut first).await;
    assert!(
        matches!(deliver.pdu(), Some(Pdu::DeliverSm(_))),
        "{deliver:?}"
    );
    drop(first);
    let again = next(&mut second).await;
    let Some(Pdu::DeliverSm(d)) = again.pdu() else {
        panic!("{again:?}")
    };
    assert_eq!(pdu::receipt_of(d).unwrap().unwrap().message_id, id);
    second
        .send(Command::new(
            CommandStatus::EsmeRok,
            again.sequence_number(),
            DeliverSmResp::builder().build(),
        ))
        .await
        .unwrap();
    assert_eq!(
        smsc.stats()
            .receipts_redelivered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Acknowledged: dropping this link sends it nowhere.
    drop(second);
    let mut third = receiver(&smsc).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.next())
            .await
            .is_err(),
        "an acknowledged receipt is not sent again"
    );
    drop(third);

    // No receiver at all: the receipt waits for one to bind.
    submit(&mut tx, 3, 1).await;
    let id = message_id(&next(&mut tx).await);
    let mut late = receiver(&smsc).await;
    let deliver = next(&mut late).await;
    let Some(Pdu::DeliverSm(d)) = deliver.pdu() else {
        panic!("{deliver:?}")
    };
    assert_eq!(pdu::receipt_of(d).unwrap().unwrap().message_id, id);
}
