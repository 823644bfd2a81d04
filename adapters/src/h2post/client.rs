//! The TCP connection under a [`Session`]: made when a request needs one, made
//! again when it is lost or the server sends it away, and driven by whoever
//! awaits [`Client::next`] — one owner, no task of its own, no future or timer
//! per request.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::session::{Outcome, Post, Session, Target};

/// Where a [`Client`] posts, and its limits.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub host: String,
    pub port: u16,
    /// Path and query of every POST.
    pub path: String,
    pub content_type: String,
    /// One request's limit, from [`Client::post`] to its answer, connecting
    /// included.
    pub timeout: Duration,
    /// Requests open on the connection at once (the server's own limit also
    /// applies); more wait in order.
    pub max_streams: usize,
    /// How long written requests may wait to go out with those that follow
    /// (unless [`FLUSH_AT`] bytes gather first). Under load one write then
    /// carries many requests, and the server reads them and answers them
    /// together: fewer system calls and packets on both sides. Zero: at once.
    pub linger: Duration,
}

/// Bytes waiting to be written that go out at once, linger or not.
pub const FLUSH_AT: usize = 32 * 1024;

type Connecting = Pin<Box<dyn Future<Output = Result<TcpStream, String>> + Send>>;

enum Conn<T> {
    Idle,
    Connecting(Connecting),
    /// Boxed: a session is large, and a client is mostly in this state.
    Up(Box<Live<T>>),
}

struct Live<T> {
    tcp: TcpStream,
    session: Session<T>,
    input: BytesMut,
    /// Since when the output has held bytes not yet written.
    held_since: Option<Instant>,
}

/// HTTP/2 POSTs without TLS (h2c, "prior knowledge") to one URL.
pub struct Client<T> {
    options: ClientOptions,
    target: Target,
    conn: Conn<T>,
    /// Requests waiting for a connection, with their deadlines.
    pending: VecDeque<(T, Post, std::time::Instant)>,
    done: VecDeque<(T, Outcome)>,
    out: usize,
}

/// Reads per turn before the settled requests are handed out.
const READS_PER_TURN: usize = 4;
/// The input buffer grows by this much at a time.
const READ_CHUNK: usize = 64 * 1024;

impl<T: Send + 'static> Client<T> {
    pub fn new(options: ClientOptions) -> Client<T> {
        let authority = if options.host.contains(':') {
            format!("[{}]:{}", options.host, options.port)
        } else {
            format!("{}:{}", options.host, options.port)
        };
        let target = Target {
            authority,
            path: options.path.clone(),
            tls: false,
            content_type: options.content_type.clone(),
        };
        Client {
            options,
            target,
            conn: Conn::Idle,
            pending: VecDeque::new(),
            done: VecDeque::new(),
            out: 0,
        }
    }

    /// Requests made and not yet handed back by [`Client::next`].
    pub fn out(&self) -> usize {
        self.out
    }

    /// Make `post`; its outcome comes back, with `tag`, from [`Client::next`].
    /// Nothing is written until `next` is awaited.
    pub fn post(&mut self, tag: T, post: Post) {
        if self.out == 0 {
            self.look_before_reuse();
        }
        self.out += 1;
        let deadline = (Instant::now() + self.options.timeout).into_std();
        match &mut self.conn {
            Conn::Up(live) if live.session.usable() => live.session.post(tag, post, deadline),
            _ => self.pending.push_back((tag, post, deadline)),
        }
    }

    /// A connection nothing was out on may have been closed meanwhile (servers
    /// close idle ones, with a GOAWAY or without): read what it has before new
    /// requests are put on it, so that they go on a new one instead of failing.
    fn look_before_reuse(&mut self) {
        let Conn::Up(live) = &mut self.conn else {
            return;
        };
        let gone = match live.read() {
            Ok(_) => {
                live.session.broken().is_some() || !live.session.usable() && live.session.drained()
            }
            Err(_) => true,
        };
        if gone {
            end(
                &mut live.session,
                &mut self.pending,
                &mut self.done,
                "closed while idle",
            );
            self.conn = Conn::Idle;
        }
    }

    /// A request settled already, if any; no I/O.
    pub fn ended(&mut self) -> Option<(T, Outcome)> {
        let settled = self.done.pop_front()?;
        self.out -= 1;
        Some(settled)
    }

    /// The next settled request. Pending for ever while none is out. Safe to
    /// drop unfinished (in a `select!`): every bit of state lives in `self`.
    pub async fn next(&mut self) -> (T, Outcome) {
        loop {
            if let Some(settled) = self.ended() {
                return settled;
            }
            self.turn().await;
        }
    }

    /// One step: connect, write, read, or wait for one of them to be possible.
    async fn turn(&mut self) {
        self.expire_pending();
        if !self.done.is_empty() {
            return;
        }
        match &mut self.conn {
            Conn::Idle => {
                if self.pending.is_empty() {
                    return std::future::pending().await;
                }
                let (host, port) = (self.options.host.clone(), self.options.port);
                let limit = self.options.timeout.min(Duration::from_secs(5));
                self.conn = Conn::Connecting(Box::pin(connect(host, port, limit)));
            }
            Conn::Connecting(connecting) => {
                let first = self.pending.front().map(|p| Instant::from_std(p.2));
                let made = tokio::select! {
                    made = connecting => made,
                    () = sleep_until(first) => return,
                };
                match made {
                    Ok(tcp) => {
                        let mut session = Session::new(&self.target, self.options.max_streams);
                        for (tag, post, deadline) in self.pending.drain(..) {
                            session.post(tag, post, deadline);
                        }
                        self.conn = Conn::Up(Box::new(Live {
                            tcp,
                            session,
                            input: BytesMut::with_capacity(READ_CHUNK),
                            held_since: None,
                        }));
                    }
                    Err(e) => {
                        self.conn = Conn::Idle;
                        for (tag, _, _) in self.pending.drain(..) {
                            self.done.push_back((tag, Outcome::Failed(e.clone())));
                        }
                    }
                }
            }
            Conn::Up(_) => self.drive().await,
        }
    }

    /// Requests waiting for a connection past their deadline fail.
    fn expire_pending(&mut self) {
        let now = Instant::now().into_std();
        while self.pending.front().is_some_and(|p| p.2 <= now) {
            let (tag, _, _) = self.pending.pop_front().expect("checked");
            let why = format!(
                "no connection to {} before the deadline",
                self.target.authority
            );
            self.done.push_back((tag, Outcome::Failed(why)));
        }
    }

    /// Move bytes both ways on the live connection, or wait until they can move.
    async fn drive(&mut self) {
        let Conn::Up(live) = &mut self.conn else {
            return;
        };
        let now = Instant::now();
        live.session.expire(now.into_std());
        let held = live.session.output().len();
        let flush_at = match held {
            0 => None,
            _ => Some(*live.held_since.get_or_insert(now) + self.options.linger),
        };
        let flushing = held >= FLUSH_AT || flush_at.is_some_and(|at| at <= now);
        let mut lost = None;
        if flushing {
            lost = write(&live.tcp, live.session.output()).err();
            if live.session.output().is_empty() {
                live.held_since = None;
            }
        }
        let mut read = false;
        if lost.is_none() {
            match live.read() {
                Ok(any) => read = any,
                Err(why) => lost = Some(why),
            }
        }
        let session = &mut live.session;
        settled_into(session, &mut self.done);
        if let Some(why) = lost.or_else(|| session.broken().map(str::to_string)) {
            // Say why (a GOAWAY) if the socket still takes it, then start afresh.
            let _ = write(&live.tcp, session.output());
            end(session, &mut self.pending, &mut self.done, &why);
            tracing::debug!(receiver = %self.target.authority, error = %why, "webhook connection ended");
            self.conn = Conn::Idle;
            return;
        }
        if !session.usable() {
            requeue(&mut self.pending, session.take_waiting());
            if session.drained() {
                let _ = write(&live.tcp, session.output());
                self.conn = Conn::Idle;
                return;
            }
        }
        if read || !self.done.is_empty() {
            return;
        }
        // Wait to write only where a write was tried and the socket was full; a
        // lingering output waits for its time instead.
        let interest = if flushing && !session.output().is_empty() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let lingering = flush_at.filter(|_| !flushing);
        let deadline = session
            .next_deadline()
            .map(Instant::from_std)
            .into_iter()
            .chain(lingering)
            .min();
        tokio::select! {
            ready = live.tcp.ready(interest) => {
                if let Err(e) = ready {
                    let why = format!("the connection failed: {e}");
                    requeue(&mut self.pending, session.lose(&why));
                }
            }
            () = sleep_until(deadline) => {}
        }
    }
}

impl<T> Live<T> {
    /// Read what the socket holds into the session, at most [`READS_PER_TURN`]
    /// reads: whether anything came, or why the connection is gone.
    fn read(&mut self) -> Result<bool, String> {
        let mut any = false;
        for _ in 0..READS_PER_TURN {
            self.input.reserve(READ_CHUNK);
            match self.tcp.try_read_buf(&mut self.input) {
                Ok(0) => return Err("the receiver closed the connection".into()),
                Ok(_) => {
                    any = true;
                    self.session.receive(&mut self.input);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("the connection failed: {e}")),
            }
        }
        Ok(any)
    }
}

/// Hand what `session` has settled to `done`.
fn settled_into<T>(session: &mut Session<T>, done: &mut VecDeque<(T, Outcome)>) {
    while let Some(settled) = session.settled() {
        done.push_back(settled);
    }
}

/// `session`'s connection is gone (`why`): what was open fails, what waited goes
/// back in line for the next connection.
fn end<T>(
    session: &mut Session<T>,
    pending: &mut VecDeque<(T, Post, std::time::Instant)>,
    done: &mut VecDeque<(T, Outcome)>,
    why: &str,
) {
    requeue(pending, session.lose(why));
    settled_into(session, done);
}

/// Put requests back from a connection that is done with them ahead of those
/// made since, which came later and so have later deadlines.
fn requeue<T>(
    pending: &mut VecDeque<(T, Post, std::time::Instant)>,
    back: Vec<(T, Post, std::time::Instant)>,
) {
    for item in back.into_iter().rev() {
        pending.push_front(item);
    }
}

/// Write what `out` holds until the socket would block.
fn write(tcp: &TcpStream, out: &mut BytesMut) -> Result<(), String> {
    while !out.is_empty() {
        match tcp.try_write(out) {
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("the connection failed: {e}")),
        }
    }
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn connect(host: String, port: u16, limit: Duration) -> Result<TcpStream, String> {
    let tcp = tokio::time::timeout(limit, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| format!("cannot connect to {host}:{port} within {limit:?}"))?
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}
