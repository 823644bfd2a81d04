//! One run: the simulators and otpd started, the people registered, the arrivals sent
//! on schedule, the codes followed from request to phone to check, and everything
//! stopped — bounded in count and in time, whatever otpd does.
//!
//! A person's session joins two things that happen in either order: otpd's answer
//! (the verification id) and the code's arrival at the SMSC or the push provider.
//! When both are known the person acts on the code after a human delay, as the
//! scenario's behaviour draws for them.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use otpd_simulators::push::{Provider, PushTap};
use otpd_simulators::smsc::{Received, Tap};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::app::{self, AppKey, Decision};
use crate::codes;
use crate::http::Http;
use crate::measure::{Measures, Op, Via};
use crate::population::{Pattern, Person, Population};
use crate::profile::{RateProfile, Schedule};
use crate::report::Report;
use crate::rng::{Rng, mix};
use crate::scenario::{Event, Scenario};
use crate::sims::{SimError, Sims};
use crate::target::{self, OtpdProcess, TargetError};
use crate::tombstones::Tombstones;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sims(#[from] SimError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error(transparent)]
    Redis(#[from] crate::redis::RedisError),
}

/// How to run a scenario.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where the report, otpd's configuration and its log go.
    pub out: PathBuf,
    /// The otpd binary to start (default: beside this tool, built if absent).
    pub otpd: Option<PathBuf>,
    /// Drive an otpd already running here instead of starting one (its carriers and
    /// push providers are then its own business).
    pub url: Option<String>,
    /// Print progress to stderr every few seconds.
    pub progress: bool,
    /// Be a configured client with a webhook: a receiver on loopback takes every
    /// event (see [`crate::webhooks`]).
    pub webhooks: bool,
    /// Be a configured client without a webhook (the baseline of `webhooks`).
    pub client: bool,
    /// Have otpd keep its audit trail (in the output directory's `audit/`).
    pub audit: bool,
}

/// The code length of the purpose the tool asks for.
const CODE_LENGTH: usize = 6;
/// Sessions' keys stay known this long after they settle, so that a late message
/// (an escalation SMS after the app answered) is told apart from a stray one.
const TOMBSTONE: Duration = Duration::from_secs(180);
/// Between a wrong code and the right one.
const RETYPE: Duration = Duration::from_secs(2);
/// The check burst checks these verifications (of people who never type) at most.
const BURST_POOL: usize = 250_000;
const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Right,
    WrongThenRight,
    Resend,
    Never,
}

struct Session {
    due: Instant,
    person: Person,
    kind: Kind,
    typing: Duration,
    abuse: bool,
    state: Mutex<State>,
}

impl Session {
    /// Asked to approve in the app (`channel: app`).
    fn approval(&self) -> bool {
        self.person.app.as_ref().is_some_and(|a| a.approves)
    }
}

/// What reached the person: a code to type, or an approval request to answer.
#[derive(Debug, Clone)]
enum Arrived {
    /// A code, and the token to acknowledge it with when it came by push.
    Code(String, Option<Arc<str>>),
    Approval {
        challenge: String,
        match_code: String,
    },
}

#[derive(Default)]
struct State {
    id: Option<Arc<str>>,
    code: Option<String>,
    /// An approval request's challenge and match code.
    approval: Option<(String, String)>,
    deliveries: u32,
    pushed: Option<Instant>,
    /// What the push carried to acknowledge it with.
    ack_token: Option<Arc<str>>,
    acked: bool,
    typing: bool,
    settled: bool,
}

impl State {
    /// Neither a code nor an approval request reached the person yet.
    fn nothing_arrived(&self) -> bool {
        self.code.is_none() && self.approval.is_none()
    }
}

/// Open sessions by key. It grows to a million keys in a national run; resized
/// incrementally, so that no insert rehashes them all at once.
type Open<K> = griddle::HashMap<K, Arc<Session>, std::hash::RandomState>;

struct Shard {
    by_phone: Open<u64>,
    by_id: Open<Arc<str>>,
    /// Pushes that arrived before otpd's answer told us their verification.
    early: HashMap<Arc<str>, (Via, Arrived, Instant)>,
    gone_phones: Tombstones<u64>,
    gone_ids: Tombstones<Arc<str>>,
}

impl Shard {
    fn new(now: Instant) -> Self {
        Self {
            by_phone: Open::with_hasher(Default::default()),
            by_id: Open::with_hasher(Default::default()),
            early: HashMap::new(),
            gone_phones: Tombstones::new(TOMBSTONE, now),
            gone_ids: Tombstones::new(TOMBSTONE, now),
        }
    }
}

/// Where sessions are found by phone number (SMS) and by verification id (push).
struct Inbox {
    shards: Vec<Mutex<Shard>>,
    hasher: std::hash::RandomState,
}

impl Inbox {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::new(Instant::now())))
                .collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn shard<K: Hash + ?Sized>(&self, key: &K) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Forget early pushes older than `TOMBSTONE` (`all`: every one); returns how
    /// many (stray: no session ever claimed them). Tombstones expire by themselves.
    fn sweep(&self, now: Instant, all: bool) -> u64 {
        let mut stray = 0;
        for shard in &self.shards {
            let mut s = shard.lock();
            let keep = |at: &Instant| !all && now.saturating_duration_since(*at) < TOMBSTONE;
            let before = s.early.len();
            s.early.retain(|_, (_, _, at)| keep(at));
            stray += (before - s.early.len()) as u64;
        }
        stray
    }

    fn open_sessions(&self) -> Vec<Arc<Session>> {
        let mut all = Vec::new();
        for shard in &self.shards {
            let s = shard.lock();
            all.extend(s.by_phone.values().cloned());
        }
        all
    }
}

/// The digits of an E.164 number as a key.
fn phone_key(e164: &str) -> u64 {
    e164.trim_start_matches('+').parse().unwrap_or(0)
}

struct Run {
    scenario: Scenario,
    http: Http,
    m: Measures,
    population: Population,
    abuse: Option<Pattern>,
    inbox: Inbox,
    /// HTTP requests started and not answered.
    in_flight: AtomicUsize,
    /// Sessions not settled.
    open: AtomicI64,
    burst_pool: Mutex<Vec<Arc<str>>>,
    /// Tasks the run spawned that have not finished (the drain waits for them).
    tasks: AtomicI64,
    stopping: AtomicBool,
    late: AtomicU64,
    /// Every code read from an SMS or a push, kept when the run checks what
    /// left otpd (`--webhooks`, `--audit`) for codes.
    codes_seen: Option<Mutex<Vec<String>>>,
}

#[derive(Serialize)]
struct IssueBody<'a> {
    to: &'a str,
    subject: Option<&'a str>,
    locale: &'a str,
    channel: &'static str,
    purpose: &'static str,
    ip: &'a str,
}

#[derive(Serialize)]
struct CheckBody<'a> {
    code: &'a str,
    ip: &'a str,
}

/// The fields of otpd's answers the tool reads (typed and borrowed: a run reads
/// hundreds of thousands of them).
#[derive(Deserialize)]
struct Answered<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<ErrorPart<'a>>,
}

#[derive(Deserialize)]
struct ErrorPart<'a> {
    #[serde(borrow, default)]
    code: Option<std::borrow::Cow<'a, str>>,
}

fn answered(body: &[u8]) -> Option<Answered<'_>> {
    serde_json::from_slice(body).ok()
}

/// The answer's key in the report: the status, and the error code when it is one.
fn answer_key(status: u16, body: &[u8]) -> String {
    if status < 400 {
        return status.to_string();
    }
    let code = answered(body).and_then(|a| a.error?.code);
    match code {
        Some(c) => format!("{status} {c}"),
        None => status.to_string(),
    }
}

impl Run {
    fn spawn<F>(self: &Arc<Self>, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.fetch_add(1, Ordering::Relaxed);
        let run = self.clone();
        tokio::spawn(async move {
            f.await;
            run.tasks.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Send one request, timed from `due`; returns the answer's status and body, or
    /// `None` when the request never got one.
    async fn call(
        &self,
        op: Op,
        due: Instant,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Option<(u16, Bytes)> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let answer = self.http.send(method, path, body.map(Bytes::from)).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let done = Instant::now();
        match answer {
            Ok(a) => {
                let key = answer_key(a.status, &a.body);
                self.m.answered(op, due, done, &key, a.status < 300);
                Some((a.status, a.body))
            }
            Err(e) => {
                self.m.answered(
                    op,
                    due,
                    done,
                    &format!("{}: {e}", crate::measure::TRANSPORT_ERROR),
                    false,
                );
                None
            }
        }
    }

    /// Whether the run is over: a person still typing then is cut off (counted, not
    /// sent: otpd is being stopped).
    fn cut_off(&self) -> bool {
        let over = self.stopping.load(Ordering::Relaxed);
        if over {
            self.m.count(|c| &c.cut_off);
        }
        over
    }

    /// Arrival `i`, due at `due`.
    fn arrive(self: &Arc<Self>, i: u64, due: Instant) {
        if self.in_flight.load(Ordering::Relaxed) >= self.scenario.max_in_flight {
            self.m.offered(due, false);
            return;
        }
        self.m.offered(due, true);
        let mut rng = Rng::new(mix(self.scenario.seed ^ mix(i ^ 0xA11)));
        let abuse = self
            .abuse
            .as_ref()
            .zip(self.scenario.abuse.as_ref())
            .and_then(|(p, a)| {
                (due.saturating_duration_since(self.m.start) >= a.start && rng.unit() < a.share)
                    .then(|| {
                        (
                            p.number(mix(i)),
                            crate::population::address(
                                1_000_000_007u32.wrapping_add(rng.below(u64::from(a.ips)) as u32),
                            ),
                        )
                    })
            });
        let b = &self.scenario.behaviour;
        let session = match abuse {
            Some((phone, ip)) => {
                self.m.count(|c| &c.abuse_offered);
                Session {
                    due,
                    person: Person {
                        subject: String::new(),
                        phone,
                        app: None,
                        locale: "en",
                        ip,
                    },
                    kind: Kind::Never,
                    typing: Duration::ZERO,
                    abuse: true,
                    state: Mutex::new(State::default()),
                }
            }
            None => {
                let u = rng.unit();
                let kind = if u < b.right {
                    Kind::Right
                } else if u < b.right + b.wrong_then_right {
                    Kind::WrongThenRight
                } else if u < b.right + b.wrong_then_right + b.resend {
                    Kind::Resend
                } else {
                    Kind::Never
                };
                Session {
                    due,
                    person: self.population.person(i),
                    kind,
                    typing: rng.between(b.typing_min, b.typing_max),
                    abuse: false,
                    state: Mutex::new(State::default()),
                }
            }
        };
        let session = Arc::new(session);
        let run = self.clone();
        self.spawn(async move { run.issue(session).await });
    }

    fn issue_body(session: &Session) -> Vec<u8> {
        let p = &session.person;
        serde_json::to_vec(&IssueBody {
            to: &p.phone,
            subject: (!p.subject.is_empty()).then_some(p.subject.as_str()),
            locale: p.locale,
            channel: if session.approval() { "app" } else { "auto" },
            purpose: "login",
            ip: &p.ip,
        })
        .expect("serializes")
    }

    async fn issue(self: Arc<Self>, session: Arc<Session>) {
        let key = phone_key(&session.person.phone);
        {
            let mut shard = self.inbox.shard(&key).lock();
            shard.gone_phones.remove(&key);
            if let Some(old) = shard.by_phone.insert(key, session.clone()) {
                // The same number again while its last session is open (a small
                // population, or the attack's range): the old one is over.
                drop(shard);
                if !old.abuse && old.state.lock().nothing_arrived() {
                    self.m.count(|c| &c.replaced);
                }
                self.settle(&old);
            }
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        if !session.abuse {
            self.m.count(|c| &c.sessions);
        }
        let op = if session.abuse {
            Op::AbuseIssue
        } else {
            Op::Issue
        };
        self.m.count(|c| &c.issues_in_flight);
        let answer = self
            .call(
                op,
                session.due,
                Method::POST,
                "/v1/verifications",
                Some(Self::issue_body(&session)),
            )
            .await;
        self.m
            .counters
            .issues_in_flight
            .fetch_sub(1, Ordering::Relaxed);
        let id = answer
            .filter(|(status, _)| matches!(status, 200 | 201))
            .and_then(|(_, body)| answered(&body)?.id.map(|id| Arc::<str>::from(&*id)));
        let Some(id) = id else {
            if !session.abuse {
                self.m.count(|c| &c.refused);
            }
            self.settle(&session);
            return;
        };
        if session.abuse {
            self.m.count(|c| &c.abuse_accepted);
        }
        session.state.lock().id = Some(id.clone());
        // Pushes are matched by verification id; one may already be here.
        let early = {
            let mut shard = self.inbox.shard(&*id).lock();
            shard.by_id.insert(id.clone(), session.clone());
            shard.early.remove(&id)
        };
        if let Some((via, arrived, at)) = early {
            self.delivered(&session, via, arrived, at);
        }
        self.advance(&session);
    }

    /// A code (or an approval request) reached the person.
    fn delivered(
        self: &Arc<Self>,
        session: &Arc<Session>,
        via: Via,
        arrived: Arrived,
        at: Instant,
    ) {
        let mut s = session.state.lock();
        if s.settled {
            self.late.fetch_add(1, Ordering::Relaxed);
            return;
        }
        s.deliveries += 1;
        if s.deliveries == 1 {
            self.m
                .delivered(via, at.saturating_duration_since(session.due), at);
            if session.abuse {
                self.m.count(|c| &c.abuse_delivered);
            } else {
                self.m.count(|c| &c.delivered);
            }
            match arrived {
                Arrived::Code(code, ack) => {
                    s.code = Some(code);
                    if ack.is_some() {
                        s.ack_token = ack;
                    }
                }
                Arrived::Approval {
                    challenge,
                    match_code,
                } => s.approval = Some((challenge, match_code)),
            }
        } else {
            self.m.count(|c| &c.extra_deliveries);
            if via == Via::Sms && s.pushed.is_some() {
                self.m.count(|c| &c.escalated);
            }
            match arrived {
                // The PIN after an approval request: its fallback, not a mismatch.
                Arrived::Code(_, _) if s.code.is_none() => {}
                Arrived::Code(code, _) if s.code.as_deref() == Some(code.as_str()) => {}
                Arrived::Approval { .. } if s.approval.is_some() || session.approval() => {}
                _ => self.m.count(|c| &c.code_mismatches),
            }
        }
        if via != Via::Sms && s.pushed.is_none() {
            s.pushed = Some(at);
        }
        drop(s);
        if session.abuse {
            self.settle(session);
            return;
        }
        self.advance(session);
    }

    /// Take the next step that both halves (the id, the code) allow.
    fn advance(self: &Arc<Self>, session: &Arc<Session>) {
        let mut s = session.state.lock();
        let Some(id) = s.id.clone() else { return };
        if s.nothing_arrived() {
            return;
        }
        // An approval request is answered, not acknowledged.
        if let Some(pushed) = s.pushed
            && !s.acked
            && s.approval.is_none()
            && let Some(token) = s.ack_token.clone()
        {
            s.acked = true;
            let due = pushed + self.scenario.behaviour.app_ack;
            let run = self.clone();
            let id = id.clone();
            // The app proves the push reached it with the token the push carried.
            let body =
                serde_json::to_vec(&serde_json::json!({ "ack_token": &*token })).expect("JSON");
            self.spawn(async move {
                tokio::time::sleep_until(due.into()).await;
                if run.cut_off() {
                    return;
                }
                run.call(
                    Op::Ack,
                    due,
                    Method::POST,
                    &format!("/v1/verifications/{id}/ack"),
                    Some(body),
                )
                .await;
            });
        }
        if s.typing {
            return;
        }
        s.typing = true;
        let (code, approval) = (s.code.clone(), s.approval.clone());
        drop(s);
        if session.kind == Kind::Never {
            self.m.count(|c| &c.never_typed);
            // The burst checks codes; an unanswered approval request has none yet.
            let mut pool = self.burst_pool.lock();
            if pool.len() < BURST_POOL && code.is_some() {
                pool.push(id);
            }
            drop(pool);
            self.settle(session);
            return;
        }
        let run = self.clone();
        let session = session.clone();
        match (code, approval) {
            (Some(code), _) => self.spawn(async move { run.act(session, id, code).await }),
            (None, Some(approval)) => {
                self.spawn(async move { run.approve(session, id, approval).await })
            }
            (None, None) => unreachable!("checked above"),
        }
    }

    /// The person approves in the app, after looking at the request: the reference
    /// app signs the answer with the key it enrolled.
    async fn approve(
        self: Arc<Self>,
        session: Arc<Session>,
        id: Arc<str>,
        approval: (String, String),
    ) {
        let due = Instant::now() + session.typing;
        tokio::time::sleep_until(due.into()).await;
        if self.cut_off() {
            return;
        }
        let Some(app) = &session.person.app else {
            return;
        };
        let key = AppKey::ed25519_from_seed(&app.key_seed);
        let (challenge, match_code) = approval;
        let request = app::Request {
            verification: id.to_string(),
            challenge,
            match_code,
            requester: None,
            purpose: None,
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let body = key.answer(Decision::Approve, &request, now_ms);
        let answer = self
            .call(
                Op::Approve,
                due,
                Method::POST,
                &AppKey::path(Decision::Approve, &request),
                Some(body.to_string().into_bytes()),
            )
            .await;
        let status = answer
            .as_ref()
            .and_then(|(_, body)| answered(body)?.status.map(|s| s.into_owned()));
        if status.as_deref() == Some("approved") {
            self.m.count(|c| &c.approved);
            self.m.count(|c| &c.approved_in_app);
        } else {
            self.m.count(|c| &c.unexpected_checks);
        }
        self.settle(&session);
    }

    /// What the person does with the code.
    async fn act(self: Arc<Self>, session: Arc<Session>, id: Arc<str>, code: String) {
        let start = Instant::now();
        let path = format!("/v1/verifications/{id}/check");
        let mut due = start + session.typing;
        match session.kind {
            Kind::WrongThenRight => {
                tokio::time::sleep_until(due.into()).await;
                if self.cut_off() {
                    return;
                }
                let wrong = codes::wrong(&code);
                let answer = self.check(due, &path, &wrong, &session).await;
                if answer.as_deref() == Some("pending") {
                    self.m.count(|c| &c.wrong_rejected);
                } else {
                    self.m.count(|c| &c.unexpected_checks);
                }
                due += RETYPE;
            }
            Kind::Resend => {
                let ask = start + session.typing / 2;
                tokio::time::sleep_until(ask.into()).await;
                if self.cut_off() {
                    return;
                }
                self.call(
                    Op::Resend,
                    ask,
                    Method::POST,
                    "/v1/verifications",
                    Some(Self::issue_body(&session)),
                )
                .await;
            }
            Kind::Right | Kind::Never => {}
        }
        tokio::time::sleep_until(due.into()).await;
        if self.cut_off() {
            return;
        }
        let answer = self.check(due, &path, &code, &session).await;
        if answer.as_deref() == Some("approved") {
            self.m.count(|c| &c.approved);
        } else {
            self.m.count(|c| &c.unexpected_checks);
        }
        self.settle(&session);
    }

    /// A check; returns the verification's status in the answer.
    async fn check(
        &self,
        due: Instant,
        path: &str,
        code: &str,
        session: &Session,
    ) -> Option<String> {
        let body = serde_json::to_vec(&CheckBody {
            code,
            ip: &session.person.ip,
        })
        .expect("serializes");
        let (_, body) = self
            .call(Op::Check, due, Method::POST, path, Some(body))
            .await?;
        answered(&body)?.status.map(String::from)
    }

    /// The session is over: forget it (leaving tombstones for late messages).
    fn settle(&self, session: &Arc<Session>) {
        let id = {
            let mut s = session.state.lock();
            if s.settled {
                return;
            }
            s.settled = true;
            s.id.clone()
        };
        self.open.fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        let key = phone_key(&session.person.phone);
        {
            let mut shard = self.inbox.shard(&key).lock();
            if shard
                .by_phone
                .get(&key)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                shard.by_phone.remove(&key);
                shard.gone_phones.insert(key, now);
            }
        }
        if let Some(id) = id {
            let mut shard = self.inbox.shard(&*id).lock();
            shard.by_id.remove(&id);
            shard.gone_ids.insert(id, now);
        }
    }

    /// Write the codes the run saw to `out/codes.txt`, when it kept them.
    fn keep_codes(&self, out: &std::path::Path) -> Result<(), RunError> {
        let Some(seen) = &self.codes_seen else {
            return Ok(());
        };
        let path = out.join("codes.txt");
        let text: String = seen.lock().iter().map(|c| format!("{c}\n")).collect();
        std::fs::write(&path, text).map_err(|e| RunError::Write(path, e))
    }

    /// Keep `code` when the run keeps the codes it saw.
    fn saw(&self, code: &str) {
        if let Some(seen) = &self.codes_seen {
            seen.lock().push(code.to_string());
        }
    }

    /// An SMS reached the SMSC.
    fn on_sms(self: &Arc<Self>, r: &Received) {
        let at = Instant::now();
        let key = phone_key(&r.destination.addr);
        let session = {
            let shard = self.inbox.shard(&key).lock();
            match shard.by_phone.get(&key) {
                Some(s) => Some(s.clone()),
                None => {
                    if shard.gone_phones.contains(&key) {
                        self.late.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.m.count(|c| &c.unmatched_deliveries);
                    }
                    None
                }
            }
        };
        let Some(session) = session else { return };
        match codes::find_code(&codes::sms_text(r.data_coding, &r.body), CODE_LENGTH) {
            Some(code) => {
                self.saw(&code);
                self.delivered(&session, Via::Sms, Arrived::Code(code, None), at)
            }
            None => self.m.count(|c| &c.code_mismatches),
        }
    }

    /// A push reached its provider.
    fn on_push(self: &Arc<Self>, provider: Provider, body: &[u8]) {
        let at = Instant::now();
        let via = match provider {
            Provider::Apns => Via::Apns,
            Provider::Fcm => Via::Fcm,
            Provider::Hms => Via::Hms,
        };
        let (id, arrived) = match codes::approval_request(body) {
            Some(r) => (
                r.verification,
                Arrived::Approval {
                    challenge: r.challenge,
                    match_code: r.match_code,
                },
            ),
            None => {
                let Some(push) = codes::push_fields(body) else {
                    self.m.count(|c| &c.unmatched_deliveries);
                    return;
                };
                let Some(code) = codes::find_code(&push.text, CODE_LENGTH) else {
                    self.m.count(|c| &c.code_mismatches);
                    return;
                };
                self.saw(&code);
                (push.id, Arrived::Code(code, push.ack_token.map(Arc::from)))
            }
        };
        let id: Arc<str> = id.into();
        let session = {
            let mut shard = self.inbox.shard(&*id).lock();
            match shard.by_id.get(&id) {
                Some(s) => Some(s.clone()),
                None if shard.gone_ids.contains(&id) => {
                    self.late.fetch_add(1, Ordering::Relaxed);
                    None
                }
                None => {
                    shard.early.insert(id, (via, arrived.clone(), at));
                    None
                }
            }
        };
        if let Some(session) = session {
            self.delivered(&session, via, arrived, at);
        }
    }
}

impl Run {
    /// Redis's command counts and otpd's own count of its Redis round trips (from
    /// its `/metrics`), when otpd runs on a Redis the tool can read.
    async fn redis_snapshot(
        &self,
        addr: Option<SocketAddr>,
    ) -> Option<(crate::redis::CommandStats, u64)> {
        let stats = crate::redis::CommandStats::read(addr?).ok()?;
        let metrics = self.http.send(Method::GET, "/metrics", None).await.ok()?;
        let trips = crate::redis::round_trips_in(&String::from_utf8_lossy(&metrics.body));
        Some((stats, trips))
    }
}

/// Register the people with an app among the first `arrivals`, `connections` at a
/// time (before the clock starts: this is set-up, not load).
async fn register(run: &Arc<Run>, arrivals: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..run.scenario.connections {
        let run = run.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= arrivals.min(run.population.len()) {
                    return;
                }
                let p = run.population.person(i);
                let Some(app) = &p.app else { continue };
                // Every app enrolls its key, as the Cl@ve app does at activation.
                let key = AppKey::ed25519_from_seed(&app.key_seed).enrollment();
                let body = serde_json::json!({
                    "phone": p.phone,
                    "locale": p.locale,
                    "devices": [{ "platform": app.platform.as_str(), "token": app.token, "app": target::APP, "key": key }],
                });
                let due = Instant::now();
                let answer = run
                    .call(Op::Register, due, Method::PUT, &format!("/v1/subscribers/{}", p.subject), Some(body.to_string().into_bytes()))
                    .await;
                if answer.is_some_and(|(s, _)| s < 300) {
                    run.m.count(|c| &c.registered);
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}

/// Run `scenario`; the report is written to `options.out` and returned.
pub async fn run(scenario: Scenario, options: Options) -> Result<Report, RunError> {
    let given = options.url.as_deref().map(target::http_addr).transpose()?;
    std::fs::create_dir_all(&options.out).map_err(|e| RunError::Write(options.out.clone(), e))?;
    // Absolute: otpd runs in this directory and is given paths in it.
    let mut options = options;
    options.out =
        std::fs::canonicalize(&options.out).map_err(|e| RunError::Write(options.out.clone(), e))?;
    let work =
        tempfile::tempdir().map_err(|e| RunError::Write("a temporary directory".into(), e))?;
    let planned = scenario.planned_arrivals();
    let length = run_length(&scenario);
    let slot: Arc<Mutex<Option<Arc<Run>>>> = Arc::new(Mutex::new(None));
    let sms_tap = {
        let slot = slot.clone();
        Tap(Arc::new(move |r: &Received| {
            if let Some(run) = slot.lock().clone() {
                run.on_sms(r);
            }
        }))
    };
    let push_tap = {
        let slot = slot.clone();
        PushTap(Arc::new(move |p: Provider, body: &[u8]| {
            if let Some(run) = slot.lock().clone() {
                run.on_push(p, body);
            }
        }))
    };
    let sims = Sims::start(&scenario, work.path(), sms_tap, push_tap).await?;
    let (effective, redis_server, redis_addr) = redis_for(&scenario, &options)?;
    let receiver = start_receiver(&options).await?;
    let additions = target::Additions {
        client: options.client || options.webhooks,
        webhook_url: receiver.as_ref().map(|r| r.url()),
        audit: options.audit,
    };
    let otpd = start_otpd(&options, &effective, &scenario, &sims, &additions).await?;
    let addr: SocketAddr = match (&otpd, given) {
        (Some(o), _) => o.addr,
        (None, Some(addr)) => addr,
        (None, None) => unreachable!("otpd is started when no URL is given"),
    };
    let pid = otpd.as_ref().map(|o| o.pid);

    let (run, registered) = set_up(&scenario, addr, planned, length, &slot, &options).await;
    let start = run.m.start;
    let redis_start = run.redis_snapshot(redis_addr).await;

    let sampler = tokio::spawn(sample(
        run.clone(),
        pid,
        redis_server.as_ref().map(|r| r.pid()),
    ));
    let progress = options
        .progress
        .then(|| tokio::spawn(progress(run.clone())));

    let mut events = scenario.events.iter().peekable();
    arrive_on_schedule(&run, &scenario, &sims, &mut events).await;
    // Events due after the arrivals (a carrier resuming in the drain).
    let arrivals_end = Instant::now();

    // Drain: sessions settle as codes arrive and people type, bounded by `drain`.
    let drain_end = arrivals_end + scenario.drain;
    loop {
        let now = Instant::now();
        apply_due(&mut events, &sims, start, now);
        if (run.open.load(Ordering::Relaxed) <= 0 && run.tasks.load(Ordering::Relaxed) <= 0)
            || now >= drain_end
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_at = Instant::now();
    let redis_drained = run.redis_snapshot(redis_addr).await;

    // The check burst.
    let burst_window = match &scenario.check_burst {
        Some(burst) => check_burst(&run, &scenario, burst).await,
        None => None,
    };

    let redis_end = run.redis_snapshot(redis_addr).await;
    run.stopping.store(true, Ordering::Relaxed);
    let end = Instant::now();
    let _ = sampler.await;
    if let Some(p) = progress {
        p.abort();
    }
    settle(&run, end);
    *slot.lock() = None;
    let (smscs, push) = sims.stats();
    crate::webhooks::settle(receiver.as_ref(), Duration::from_secs(180)).await;
    let exit = match otpd {
        Some(o) => o.stop().await.map(|s| s.to_string()),
        None => None,
    };
    sims.stop();
    let redis = redis_addr
        .zip(redis_start)
        .zip(redis_drained)
        .map(|((addr, start), drained)| {
            let window = RedisWindow {
                start,
                drained,
                end: redis_end.as_ref().map(|(_, trips)| *trips),
                seconds: drained_at
                    .duration_since(run.m.start)
                    .as_secs_f64()
                    .max(1e-3),
            };
            redis_report(&run, addr, window, redis_server.is_some())
        });
    drop(redis_server);
    let webhooks = receiver.map(crate::webhooks::Receiver::finish);
    run.keep_codes(&options.out)?;

    let report = Report::build(crate::report::Inputs {
        scenario: &scenario,
        m: &run.m,
        arrivals: arrivals_end.duration_since(start),
        drained: drained_at.duration_since(start),
        total: end.duration_since(start),
        burst: burst_window,
        setup: registered.took,
        register_latency: registered.latency,
        register_answers: registered.answers,
        late_deliveries: run.late.load(Ordering::Relaxed),
        smscs,
        push,
        otpd_exit: exit,
        target: options
            .url
            .clone()
            .unwrap_or_else(|| format!("http://{addr} (started by the tool)")),
        store: scenario.otpd.store.clone(),
        redis,
        webhooks,
    });
    report
        .write(&options.out)
        .map_err(|e| RunError::Write(options.out.clone(), e))?;
    Ok(report)
}

/// How long the run's measures cover once set-up is done (their clock starts after
/// it; until then a provisional one): the arrivals, the drain, the check burst.
fn run_length(scenario: &Scenario) -> Duration {
    let burst = scenario
        .check_burst
        .as_ref()
        .map_or(Duration::ZERO, |b| b.duration);
    scenario.duration + scenario.drain + burst + Duration::from_secs(5)
}

/// The webhook receiver of a run with `--webhooks`.
async fn start_receiver(options: &Options) -> Result<Option<crate::webhooks::Receiver>, RunError> {
    if !options.webhooks {
        return Ok(None);
    }
    crate::webhooks::Receiver::start(&options.out)
        .await
        .map(Some)
        .map_err(|e| RunError::Write(options.out.join("webhook-events.jsonl"), e))
}

/// Start otpd for the run (unless the run targets one already running): its
/// configuration written beside the report, its log too.
async fn start_otpd(
    options: &Options,
    effective: &Scenario,
    scenario: &Scenario,
    sims: &Sims,
    additions: &target::Additions,
) -> Result<Option<OtpdProcess>, RunError> {
    if options.url.is_some() {
        return Ok(None);
    }
    let config = target::config(effective, sims.endpoints(), additions);
    let config_file = options.out.join("otpd.toml");
    std::fs::write(&config_file, &config).map_err(|e| RunError::Write(config_file.clone(), e))?;
    // Every run starts on an empty embedded store, not on what a run before left.
    let data = options.out.join(target::DATA_DIR);
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| RunError::Write(data.clone(), e))?;
    }
    let binary = target::otpd_binary(options.otpd.as_deref())?;
    Ok(Some(
        OtpdProcess::start(
            &binary,
            &config_file,
            &options.out.join("otpd.log"),
            scenario.otpd.worker_threads,
            Duration::from_secs(30),
        )
        .await?,
    ))
}

/// The arrivals, on the scenario's schedule, with its events as they fall due;
/// strays are swept from the inbox every ten seconds.
async fn arrive_on_schedule<'a>(
    run: &Arc<Run>,
    scenario: &Scenario,
    sims: &Sims,
    events: &mut std::iter::Peekable<impl Iterator<Item = &'a Event>>,
) {
    let start = run.m.start;
    // Arrivals, on schedule.
    let mut schedule = Schedule::new(&scenario.rate, scenario.duration, scenario.max_requests)
        .enumerate()
        .peekable();
    let mut sweep_at = start + Duration::from_secs(10);
    // The arrivals end with the schedule; later events happen in the drain.
    while let Some(next_arrival) = schedule.peek().map(|(_, at)| start + *at) {
        let next_event = events.peek().map(|e| start + e.at());
        let next = next_event.map_or(next_arrival, |e| e.min(next_arrival));
        if next > Instant::now() {
            tokio::time::sleep_until(next.into()).await;
        }
        let now = Instant::now();
        apply_due(events, sims, start, now);
        while let Some((_, at)) = schedule.peek()
            && start + *at <= now
        {
            let (i, at) = schedule.next().expect("peeked");
            run.arrive(i as u64, start + at);
        }
        if now >= sweep_at {
            let stray = run.inbox.sweep(now, false);
            run.m
                .counters
                .unmatched_deliveries
                .fetch_add(stray, Ordering::Relaxed);
            sweep_at = now + Duration::from_secs(10);
        }
    }
}

/// The check burst: wrong codes for verifications of people who never type
/// theirs, at the burst's rate. Returns when it began (from the run's start) and
/// how long it lasted.
async fn check_burst(
    run: &Arc<Run>,
    scenario: &Scenario,
    burst: &crate::scenario::CheckBurst,
) -> Option<(Duration, Duration)> {
    let pool = run.burst_pool.lock().clone();
    if pool.is_empty() {
        return None;
    }
    let begin = Instant::now();
    let profile = RateProfile::Constant { rate: burst.rate };
    let cap = (burst.rate * burst.duration.as_secs_f64()) as u64 + 1;
    let mut times = Schedule::new(&profile, burst.duration, cap)
        .enumerate()
        .peekable();
    while let Some((_, at)) = times.peek() {
        let due = begin + *at;
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let now = Instant::now();
        while let Some((i, at)) = times.peek().copied()
            && begin + at <= now
        {
            times.next();
            let due = begin + at;
            if run.in_flight.load(Ordering::Relaxed) >= scenario.max_in_flight {
                run.m.count(|c| &c.burst_dropped);
                continue;
            }
            // A wrong code (these people never type theirs), from an address
            // of the population's.
            let id = pool[i % pool.len()].clone();
            let ip = crate::population::address(i as u32);
            let body = serde_json::to_vec(&CheckBody {
                code: "000000",
                ip: &ip,
            })
            .expect("serializes");
            let r = run.clone();
            run.spawn(async move {
                r.call(
                    Op::BurstCheck,
                    due,
                    Method::POST,
                    &format!("/v1/verifications/{id}/check"),
                    Some(body),
                )
                .await;
            });
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while run.tasks.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some((
        begin.duration_since(run.m.start),
        Instant::now().duration_since(begin),
    ))
}

/// Redis's counts at the start of the run, when it drained, and after the burst.
struct RedisWindow {
    start: (crate::redis::CommandStats, u64),
    drained: (crate::redis::CommandStats, u64),
    /// Round trips after the check burst.
    end: Option<u64>,
    /// From the start to the drain.
    seconds: f64,
}

/// What the run cost Redis, per verification and against `redis-benchmark` on the
/// same server.
fn redis_report(
    run: &Run,
    addr: SocketAddr,
    w: RedisWindow,
    started_by_tool: bool,
) -> crate::report::RedisReport {
    let ((start_stats, start_trips), (drained_stats, drained_trips)) = (w.start, w.drained);
    let verifications = run.m.counters.delivered.load(Ordering::Relaxed)
        + run.m.counters.abuse_delivered.load(Ordering::Relaxed);
    let trips = drained_trips.saturating_sub(start_trips);
    let seconds = w.seconds;
    let burst_checks = run.m.latency(Op::BurstCheck).len();
    let burst_trips = w
        .end
        .map(|end| end.saturating_sub(drained_trips))
        .unwrap_or(0);
    // redis-benchmark, as many requests as otpd's round trips, on the same server.
    let bench = crate::redis::benchmark(addr, trips.max(10_000), 32);
    let per = |n: u64| n as f64 / verifications.max(1) as f64;
    crate::report::RedisReport {
        url: format!("redis://{addr}"),
        started_by_tool,
        round_trips_per_verification: per(trips),
        commands_per_verification: per(drained_stats.commands_since(&start_stats)),
        commands_by_name: drained_stats
            .by_command_since(&start_stats)
            .into_iter()
            .map(|(k, v)| (k, per(v)))
            .collect(),
        round_trips_per_second: trips as f64 / seconds,
        round_trips_per_burst_check: (burst_checks > 0)
            .then(|| burst_trips as f64 / burst_checks as f64),
        benchmark_set_per_second: bench,
        ratio_to_benchmark: bench.map(|b| trips as f64 / seconds / b),
    }
}

/// How the set-up went: its length, and the registrations' latencies and answers.
struct SetUp {
    took: Duration,
    latency: hdrhistogram::Histogram<u64>,
    answers: std::collections::BTreeMap<String, u64>,
}

/// Make the run and register its population, then give the run proper a fresh
/// clock of `length`, published in `slot` for the simulators' taps.
async fn set_up(
    scenario: &Scenario,
    addr: SocketAddr,
    planned: u64,
    length: Duration,
    slot: &Mutex<Option<Arc<Run>>>,
    options: &Options,
) -> (Arc<Run>, SetUp) {
    let mut http = Http::new(addr, scenario.connections, scenario.pipeline)
        .with_answer_within(scenario.answer_timeout);
    if options.webhooks || options.client {
        http = http.with_key(target::CLIENT_KEY);
    }
    let abuse = scenario.abuse.as_ref().map(|a| a.numbers.clone());
    let provisional = Measures::new(Instant::now(), Duration::from_secs(1));
    let mut run = Arc::new(Run {
        population: Population::new(&scenario.population, scenario.seed),
        http,
        m: provisional,
        abuse,
        inbox: Inbox::new(),
        in_flight: AtomicUsize::new(0),
        open: AtomicI64::new(0),
        burst_pool: Mutex::new(Vec::new()),
        tasks: AtomicI64::new(0),
        stopping: AtomicBool::new(false),
        late: AtomicU64::new(0),
        codes_seen: (options.webhooks || options.audit).then(Mutex::default),
        scenario: scenario.clone(),
    });
    let setup_started = Instant::now();
    *slot.lock() = Some(run.clone());
    register(&run, planned).await;
    let took = setup_started.elapsed();
    let registered = run.m.counters.registered.load(Ordering::Relaxed);
    let latency = run.m.latency(Op::Register);
    let answers = run.m.answers(Op::Register);
    // The run proper, with its own clock.
    *slot.lock() = None;
    let fresh = Arc::get_mut(&mut run).expect("no task holds the run after set-up");
    fresh.m = Measures::new(Instant::now(), length);
    fresh
        .m
        .counters
        .registered
        .store(registered, Ordering::Relaxed);
    *slot.lock() = Some(run.clone());
    (
        run,
        SetUp {
            took,
            latency,
            answers,
        },
    )
}

/// The scenario as otpd runs it: on the Redis store, the scenario's Redis or one of
/// the tool's own (returned, to stop with the run), and its address to watch.
#[allow(clippy::type_complexity)]
fn redis_for(
    scenario: &Scenario,
    options: &Options,
) -> Result<
    (
        Scenario,
        Option<crate::redis::RedisServer>,
        Option<SocketAddr>,
    ),
    RunError,
> {
    // On the Redis store: the scenario's Redis, or one of the tool's own.
    let mut effective = scenario.clone();
    let redis_server = match (
        &options.url,
        scenario.otpd.store.as_str(),
        &scenario.otpd.redis_url,
    ) {
        (None, "redis", None) => Some(crate::redis::RedisServer::start()?),
        _ => None,
    };
    if let Some(r) = &redis_server {
        effective.otpd.redis_url = Some(r.url());
    }
    let redis_addr = (scenario.otpd.store == "redis")
        .then(|| {
            effective
                .otpd
                .redis_url
                .as_deref()
                .and_then(crate::redis::url_addr)
        })
        .flatten();
    Ok((effective, redis_server, redis_addr))
}

/// At the end: what is still open never got its code (or its check), and what
/// arrived for nobody is counted.
fn settle(run: &Run, end: Instant) {
    // Whatever is still open never got its code (or its check).
    for session in run.inbox.open_sessions() {
        let s = session.state.lock();
        if s.nothing_arrived() && !session.abuse {
            run.m.count(|c| &c.undelivered);
        }
    }
    let stray = run.inbox.sweep(end, true);
    run.m
        .counters
        .unmatched_deliveries
        .fetch_add(stray, Ordering::Relaxed);
}

/// Make the events due by `now` happen, in order.
fn apply_due<'a>(
    events: &mut std::iter::Peekable<impl Iterator<Item = &'a Event>>,
    sims: &Sims,
    start: Instant,
    now: Instant,
) {
    while let Some(e) = events.next_if(|e| start + e.at() <= now) {
        sims.apply(e);
    }
}

/// CPU and memory, once a second, until the run stops.
async fn sample(run: Arc<Run>, pid: Option<u32>, redis_pid: Option<u32>) {
    let mut last_otpd = pid.and_then(|p| target::proc_usage(Some(p)));
    let mut last_tool = target::proc_usage(None);
    let mut last_redis = redis_pid.and_then(|p| target::proc_usage(Some(p)));
    let mut last_at = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while !run.stopping.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = Instant::now();
        let elapsed = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let otpd = pid.and_then(|p| target::proc_usage(Some(p)));
        let tool = target::proc_usage(None);
        let redis = redis_pid.and_then(|p| target::proc_usage(Some(p)));
        let cpu = |now: Option<(f64, u64)>, before: Option<(f64, u64)>| {
            now.zip(before).map(|((a, _), (b, _))| (a - b) / elapsed)
        };
        // The sample describes the second that just ended.
        let at = now - Duration::from_millis(500);
        run.m.sampled(
            at,
            cpu(otpd, last_otpd),
            otpd.map(|(_, rss)| rss),
            cpu(tool, last_tool).unwrap_or(0.0),
            cpu(redis, last_redis),
        );
        last_redis = redis;
        last_otpd = otpd;
        last_tool = tool;
        last_at = now;
    }
}

/// A line to stderr every five seconds.
async fn progress(run: Arc<Run>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let mut last = (0u64, 0u64);
    loop {
        tick.tick().await;
        let c = &run.m.counters;
        let offered = c.offered.load(Ordering::Relaxed);
        let delivered =
            c.delivered.load(Ordering::Relaxed) + c.abuse_delivered.load(Ordering::Relaxed);
        let p99 = run.m.latency(Op::Issue).value_at_quantile(0.99) as f64 / 1000.0;
        eprintln!(
            "{:>5.0}s  offered {:>8}/s  delivered {:>8}/s  issue p99 {:>8.2} ms  in flight {:>6}  open {:>8}",
            run.m.start.elapsed().as_secs_f64(),
            (offered - last.0) / 5,
            (delivered - last.1) / 5,
            p99,
            run.in_flight.load(Ordering::Relaxed),
            run.open.load(Ordering::Relaxed),
        );
        last = (offered, delivered);
    }
}
