//! Interoperability with an SMPP implementation none of us wrote: otpd's bind against
//! the server of the npm `smpp` package (tests/interop/smsc.js). The test command
//! installs it (`npm ci` in tests/interop); without it this test fails, it does not
//! skip.

use std::time::Duration;

use otpd_adapters::smpp::matcher::{Event, IdForms, MatcherConfig, ReceiptMatcher};
use otpd_adapters::smpp::pdu::{self, Address, SubmitOptions};
use otpd_adapters::smpp::receipt::MessageState;
use otpd_adapters::smpp::session::{Bind, BindConfig, BindState};

#[tokio::test]
async fn otpd_binds_submits_and_matches_receipts_with_the_npm_smpp_server() {
    let node = otpd_e2e::interop::NodeSmsc::start("smsc.js", &[]);
    let port = node.port;
    let (tx, mut receipts) = tokio::sync::mpsc::channel(16);
    let bind = Bind::start(
        BindConfig {
            address: format!("127.0.0.1:{port}"),
            system_id: "otpd".into(),
            password: "secret".into(),
            ..BindConfig::default()
        },
        tx,
    );
    assert!(
        bind.wait_for(BindState::Bound, Duration::from_secs(20))
            .await,
        "bound to the npm server"
    );

    let mut matcher = ReceiptMatcher::new(MatcherConfig {
        forms: IdForms::Learn,
        hold_for: Duration::from_secs(30),
        cross_after: Duration::from_secs(1),
        max_held: 16,
    });
    let keep = tokio::time::Instant::now() + Duration::from_secs(60);
    for n in 0..3u32 {
        let submit = pdu::submit_sm(
            &Address {
                ton: 5,
                npi: 0,
                addr: "Clave".into(),
            },
            &Address::international(&format!("+3460012345{n}")),
            format!("00421{n} es tu codigo").as_bytes(),
            SubmitOptions {
                data_coding: 0,
                registered_delivery: 1,
                esm_class: 0,
                validity_period: None,
            },
        )
        .unwrap();
        let id = bind
            .submit(submit)
            .await
            .expect("the npm server accepts the submit");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "hex id: {id}");
        matcher.submitted(&[id], n, keep, tokio::time::Instant::now());
    }
    // The npm server reports the ids in decimal, in the text form only: the
    // matcher reads them in either base once they waited for their own form.
    let mut events = Vec::new();
    for _ in 0..3 {
        let receipt = tokio::time::timeout(Duration::from_secs(20), receipts.recv())
            .await
            .expect("a receipt in time")
            .unwrap()
            .expect("a readable receipt");
        assert_eq!(receipt.state, MessageState::Delivered);
        events.extend(matcher.receipt(receipt, tokio::time::Instant::now()));
    }
    events.extend(matcher.tick(tokio::time::Instant::now() + Duration::from_secs(2)));
    let mut matched: Vec<u32> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::Settled { value, .. } => Some(value),
            _ => None,
        })
        .collect();
    matched.sort();
    assert_eq!(matched, vec![0, 1, 2]);
    bind.shutdown().await;
    assert_eq!(bind.state(), BindState::Closed);
}
