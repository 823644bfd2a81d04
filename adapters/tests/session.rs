//! A bind against the SMSC simulator over TCP: submits and receipts, the window,
//! throttling, transient and permanent errors, response timeouts, dropped links,
//! bad credentials, keepalive and a graceful unbind.

use std::sync::atomic::Ordering;
use std::time::Duration;

use otpd_adapters::smpp::pdu::{self, Address, SubmitOptions};
use otpd_adapters::smpp::receipt::MessageState;
use otpd_adapters::smpp::session::{Bind, BindConfig, BindState, ReceiptEvent, SubmitError};
use otpd_adapters::smpp::status::CommandStatus;
use otpd_simulators::smsc::{Account, Fault, Smsc, SmscConfig};
use rusmpp::pdus::SubmitSm;
use tokio::sync::mpsc;

fn message(n: u32) -> SubmitSm {
    pdu::submit_sm(
        &Address {
            ton: 5,
            npi: 0,
            addr: "otpd".into(),
        },
        &Address::international(&format!("+3460000{n:04}")),
        format!("{n:06} es tu codigo").as_bytes(),
        SubmitOptions {
            data_coding: 0,
            registered_delivery: 1,
            esm_class: 0,
            validity_period: None,
        },
    )
    .unwrap()
}

fn config(smsc: &Smsc) -> BindConfig {
    BindConfig {
        address: smsc.addr().to_string(),
        system_id: "otpd".into(),
        password: "secret".into(),
        response_timeout: Duration::from_secs(5),
        reconnect_min: Duration::from_millis(10),
        reconnect_max: Duration::from_millis(100),
        throttle_pause: Duration::from_millis(5),
        ..BindConfig::default()
    }
}

async fn start(
    smsc: &Smsc,
    tweak: impl FnOnce(&mut BindConfig),
) -> (Bind, mpsc::Receiver<ReceiptEvent>) {
    let mut c = config(smsc);
    tweak(&mut c);
    let (tx, rx) = mpsc::channel(1024);
    let bind = Bind::start(c, tx);
    assert!(
        bind.wait_for(BindState::Bound, Duration::from_secs(10))
            .await,
        "bound"
    );
    (bind, rx)
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
async fn a_submit_gets_its_message_id_and_its_receipt() {
    let smsc = Smsc::start(accounts()).await.unwrap();
    let (bind, mut receipts) = start(&smsc, |_| {}).await;
    let id = bind.submit(message(1)).await.unwrap();
    assert_eq!(smsc.received()[0].message_id, id);
    let receipt = tokio::time::timeout(Duration::from_secs(10), receipts.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(receipt.message_id, id);
    assert_eq!(receipt.state, MessageState::Delivered);
    bind.shutdown().await;
    assert_eq!(bind.state(), BindState::Closed);
    assert_eq!(
        smsc.stats().unbinds.load(Ordering::Relaxed),
        1,
        "a graceful unbind"
    );
}

#[tokio::test]
async fn the_window_is_filled_but_never_exceeded() {
    let smsc = Smsc::start(SmscConfig {
        latency: (Duration::from_millis(20), Duration::from_millis(40)),
        ..accounts()
    })
    .await
    .unwrap();
    let (bind, _receipts) = start(&smsc, |c| c.window = 4).await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let bind = bind.clone();
        tasks.push(tokio::spawn(async move { bind.submit(message(n)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(bind.stats().max_in_flight.load(Ordering::Relaxed), 4);
    assert_eq!(smsc.received().len(), 40);
}

#[tokio::test]
async fn throttling_slows_down_and_the_message_still_goes() {
    let smsc = Smsc::start(SmscConfig {
        script: vec![
            Fault::Status(0x58),
            Fault::Status(0x14),
            Fault::Status(0x58),
        ],
        ..accounts()
    })
    .await
    .unwrap();
    let (bind, _receipts) = start(&smsc, |_| {}).await;
    let id = bind.submit(message(7)).await.unwrap();
    assert_eq!(bind.stats().throttled.load(Ordering::Relaxed), 3);
    assert_eq!(smsc.received().len(), 1, "sent once it was accepted");
    assert_eq!(smsc.received()[0].message_id, id);
}

#[tokio::test]
async fn transient_errors_are_retried_and_permanent_ones_fail_with_their_name() {
    let smsc = Smsc::start(SmscConfig {
        script: vec![Fault::Status(0x08), Fault::Status(0x0B)],
        ..accounts()
    })
    .await
    .unwrap();
    let (bind, _receipts) = start(&smsc, |_| {}).await;
    // ESME_RSYSERR, then the retry is refused as ESME_RINVDSTADR: final.
    let err = bind.submit(message(1)).await.unwrap_err();
    assert_eq!(err, SubmitError::Refused(CommandStatus(0x0B)));
    assert_eq!(
        err.to_string(),
        "the SMSC refused the message: ESME_RINVDSTADR"
    );
    assert!(!err.is_retriable());
    // Transient errors give up after max_attempts.
    smsc.inject([
        Fault::Status(0x08),
        Fault::Status(0x08),
        Fault::Status(0x08),
    ]);
    let err = bind.submit(message(2)).await.unwrap_err();
    assert_eq!(err, SubmitError::Refused(CommandStatus(0x08)));
    assert!(err.is_retriable());
    assert!(bind.submit(message(3)).await.is_ok());
}

#[tokio::test]
async fn an_unanswered_submit_kills_the_bind_and_is_sent_again() {
    let smsc = Smsc::start(SmscConfig {
        script: vec![Fault::Silence],
        ..accounts()
    })
    .await
    .unwrap();
    let (bind, _receipts) = start(&smsc, |c| c.response_timeout = Duration::from_millis(200)).await;
    let id = bind.submit(message(1)).await.unwrap();
    assert_eq!(bind.stats().resent.load(Ordering::Relaxed), 1);
    assert_eq!(bind.stats().connects.load(Ordering::Relaxed), 2);
    assert_eq!(smsc.stats().binds.load(Ordering::Relaxed), 2);
    assert_eq!(smsc.received().len(), 1);
    assert_eq!(smsc.received()[0].message_id, id);
}

#[tokio::test]
async fn a_link_dropped_mid_window_loses_nothing() {
    let smsc = Smsc::start(SmscConfig {
        latency: (Duration::from_millis(5), Duration::from_millis(10)),
        script: vec![Fault::None, Fault::None, Fault::None, Fault::Drop],
        ..accounts()
    })
    .await
    .unwrap();
    let (bind, _receipts) = start(&smsc, |c| c.window = 8).await;
    let mut tasks = Vec::new();
    for n in 0..8 {
        let bind = bind.clone();
        tasks.push(tokio::spawn(async move { bind.submit(message(n)).await }));
    }
    for t in tasks {
        t.await.unwrap().expect("every message goes through");
    }
    assert!(bind.stats().resent.load(Ordering::Relaxed) >= 1);
    assert_eq!(bind.stats().connects.load(Ordering::Relaxed), 2);
    // At least once: every destination reached the SMSC.
    let mut destinations: Vec<String> = smsc
        .received()
        .into_iter()
        .map(|r| r.destination.addr)
        .collect();
    destinations.sort();
    destinations.dedup();
    assert_eq!(destinations.len(), 8);
}

#[tokio::test]
async fn wrong_credentials_never_bind_and_submits_fail_at_shutdown() {
    let smsc = Smsc::start(accounts()).await.unwrap();
    let (tx, _rx) = mpsc::channel(16);
    let bind = Bind::start(
        BindConfig {
            password: "wrong".into(),
            ..config(&smsc)
        },
        tx,
    );
    assert!(
        !bind
            .wait_for(BindState::Bound, Duration::from_millis(300))
            .await
    );
    assert!(smsc.stats().bind_failures.load(Ordering::Relaxed) >= 1);
    let pending = {
        let bind = bind.clone();
        tokio::spawn(async move { bind.submit(message(1)).await })
    };
    tokio::task::yield_now().await;
    bind.shutdown().await;
    assert_eq!(pending.await.unwrap(), Err(SubmitError::Closed));
    assert_eq!(bind.state(), BindState::Closed);
}

#[tokio::test]
async fn an_idle_bind_sends_enquire_link() {
    let smsc = Smsc::start(accounts()).await.unwrap();
    let (bind, _receipts) = start(&smsc, |c| {
        c.enquire_link_interval = Duration::from_millis(30)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while smsc.stats().enquire_links.load(Ordering::Relaxed) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no keepalive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bind.state(), BindState::Bound);
    assert_eq!(
        bind.stats().connects.load(Ordering::Relaxed),
        1,
        "keepalives keep the same link"
    );
}

#[tokio::test]
async fn the_tps_cap_spaces_submits() {
    let smsc = Smsc::start(accounts()).await.unwrap();
    let (bind, _receipts) = start(&smsc, |c| c.tps = Some(50)).await;
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for n in 0..10 {
        let bind = bind.clone();
        tasks.push(tokio::spawn(async move { bind.submit(message(n)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // 10 submits at 50/s need at least 9 gaps of 20 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(170),
        "{:?}",
        started.elapsed()
    );
}
