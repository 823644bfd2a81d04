//! The bind's session over an in-memory pipe, on a paused clock: the test plays the
//! SMSC on the other end, PDU by PDU, and time moves only when every task waits —
//! so keepalives, response timeouts and throttling pauses are checked to the
//! millisecond, and no test sleeps.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use otpd_adapters::smpp::pdu::{self, Address, SubmitOptions};
use otpd_adapters::smpp::session::{Bind, BindConfig, BindState, Connect};
use rusmpp::pdus::{BindTransceiverResp, SubmitSm, SubmitSmResp};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Framed;

/// Hands each connection's other end to the test.
struct Pipe(mpsc::UnboundedSender<DuplexStream>);

impl Connect for Pipe {
    type Io = DuplexStream;

    async fn connect(&self, _address: &str) -> std::io::Result<DuplexStream> {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        self.0
            .send(theirs)
            .map_err(|_| std::io::Error::other("no SMSC"))?;
        Ok(ours)
    }
}

type Smsc = Framed<DuplexStream, CommandCodec>;

fn config() -> BindConfig {
    BindConfig {
        system_id: "otpd".into(),
        password: "secret".into(),
        window: 4,
        enquire_link_interval: Duration::from_secs(30),
        response_timeout: Duration::from_secs(10),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(100),
        throttle_pause: Duration::from_millis(100),
        ..BindConfig::default()
    }
}

fn message(n: u32) -> SubmitSm {
    pdu::submit_sm(
        &Address::international("+34600000000"),
        &Address::international(&format!("+3460000{n:04}")),
        format!("{n:06} es tu codigo").as_bytes(),
        SubmitOptions {
            data_coding: 0,
            registered_delivery: 0,
            esm_class: 0,
            validity_period: None,
        },
    )
    .unwrap()
}

/// Start a bind over the pipe; the test is its SMSC.
fn start(config: BindConfig) -> (Bind, mpsc::UnboundedReceiver<DuplexStream>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (receipts, _) = mpsc::channel(16);
    (Bind::start_with(config, receipts, Pipe(tx)), rx)
}

/// Take the next connection and accept its bind.
async fn accept(connections: &mut mpsc::UnboundedReceiver<DuplexStream>) -> Smsc {
    let mut smsc = Framed::new(
        connections.recv().await.expect("a connection"),
        CommandCodec::new(),
    );
    let bind = smsc.next().await.expect("a bind").expect("a PDU");
    assert!(
        matches!(bind.pdu(), Some(Pdu::BindTransceiver(_))),
        "{bind:?}"
    );
    let resp = BindTransceiverResp::builder()
        .system_id(pdu::c_string("system_id", "smsc").unwrap())
        .build();
    smsc.send(Command::new(
        CommandStatus::EsmeRok,
        bind.sequence_number(),
        resp,
    ))
    .await
    .unwrap();
    smsc
}

/// The next submit_sm: its sequence number and destination.
async fn next_submit(smsc: &mut Smsc) -> (u32, String) {
    loop {
        let c = smsc.next().await.expect("a PDU").expect("readable");
        if let Some(Pdu::SubmitSm(s)) = c.pdu() {
            return (c.sequence_number(), s.destination_addr.as_str().to_string());
        }
    }
}

async fn answer(smsc: &mut Smsc, seq: u32, status: CommandStatus, id: &str) {
    let resp = SubmitSmResp::builder()
        .message_id(pdu::c_string("message_id", id).unwrap())
        .build();
    smsc.send(Command::new(status, seq, resp)).await.unwrap();
}

/// Whether the ESME sends anything within `d` (the paused clock moves on by itself).
async fn silent_for(smsc: &mut Smsc, d: Duration) -> bool {
    tokio::time::timeout(d, smsc.next()).await.is_err()
}

#[tokio::test(start_paused = true)]
async fn the_window_is_never_exceeded_and_answers_match_by_sequence_number() {
    let (bind, mut connections) = start(config());
    let mut smsc = accept(&mut connections).await;
    let submits: Vec<_> = (0..10)
        .map(|n| {
            let bind = bind.clone();
            tokio::spawn(async move { (n, bind.submit(message(n)).await) })
        })
        .collect();
    let mut done = 0;
    while done < 10 {
        let mut window = Vec::new();
        while window.len() < 4 && done + window.len() < 10 {
            window.push(next_submit(&mut smsc).await);
        }
        // The fifth waits for a response.
        if done + window.len() < 10 {
            assert!(silent_for(&mut smsc, Duration::from_secs(1)).await);
        }
        // Answered in reverse order, each with its own destination as the id.
        for (seq, to) in window.iter().rev() {
            answer(&mut smsc, *seq, CommandStatus::EsmeRok, to).await;
        }
        done += window.len();
    }
    for s in submits {
        let (n, result) = s.await.unwrap();
        assert_eq!(result.unwrap(), format!("3460000{n:04}"));
    }
    assert_eq!(bind.stats().max_in_flight.load(Ordering::Relaxed), 4);
}

#[tokio::test(start_paused = true)]
async fn an_idle_link_is_probed_and_a_silent_smsc_is_left_for_a_new_link() {
    let (bind, mut connections) = start(config());
    let mut smsc = accept(&mut connections).await;
    let bound_at = Instant::now();
    let probe = smsc.next().await.unwrap().unwrap();
    assert!(matches!(probe.pdu(), Some(Pdu::EnquireLink)), "{probe:?}");
    assert_eq!(bound_at.elapsed(), Duration::from_secs(30));
    // Unanswered: after the response timeout the bind gives up on this link,
    // and binds again after its backoff (100 ms, ±50 %).
    let _second = accept(&mut connections).await;
    let gone = bound_at.elapsed();
    assert!(
        gone >= Duration::from_millis(40_050) && gone <= Duration::from_millis(40_150),
        "{gone:?}"
    );
    assert!(
        bind.wait_for(BindState::Bound, Duration::from_secs(1))
            .await
    );
    assert_eq!(bind.stats().connects.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn what_was_in_flight_is_sent_again_in_order_after_the_link_is_lost() {
    let (bind, mut connections) = start(config());
    let mut smsc = accept(&mut connections).await;
    let submits: Vec<_> = (0..3)
        .map(|n| {
            let bind = bind.clone();
            tokio::spawn(async move { bind.submit(message(n)).await })
        })
        .collect();
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(next_submit(&mut smsc).await.1);
    }
    drop(smsc);
    let mut smsc = accept(&mut connections).await;
    let mut again = Vec::new();
    for _ in 0..3 {
        let (seq, to) = next_submit(&mut smsc).await;
        answer(&mut smsc, seq, CommandStatus::EsmeRok, &to).await;
        again.push(to);
    }
    assert_eq!(first, again);
    for s in submits {
        s.await.unwrap().unwrap();
    }
    assert_eq!(bind.stats().resent.load(Ordering::Relaxed), 3);
}

#[tokio::test(start_paused = true)]
async fn a_throttled_message_goes_again_first_after_the_pause() {
    let (bind, mut connections) = start(config());
    let mut smsc = accept(&mut connections).await;
    let submit = tokio::spawn({
        let bind = bind.clone();
        async move { bind.submit(message(7)).await }
    });
    let (seq, to) = next_submit(&mut smsc).await;
    answer(&mut smsc, seq, CommandStatus::EsmeRthrottled, "").await;
    let throttled_at = Instant::now();
    let (seq, again) = next_submit(&mut smsc).await;
    assert_eq!(again, to);
    assert_eq!(throttled_at.elapsed(), Duration::from_millis(100));
    answer(&mut smsc, seq, CommandStatus::EsmeRok, "m1").await;
    assert_eq!(submit.await.unwrap().unwrap(), "m1");
    assert_eq!(bind.stats().throttled.load(Ordering::Relaxed), 1);
}
