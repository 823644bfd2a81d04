//! One HTTP/2 connection's state as a client that only POSTs sees it: bytes from
//! the server in, bytes for the server and finished requests out. No socket, no
//! clock: the caller passes the time and moves the bytes ([`super::client`]).
//!
//! A request waits in order until the server's stream limit has room, is written
//! as HEADERS and DATA within the server's flow-control windows, and ends with the
//! `:status` of the server's answer, a reset, a lost connection or its deadline.
//! Answers are settled as soon as their status is known; a body that follows is
//! read and dropped. A request the server cannot have acted on (REFUSED_STREAM, or
//! above a GOAWAY's last stream) waits for the next connection instead, once.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{self, FrameError, Head};
use super::hpack::{self, Name};

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with this status (after any 1xx).
    Answered(u16),
    /// No usable answer: reset, connection lost, deadline passed. As text, for logs.
    Failed(String),
}

/// One POST: its own header fields, already encoded, and its body.
#[derive(Debug, Clone)]
pub struct Post {
    fields: Vec<u8>,
    body: Bytes,
    /// Already sent once where the server could not act on it.
    retried: bool,
}

impl Post {
    pub fn new(body: Bytes) -> Post {
        Post {
            fields: Vec::with_capacity(160),
            body,
            retried: false,
        }
    }

    /// A header field (`name` in lower case, as HTTP/2 requires).
    pub fn header(mut self, name: &str, value: &[u8]) -> Post {
        debug_assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
        hpack::literal(&mut self.fields, Name::New(name.as_bytes()), value, false);
        self
    }

    /// A header field no intermediary may keep in its table (a signature).
    pub fn secret_header(mut self, name: &str, value: &[u8]) -> Post {
        debug_assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
        hpack::literal(&mut self.fields, Name::New(name.as_bytes()), value, true);
        self
    }
}

/// Where every request of a session goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` as `:authority`.
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// Whether the connection is TLS (`:scheme https`).
    pub tls: bool,
    pub content_type: String,
}

struct Waiting<T> {
    tag: T,
    post: Post,
    deadline: Instant,
}

struct Stream<T> {
    /// `None` once settled (answered, or reset by us on its deadline).
    tag: Option<(T, Post)>,
    /// What of the body is not yet sent.
    unsent: Bytes,
    send_window: i64,
    recv_window: i64,
    deadline: Instant,
    /// A non-1xx status has come.
    answered: bool,
}

/// A header block being read (HEADERS then CONTINUATION frames).
struct Block {
    stream: u32,
    end_stream: bool,
    bytes: Vec<u8>,
}

/// The client's SETTINGS: no push, no HPACK table, the default stream window (an
/// answer body above it is a server's flow-control error).
const OUR_SETTINGS: [(u16, u32); 3] = [
    (frame::SETTINGS_ENABLE_PUSH, 0),
    (frame::SETTINGS_HEADER_TABLE_SIZE, 0),
    (frame::SETTINGS_MAX_HEADER_LIST_SIZE, MAX_BLOCK as u32),
];
/// The connection's receive window, raised at once so that answer bodies never
/// stall the connection.
const CONN_WINDOW: i64 = 1 << 24;
/// A header block larger than this ends the connection.
const MAX_BLOCK: usize = 64 * 1024;
/// The largest stream identifier.
const LAST_ID: u32 = (1 << 31) - 1;

pub struct Session<T> {
    prefix: Vec<u8>,
    out: BytesMut,
    streams: HashMap<u32, Stream<T>>,
    waiting: VecDeque<Waiting<T>>,
    /// Streams with body left to send, oldest first.
    blocked: VecDeque<u32>,
    /// Open streams by deadline (all requests have the same timeout, so this is
    /// also the order they were made in).
    deadlines: VecDeque<(Instant, u32)>,
    done: VecDeque<(T, Outcome)>,
    /// Requests to be made again on the next connection.
    again: Vec<Waiting<T>>,
    next_id: u32,
    /// The header block being read.
    block: Option<Block>,
    got_settings: bool,
    send_window: i64,
    peer_stream_window: i64,
    peer_max_frame: usize,
    peer_max_streams: usize,
    max_streams: usize,
    recv_window: i64,
    recv_unacked: i64,
    /// The server's GOAWAY: no new streams.
    going_away: bool,
    /// Why the connection cannot go on, if it cannot.
    broken: Option<String>,
}

impl<T> Session<T> {
    /// A session whose first bytes (the preface and SETTINGS) are ready in
    /// [`Session::output`]; at most `max_streams` open at once, whatever the server
    /// allows.
    pub fn new(target: &Target, max_streams: usize) -> Session<T> {
        let mut prefix = Vec::with_capacity(64);
        hpack::indexed(&mut prefix, hpack::METHOD_POST);
        hpack::indexed(
            &mut prefix,
            if target.tls {
                hpack::SCHEME_HTTPS
            } else {
                hpack::SCHEME_HTTP
            },
        );
        let fixed = [
            (hpack::AUTHORITY, target.authority.as_bytes()),
            (hpack::PATH, target.path.as_bytes()),
            (hpack::CONTENT_TYPE, target.content_type.as_bytes()),
        ];
        for (index, value) in fixed {
            hpack::literal(&mut prefix, Name::Static(index), value, false);
        }
        let mut out = BytesMut::with_capacity(64 * 1024);
        out.extend_from_slice(frame::PREFACE);
        frame::settings(&mut out, &OUR_SETTINGS);
        frame::window_update(&mut out, 0, (CONN_WINDOW - frame::DEFAULT_WINDOW) as u32);
        Session {
            prefix,
            out,
            streams: HashMap::new(),
            waiting: VecDeque::new(),
            blocked: VecDeque::new(),
            deadlines: VecDeque::new(),
            done: VecDeque::new(),
            again: Vec::new(),
            next_id: 1,
            block: None,
            got_settings: false,
            send_window: frame::DEFAULT_WINDOW,
            peer_stream_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            peer_max_streams: usize::MAX,
            max_streams: max_streams.max(1),
            recv_window: CONN_WINDOW,
            recv_unacked: 0,
            going_away: false,
            broken: None,
        }
    }

    /// Make `post`, to be settled by `deadline`.
    pub fn post(&mut self, tag: T, post: Post, deadline: Instant) {
        self.waiting.push_back(Waiting {
            tag,
            post,
            deadline,
        });
        self.start();
    }

    /// Bytes to write to the server; the caller takes what it writes.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// A settled request.
    pub fn settled(&mut self) -> Option<(T, Outcome)> {
        self.done.pop_front()
    }

    /// Whether new requests can still start here.
    pub fn usable(&self) -> bool {
        self.broken.is_none() && !self.going_away && self.next_id < LAST_ID
    }

    /// Whether nothing is open any more (a session no longer usable can then be
    /// dropped, its waiting requests moved to the next).
    pub fn drained(&self) -> bool {
        self.streams.is_empty() || self.broken.is_some()
    }

    /// Why the connection is broken, if it is: the caller writes what is left of
    /// the output (a GOAWAY) and closes it.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The earliest deadline of a request here.
    pub fn next_deadline(&self) -> Option<Instant> {
        let waiting = self.waiting.front().map(|w| w.deadline);
        let open = self.deadlines.front().map(|d| d.0);
        waiting.into_iter().chain(open).min()
    }

    /// Settle what has passed its deadline: a waiting request fails, an open one
    /// is reset (CANCEL) and fails.
    pub fn expire(&mut self, now: Instant) {
        while self.waiting.front().is_some_and(|w| w.deadline <= now) {
            let w = self.waiting.pop_front().expect("checked");
            self.done.push_back((
                w.tag,
                Outcome::Failed("no stream free before the deadline".into()),
            ));
        }
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(stream) = self.streams.remove(&id) {
                frame::rst_stream(&mut self.out, id, frame::CANCEL);
                if let Some((tag, _)) = stream.tag {
                    self.done
                        .push_back((tag, Outcome::Failed("no answer before the deadline".into())));
                }
            }
        }
        self.start();
    }

    /// The connection is gone (`why`): what was open fails, since the server may
    /// have acted on it; what was waiting is handed back for the next connection.
    pub fn lose(&mut self, why: &str) -> Vec<(T, Post, Instant)> {
        for (_, stream) in self.streams.drain() {
            if let Some((tag, _)) = stream.tag {
                self.done.push_back((tag, Outcome::Failed(why.to_string())));
            }
        }
        self.deadlines.clear();
        self.blocked.clear();
        self.broken.get_or_insert_with(|| why.to_string());
        self.take_waiting()
    }

    /// Requests this session will not make (it is no longer usable), for the
    /// next connection.
    pub fn take_waiting(&mut self) -> Vec<(T, Post, Instant)> {
        self.again
            .drain(..)
            .chain(self.waiting.drain(..))
            .map(|w| (w.tag, w.post, w.deadline))
            .collect()
    }

    /// Read every whole frame at the start of `input` (and take it off).
    pub fn receive(&mut self, input: &mut BytesMut) {
        while self.broken.is_none() {
            let Some(head) = Head::read(input) else { break };
            if head.len > frame::DEFAULT_MAX_FRAME {
                self.fail(FrameError::new(
                    frame::FRAME_SIZE_ERROR,
                    format!("a frame of {} bytes, above the 16384 allowed", head.len),
                ));
                break;
            }
            if input.len() < frame::HEAD_LEN + head.len {
                input.reserve(frame::HEAD_LEN + head.len - input.len());
                break;
            }
            input.advance(frame::HEAD_LEN);
            let payload = input.split_to(head.len);
            if let Err(e) = self.frame(head, &payload) {
                self.fail(e);
            }
        }
        self.start();
    }

    fn fail(&mut self, e: FrameError) {
        // The last stream the server opened that was processed: none, since a
        // client that disabled push accepts no stream from the server.
        frame::goaway(&mut self.out, 0, e.code, b"");
        self.broken = Some(format!(
            "the receiver broke HTTP/2 ({}): {}",
            frame::error_name(e.code),
            e.what
        ));
    }

    fn frame(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        frame::in_order(
            &head,
            self.got_settings,
            self.block.as_ref().map(|b| b.stream),
        )?;
        let needs_stream = matches!(
            head.kind,
            frame::DATA
                | frame::HEADERS
                | frame::RST_STREAM
                | frame::CONTINUATION
                | frame::PRIORITY
        );
        if needs_stream && head.stream == 0 {
            return Err(FrameError::new(
                frame::PROTOCOL_ERROR,
                "a stream's frame on stream 0",
            ));
        }
        if matches!(head.kind, frame::SETTINGS | frame::PING | frame::GOAWAY) && head.stream != 0 {
            return Err(FrameError::new(
                frame::PROTOCOL_ERROR,
                "a connection's frame on a stream",
            ));
        }
        if needs_stream
            && head.kind != frame::PRIORITY
            && (head.stream.is_multiple_of(2) || head.stream >= self.next_id)
        {
            return Err(FrameError::new(
                frame::PROTOCOL_ERROR,
                format!(
                    "a frame on stream {}, which the client did not open",
                    head.stream
                ),
            ));
        }
        match head.kind {
            frame::DATA => self.data(head, payload),
            frame::HEADERS => {
                let range = frame::content(&head, payload)?;
                self.block = Some(Block {
                    stream: head.stream,
                    end_stream: head.flags & frame::END_STREAM != 0,
                    bytes: payload[range].to_vec(),
                });
                self.continuation(head, &[])
            }
            frame::CONTINUATION => {
                if self.block.is_none() {
                    return Err(FrameError::new(
                        frame::PROTOCOL_ERROR,
                        "a CONTINUATION frame without a header block",
                    ));
                }
                self.continuation(head, payload)
            }
            frame::PRIORITY if payload.len() != 5 => Err(FrameError::new(
                frame::FRAME_SIZE_ERROR,
                "a PRIORITY frame not of 5 bytes",
            )),
            frame::RST_STREAM => self.reset(head, payload),
            frame::SETTINGS => self.settings(head, payload),
            frame::PUSH_PROMISE => Err(FrameError::new(
                frame::PROTOCOL_ERROR,
                "a PUSH_PROMISE, though the client disabled push",
            )),
            frame::PING => {
                if payload.len() != 8 {
                    return Err(FrameError::new(
                        frame::FRAME_SIZE_ERROR,
                        "a PING not of 8 bytes",
                    ));
                }
                if head.flags & frame::ACK == 0 {
                    frame::ping_ack(&mut self.out, payload);
                }
                Ok(())
            }
            frame::GOAWAY => self.goaway(payload),
            frame::WINDOW_UPDATE => self.window_update(head, payload),
            // PRIORITY is advice; unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn settings(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        if head.flags & frame::ACK != 0 {
            if !payload.is_empty() {
                return Err(FrameError::new(
                    frame::FRAME_SIZE_ERROR,
                    "a SETTINGS ACK with a payload",
                ));
            }
            return Ok(());
        }
        self.got_settings = true;
        for (id, value) in frame::settings_values(payload)? {
            match id {
                frame::SETTINGS_MAX_CONCURRENT_STREAMS => self.peer_max_streams = value as usize,
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(FrameError::new(
                            frame::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    let delta = value - self.peer_stream_window;
                    self.peer_stream_window = value;
                    for stream in self.streams.values_mut() {
                        stream.send_window += delta;
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(FrameError::new(
                            frame::PROTOCOL_ERROR,
                            format!("SETTINGS_MAX_FRAME_SIZE of {value}"),
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                frame::SETTINGS_ENABLE_PUSH if value > 1 => {
                    return Err(FrameError::new(
                        frame::PROTOCOL_ERROR,
                        format!("SETTINGS_ENABLE_PUSH of {value}"),
                    ));
                }
                // The header table size only bounds an encoder that indexes; this
                // one never does. Unknown settings are ignored (§6.5.2).
                _ => {}
            }
        }
        frame::settings_ack(&mut self.out);
        self.pump();
        Ok(())
    }

    fn window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        if payload.len() != 4 {
            return Err(FrameError::new(
                frame::FRAME_SIZE_ERROR,
                "a WINDOW_UPDATE not of 4 bytes",
            ));
        }
        let increment = i64::from(frame::word(payload, 0) & 0x7fff_ffff);
        if head.stream == 0 {
            if increment == 0 {
                return Err(FrameError::new(
                    frame::PROTOCOL_ERROR,
                    "a WINDOW_UPDATE of 0",
                ));
            }
            self.send_window += increment;
            if self.send_window > frame::MAX_WINDOW {
                return Err(FrameError::new(
                    frame::FLOW_CONTROL_ERROR,
                    "a window above 2^31-1",
                ));
            }
        } else if let Some(stream) = self.streams.get_mut(&head.stream) {
            stream.send_window += increment;
            if increment == 0 || stream.send_window > frame::MAX_WINDOW {
                let why = if increment == 0 {
                    "a stream WINDOW_UPDATE of 0"
                } else {
                    "a stream window above 2^31-1"
                };
                self.reset_stream(head.stream, frame::PROTOCOL_ERROR, why);
            }
        }
        self.pump();
        Ok(())
    }

    fn goaway(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        if payload.len() < 8 {
            return Err(FrameError::new(
                frame::FRAME_SIZE_ERROR,
                "a GOAWAY under 8 bytes",
            ));
        }
        let last = frame::word(payload, 0) & 0x7fff_ffff;
        let code = frame::word(payload, 4);
        self.going_away = true;
        // RFC 9113 §6.8: streams above `last` were not processed; make them again
        // on another connection.
        let mut above: Vec<u32> = self
            .streams
            .keys()
            .copied()
            .filter(|id| *id > last)
            .collect();
        // In the order they were made (stream ids grow), not the map's.
        above.sort_unstable();
        for id in above {
            let stream = self.streams.remove(&id).expect("listed");
            self.unprocessed(
                stream,
                &format!("the receiver went away ({})", frame::error_name(code)),
            );
        }
        Ok(())
    }

    fn reset(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        if payload.len() != 4 {
            return Err(FrameError::new(
                frame::FRAME_SIZE_ERROR,
                "an RST_STREAM not of 4 bytes",
            ));
        }
        let code = frame::word(payload, 0);
        if let Some(stream) = self.streams.remove(&head.stream) {
            let why = format!(
                "the receiver reset the stream ({})",
                frame::error_name(code)
            );
            if code == frame::REFUSED_STREAM {
                self.unprocessed(stream, &why);
            } else if let Some((tag, _)) = stream.tag {
                self.done.push_back((tag, Outcome::Failed(why)));
            }
        }
        Ok(())
    }

    /// A stream the server did not act on: made again on the next connection,
    /// once; a second time, it fails.
    fn unprocessed(&mut self, stream: Stream<T>, why: &str) {
        let Some((tag, mut post)) = stream.tag else {
            return;
        };
        if post.retried {
            self.done.push_back((tag, Outcome::Failed(why.to_string())));
        } else {
            post.retried = true;
            self.again.push(Waiting {
                tag,
                post,
                deadline: stream.deadline,
            });
        }
    }

    fn data(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        let len = payload.len() as i64;
        self.recv_window -= len;
        if self.recv_window < 0 {
            return Err(FrameError::new(
                frame::FLOW_CONTROL_ERROR,
                "DATA beyond the connection's window",
            ));
        }
        self.recv_unacked += len;
        if self.recv_unacked >= CONN_WINDOW / 2 {
            frame::window_update(&mut self.out, 0, self.recv_unacked as u32);
            self.recv_window += self.recv_unacked;
            self.recv_unacked = 0;
        }
        frame::content(&head, payload)?;
        let Some(stream) = self.streams.get_mut(&head.stream) else {
            return Ok(());
        };
        stream.recv_window -= len;
        if stream.recv_window < 0 {
            self.reset_stream(
                head.stream,
                frame::FLOW_CONTROL_ERROR,
                "an answer body beyond its window",
            );
        } else if !stream.answered {
            self.reset_stream(
                head.stream,
                frame::PROTOCOL_ERROR,
                "an answer body before its status",
            );
        } else if head.flags & frame::END_STREAM != 0 {
            self.streams.remove(&head.stream);
        }
        Ok(())
    }

    fn continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        let block = self.block.as_mut().expect("checked by the caller");
        if block.bytes.len() + payload.len() > MAX_BLOCK {
            return Err(FrameError::new(
                frame::PROTOCOL_ERROR,
                format!("a header block above {MAX_BLOCK} bytes"),
            ));
        }
        block.bytes.extend_from_slice(payload);
        if head.flags & frame::END_HEADERS == 0 {
            return Ok(());
        }
        let block = self.block.take().expect("checked");
        let status = hpack::status(&block.bytes)
            .map_err(|e| FrameError::new(frame::COMPRESSION_ERROR, e.to_string()))?;
        let id = block.stream;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        match status {
            _ if stream.answered => {
                // Trailers.
                if !block.end_stream {
                    self.reset_stream(id, frame::PROTOCOL_ERROR, "trailers without END_STREAM");
                    return Ok(());
                }
            }
            Some(s) if (100..200).contains(&s) && !block.end_stream => return Ok(()),
            Some(s) if (200..600).contains(&s) && s != 101 => {
                stream.answered = true;
                if let Some((tag, _)) = stream.tag.take() {
                    self.done.push_back((tag, Outcome::Answered(s)));
                }
            }
            Some(s) => {
                self.reset_stream(
                    id,
                    frame::PROTOCOL_ERROR,
                    &format!("an answer with status {s}"),
                );
                return Ok(());
            }
            None => {
                self.reset_stream(id, frame::PROTOCOL_ERROR, "an answer without :status");
                return Ok(());
            }
        }
        if block.end_stream {
            self.streams.remove(&id);
        }
        Ok(())
    }

    /// End stream `id` from our side with `code`; an unsettled request fails.
    fn reset_stream(&mut self, id: u32, code: u32, why: &str) {
        frame::rst_stream(&mut self.out, id, code);
        if let Some(stream) = self.streams.remove(&id)
            && let Some((tag, _)) = stream.tag
        {
            self.done.push_back((
                tag,
                Outcome::Failed(format!("the receiver broke HTTP/2: {why}")),
            ));
        }
    }

    /// Open streams for waiting requests while the limits allow.
    fn start(&mut self) {
        if !self.again.is_empty() && self.usable() {
            // Refused on this connection but it is still good (REFUSED_STREAM):
            // first in line again.
            for w in self.again.drain(..).rev() {
                self.waiting.push_front(w);
            }
        }
        let limit = self.max_streams.min(self.peer_max_streams);
        while self.usable() && self.streams.len() < limit {
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            let id = self.next_id;
            self.next_id += 2;
            let mut block = Vec::with_capacity(self.prefix.len() + w.post.fields.len() + 8);
            block.extend_from_slice(&self.prefix);
            let mut digits = [0u8; 20];
            hpack::literal(
                &mut block,
                Name::Static(hpack::CONTENT_LENGTH),
                decimal(w.post.body.len(), &mut digits),
                false,
            );
            block.extend_from_slice(&w.post.fields);
            frame::headers(
                &mut self.out,
                id,
                &block,
                w.post.body.is_empty(),
                self.peer_max_frame,
            );
            let unsent = w.post.body.clone();
            self.streams.insert(
                id,
                Stream {
                    tag: Some((w.tag, w.post)),
                    unsent,
                    send_window: self.peer_stream_window,
                    recv_window: frame::DEFAULT_WINDOW,
                    deadline: w.deadline,
                    answered: false,
                },
            );
            self.deadlines.push_back((w.deadline, id));
            if !self.streams[&id].unsent.is_empty() {
                self.blocked.push_back(id);
            }
        }
        self.pump();
    }

    /// Send what bodies the windows allow, oldest stream first.
    fn pump(&mut self) {
        while let Some(&id) = self.blocked.front() {
            let Some(stream) = self.streams.get_mut(&id) else {
                self.blocked.pop_front();
                continue;
            };
            while !stream.unsent.is_empty() {
                let room = self
                    .send_window
                    .min(stream.send_window)
                    .min(self.peer_max_frame as i64);
                if room <= 0 {
                    return;
                }
                let n = stream.unsent.len().min(room as usize);
                let chunk = stream.unsent.split_to(n);
                frame::data(&mut self.out, id, &chunk, stream.unsent.is_empty());
                self.send_window -= n as i64;
                stream.send_window -= n as i64;
            }
            self.blocked.pop_front();
        }
    }
}

/// `n` in decimal, in `buf`.
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
