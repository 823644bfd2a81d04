//! A lean HTTP/1.1 client for driving otpd: a fixed number of keep-alive connections
//! (hyper's connection API, no pool logic to pay for per request), each carrying one
//! request at a time. A request waits for a free connection; that wait is part of its
//! latency, as it would be for a real backend.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Build(#[from] hyper::http::Error),
}

pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

pub struct Http {
    addr: SocketAddr,
    host: String,
    slots: Semaphore,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Http {
    /// A client of `addr` with at most `connections` open at once.
    pub fn new(addr: SocketAddr, connections: usize) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            slots: Semaphore::new(connections),
            idle: Mutex::new(Vec::with_capacity(connections)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `method path` with `body` (JSON) if any.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, HttpError> {
        let _slot = self.slots.acquire().await.expect("never closed");
        let idle = self.idle.lock().pop();
        let mut conn = match idle {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        if conn.ready().await.is_err() {
            conn = self.connect().await?;
        }
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        let response = conn.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        self.idle.lock().push(conn);
        Ok(Answer { status, body })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| HttpError::Connect(self.addr, e))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}
