//! A server that closes a connection while nothing is out on it (as servers do
//! with idle connections) costs the next request nothing: the client notices
//! before reusing the connection and makes a new one. The server here is the `h2`
//! crate's, an implementation independent of otpd's client.

use std::time::Duration;

use bytes::Bytes;
use otpd_adapters::h2post::{Client, ClientOptions, Outcome, Post};
use tokio::net::TcpListener;

/// Serve each connection one request (200), then close it: with a GOAWAY when
/// `graceful`, by dropping the socket otherwise.
async fn one_per_connection(graceful: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                let Some(Ok((request, mut respond))) = conn.accept().await else {
                    return;
                };
                let mut body = request.into_body();
                tokio::select! {
                    _ = async {
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                    } => {}
                    _ = conn.accept() => {}
                }
                let answer = http::Response::builder().status(200).body(()).unwrap();
                respond.send_response(answer, true).unwrap();
                if graceful {
                    conn.graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while conn.accept().await.is_some() {}
                    })
                    .await;
                } else {
                    let _ = tokio::time::timeout(Duration::from_millis(100), async {
                        while conn.accept().await.is_some() {}
                    })
                    .await;
                }
            });
        }
    });
    port
}

async fn each_request_after_a_pause(graceful: bool) {
    let port = one_per_connection(graceful).await;
    let mut c: Client<u32> = Client::new(ClientOptions {
        host: "127.0.0.1".into(),
        port,
        path: "/hook".into(),
        content_type: "application/json".into(),
        timeout: Duration::from_secs(5),
        max_streams: 8,
        linger: Duration::ZERO,
    });
    for n in 0..3 {
        c.post(
            n,
            Post::new(Bytes::from_static(b"{}")).header("webhook-id", b"msg_1"),
        );
        let (tag, outcome) = tokio::time::timeout(Duration::from_secs(5), c.next())
            .await
            .expect("an answer");
        assert_eq!((tag, outcome), (n, Outcome::Answered(200)));
        // The server closes the connection meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_connection_sent_away_while_idle_is_replaced_before_use() {
    each_request_after_a_pause(true).await;
}

#[tokio::test]
async fn a_connection_dropped_while_idle_is_replaced_before_use() {
    each_request_after_a_pause(false).await;
}
