//! A test harness: an otpd server started for real on `127.0.0.1:0`, with its outbox in
//! a temporary directory and a manual clock, and a small HTTP client around it.

pub mod browser;
pub mod interop;
pub mod process;
pub mod providers;
pub mod proxy;
pub mod receiver;
pub mod redis;
pub mod tls_front;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use otpd::config::Config;
use otpd::delivery::Channels;
use otpd::domain::clock::{ManualClock, UnixMillis};
use otpd::server::Settings;
use otpd::{Deps, Server};
use reqwest::header::HeaderMap;
use serde_json::Value;

/// 2026-11-23T12:00:00Z: tests start their clock here.
pub const T0: UnixMillis = UnixMillis(1_795_435_200_000);

pub struct TestServer {
    pub base: String,
    pub clock: ManualClock,
    /// Every event the server told (the newest 10 000).
    pub events: Arc<otpd::events::Recorder>,
    pub outbox: PathBuf,
    pub client: reqwest::Client,
    server: Option<Server>,
    _dir: tempfile::TempDir,
    /// The Redis this server's state is on, when the test started one for it.
    _redis: Option<redis::RedisServer>,
}

/// Where a server keeps its state (for tests that run on both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    /// A `redis-server` of its own, started on a free loopback port.
    Redis,
}

/// An HTTP answer: status, headers, and the body as JSON (`Null` if not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestServer {
    /// Wait until the escalation timer has made two whole passes: whatever the
    /// clock's last move made due has been escalated (or, just as surely, not).
    pub async fn escalations_settled(&self) {
        let engine = self.server.as_ref().expect("running").engine().clone();
        let from = engine.escalation_passes();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while engine.escalation_passes() < from + 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the escalation timer stalled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Wait until the delivery queue is empty: every send queued so far is with a
    /// worker or done.
    pub async fn queue_drained(&self) {
        let engine = self.server.as_ref().expect("running").engine().clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while engine.queue().depth() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the queue did not drain"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn start() -> Self {
        Self::start_with(|_| {}, None).await
    }

    /// Start on the default configuration, with `store` instead of the embedded one.
    pub async fn start_with_store(store: otpd::store::Stores) -> Self {
        Self::start_full(|_| {}, None, Some(store)).await
    }

    /// Start with the defaults changed by `tweak`, on `store` (shared with other
    /// servers: several nodes, or one restarted).
    pub async fn start_full_with(
        tweak: impl FnOnce(&mut Config),
        store: otpd::store::Stores,
    ) -> Self {
        Self::start_full(tweak, None, Some(store)).await
    }

    /// [`TestServer::start_with`] on `backend`.
    pub async fn start_on(
        backend: Backend,
        tweak: impl FnOnce(&mut Config),
        channels: Option<Channels>,
    ) -> Self {
        match backend {
            Backend::Memory => Self::start_with(tweak, channels).await,
            Backend::Redis => {
                let redis = redis::RedisServer::start();
                let url = redis.url();
                let mut server = Self::start_with(
                    move |c| {
                        c.store.kind = otpd::config::StoreKind::Redis;
                        c.redis.urls = vec![url];
                        tweak(c);
                    },
                    channels,
                )
                .await;
                server._redis = Some(redis);
                server
            }
        }
    }

    /// Start with the defaults changed by `tweak`, and optionally other channels than
    /// the outbox.
    pub async fn start_with(tweak: impl FnOnce(&mut Config), channels: Option<Channels>) -> Self {
        Self::start_full(tweak, channels, None).await
    }

    async fn start_full(
        tweak: impl FnOnce(&mut Config),
        channels: Option<Channels>,
        store: Option<otpd::store::Stores>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        tweak(&mut config);
        Self::launch(dir, config, channels, store, None).await
    }

    /// Start from a configuration file, which `POST /v1/admin/reload` reads again.
    /// The outbox and secret are set by environment variables, as an operator would.
    pub async fn start_from_file(file: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config::read(Some(file), []).expect("test config file is readable");
        Self::launch(dir, config, None, None, Some(file.to_path_buf())).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        mut config: Config,
        channels: Option<Channels>,
        store: Option<otpd::store::Stores>,
        config_file: Option<std::path::PathBuf>,
    ) -> Self {
        let outbox = dir.path().join("outbox.jsonl");
        config.channels.file.path = outbox.clone();
        // The embedded store (the default) keeps its data in this test's directory.
        if config.store.path == otpd::config::StoreConfig::default().path {
            config.store.path = dir.path().join("data");
        }
        config.codes.secret = Some("test secret, long enough for otpd: 0123456789".into());
        config.server.shutdown_grace = Duration::from_secs(5);
        let mut settings = Settings::new(config).expect("test config is valid");
        // Stand-in carriers are not in the configuration: unless the test routed
        // them itself, the default route goes to the first one.
        if let Some(channels) = &channels
            && settings.config.routing.default.is_empty()
            && settings.config.channels.smpp.is_empty()
        {
            settings = settings
                .route_to(channels.sms[0].name())
                .expect("a plan for the stand-ins");
        }
        let clock = ManualClock::new(T0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let events = Arc::new(otpd::events::Recorder::new(10_000));
        let server = Server::start_on(
            listener,
            settings,
            Deps {
                clock: Arc::new(clock.clone()),
                channels,
                store,
                config_file,
                events: Some(events.clone()),
            },
        )
        .await
        .expect("server starts");
        Self {
            base: format!("http://{}", server.addr()),
            clock,
            events,
            outbox,
            client: client(),
            server: Some(server),
            _dir: dir,
            _redis: None,
        }
    }

    /// The events told about verification `id` so far, in order.
    pub fn told(&self, id: &str) -> Vec<otpd::events::Event> {
        self.events
            .events()
            .into_iter()
            .filter(|e| e.data.verification_id.as_deref() == Some(id))
            .collect()
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
            server.wait().await.expect("clean shutdown");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request reaches the server");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.client.post(self.url(path)).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.send(self.client.put(self.url(path)).json(&body)).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.client.delete(self.url(path))).await
    }

    /// `POST /v1/verifications` to `to`, expecting 201.
    pub async fn issue(&self, to: &str) -> Value {
        let answer = self
            .post("/v1/verifications", serde_json::json!({ "to": to }))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.body
    }

    pub async fn check(&self, id: &str, code: &str) -> Answer {
        self.post(
            &format!("/v1/verifications/{id}/check"),
            serde_json::json!({ "code": code }),
        )
        .await
    }

    /// Wait (bounded) until the latest send of `id` has the channel's answer (state no
    /// longer `queued`), and return the verification as `GET` shows it then.
    pub async fn answered(&self, id: &str) -> Value {
        let path = format!("/v1/verifications/{id}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.get(&path).await.body;
            if v["delivery"]["state"] != "queued" {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the send of {id} was never answered"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The outbox lines so far.
    pub fn outbox_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.outbox)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("outbox lines are JSON"))
            .collect()
    }

    /// Wait (bounded) until send number `send` of verification `id` is in the outbox,
    /// and return that line.
    pub async fn outbox_line(&self, id: &str, send: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .outbox_lines()
                .into_iter()
                .find(|l| l["verification_id"] == id && l["send"] == send)
            {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "send {send} of {id} never reached the outbox"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The code carried by send `send` of `id`, read from the outbox.
    pub async fn code(&self, id: &str, send: u64) -> String {
        let line = self.outbox_line(id, send).await;
        code_in(line["text"].as_str().expect("text"))
    }
}

/// An HTTP client for tests (rustls needs its crypto provider chosen first).
/// Every request bounded: an otpd that stops answering fails its test instead of
/// holding the suite.
pub fn client() -> reqwest::Client {
    otpd_adapters::push::http::install_crypto();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("a client")
}

/// The code in a rendered message: its first run of 4 or more digits.
pub fn code_in(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() >= 4)
        .expect("a code in the message")
        .to_string()
}

/// Faulty stores, to see what the server does when its store misbehaves.
pub mod faults {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use otpd::domain::clock::UnixMillis;
    use otpd::domain::verification::{
        AckOutcome, AnswerOutcome, CancelOutcome, Closing, EscalationCause, Verification,
    };
    use otpd::policy::limiter::{CheckLimits, IssueLimits, Limiter};
    use otpd::secrets::code::CodeMac;
    use otpd::secrets::device_key::Decision;
    use otpd::secrets::id::VerificationId;
    use otpd::store::{
        CheckedWithin, IssueOutcome, MemoryStore, StoreError, Stores, Verifications,
    };

    /// Another store's verifications, with faults: `issue` that never returns (as a
    /// store behind a dead network link might), or `escalate` failing.
    pub struct Faulty {
        inner: Arc<dyn Verifications>,
        hang_issue: bool,
        /// How many `escalate` calls are still to fail.
        failing_escalations: AtomicUsize,
    }

    /// The embedded store, its verifications hanging on `issue`.
    pub struct Hanging;

    impl Hanging {
        /// The embedded store's seams, with its verifications hanging on `issue`.
        pub fn over(store: MemoryStore) -> Stores {
            let store = Arc::new(store);
            Stores {
                verifications: Arc::new(Faulty {
                    inner: store.clone(),
                    hang_issue: true,
                    failing_escalations: AtomicUsize::new(0),
                }),
                ..Stores::of(store)
            }
        }
    }

    impl Faulty {
        /// `stores`, the next `n` calls of `escalate` failing as a store that cannot
        /// be reached does (after the fact: the store is left as it was).
        pub fn failing_escalations(stores: Stores, n: usize) -> Stores {
            Stores {
                verifications: Arc::new(Faulty {
                    inner: stores.verifications.clone(),
                    hang_issue: false,
                    failing_escalations: AtomicUsize::new(n),
                }),
                ..stores
            }
        }
    }

    #[async_trait]
    impl Verifications for Faulty {
        async fn issue(
            &self,
            v: &Verification,
            now: UnixMillis,
            limits: &IssueLimits<'_>,
        ) -> Result<IssueOutcome, StoreError> {
            if self.hang_issue {
                std::future::pending::<()>().await;
            }
            self.inner.issue(v, now, limits).await
        }
        async fn check(
            &self,
            id: &VerificationId,
            mac: &CodeMac,
            client: Option<&str>,
            now: UnixMillis,
            limits: &CheckLimits<'_>,
        ) -> Result<CheckedWithin, StoreError> {
            self.inner.check(id, mac, client, now, limits).await
        }
        fn limiter(&self) -> Arc<dyn Limiter> {
            self.inner.limiter()
        }
        async fn get(&self, id: &VerificationId) -> Result<Option<Verification>, StoreError> {
            self.inner.get(id).await
        }
        async fn of_subject(
            &self,
            subject: &str,
            limit: usize,
        ) -> Result<Vec<Verification>, StoreError> {
            self.inner.of_subject(subject, limit).await
        }
        async fn close(
            &self,
            id: &VerificationId,
            client: Option<&str>,
            how: Closing,
            now: UnixMillis,
        ) -> Result<Option<(CancelOutcome, Verification)>, StoreError> {
            self.inner.close(id, client, how, now).await
        }
        async fn acknowledge(
            &self,
            id: &VerificationId,
            now: UnixMillis,
        ) -> Result<Option<(AckOutcome, Verification)>, StoreError> {
            self.inner.acknowledge(id, now).await
        }
        async fn answer(
            &self,
            id: &VerificationId,
            decision: Decision,
            device: &str,
            now: UnixMillis,
        ) -> Result<Option<(AnswerOutcome, Verification)>, StoreError> {
            self.inner.answer(id, decision, device, now).await
        }
        async fn escalate(
            &self,
            id: &VerificationId,
            cause: EscalationCause,
            now: UnixMillis,
        ) -> Result<Option<Verification>, StoreError> {
            let fail = self
                .failing_escalations
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                return Err(StoreError::Unavailable("escalate failed (fault)".into()));
            }
            self.inner.escalate(id, cause, now).await
        }
        async fn due_escalations(
            &self,
            now: UnixMillis,
            limit: usize,
        ) -> Result<Vec<VerificationId>, StoreError> {
            self.inner.due_escalations(now, limit).await
        }
        async fn sweep(&self, now: UnixMillis) -> Result<usize, StoreError> {
            self.inner.sweep(now).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
    }
}

/// Test functions `async fn name(backend: Backend)` run as `memory::name` and
/// `redis::name` tests, on the embedded store and on a Redis of their own.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::Backend::Memory).await
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::Backend::Redis).await
            })*
        }
    };
}
