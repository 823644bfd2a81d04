//! The server side of one HTTP/2 connection without TLS (RFC 9113), bytes in and
//! bytes out, no I/O: what the webhook receiver needs to take many small POSTs.
//!
//! The receiver shares the two cores with otpd, and through the `h2` crate it
//! spent more per event than otpd's own delivery did (a request, a header map and
//! a stream handle built per event, a task woken per stream). Here a read of many
//! frames is walked in one pass: header blocks are decoded into one buffer per
//! request, bodies are gathered, and every answer is a single HEADERS frame
//! appended to one output buffer that the caller writes once per read.
//!
//! It is a whole server for what it accepts: SETTINGS, PING, flow control,
//! padding, CONTINUATION, trailers, RST_STREAM and GOAWAY, with a full HPACK
//! decoder (`loona-hpack`: dynamic table and Huffman strings, as the `h2` crate and
//! nghttp2 send them). It never sends a body, so the peer's flow-control windows
//! and frame size do not concern it; its own windows are wide (a stream's is twice
//! the largest body taken, the connection's is handed back in large steps).

use std::collections::HashMap;
use std::ops::Range;

use bytes::{Buf, BytesMut};
use otpd_adapters::h2post::frame::{self, FrameError, Head};
use otpd_adapters::h2post::hpack;

/// The largest body a request may carry; a larger one is answered 413 at once.
pub const MAX_BODY: usize = 1 << 20;
/// A stream's receive window, never handed back: twice the largest body, so a
/// body too large is answered 413 before its sender runs out of window.
const STREAM_WINDOW: usize = 2 * MAX_BODY;
/// Streams open at once.
pub const MAX_STREAMS: usize = 4096;
/// The largest header block (every HEADERS and CONTINUATION fragment together).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The connection's receive window: the peer may have this much DATA unanswered
/// by a WINDOW_UPDATE.
const CONNECTION_WINDOW: u32 = 1 << 30;
/// RFC 9113 §7: the peer exceeds what the server will hold.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
const STREAM_CLOSED: u32 = 0x5;
/// The HPACK table this side keeps (the default of RFC 9113 §6.5.2).
const HEADER_TABLE: usize = 4096;

/// A request whose body has ended.
#[derive(Debug, Default)]
pub struct Request {
    pub stream: u32,
    /// Names and values of every header field, pseudo-fields included, end to end.
    text: Vec<u8>,
    fields: Vec<(Range<usize>, Range<usize>)>,
    pub body: Vec<u8>,
    /// Bytes of DATA (padding included) received, against the stream's window.
    received: usize,
}

impl Request {
    /// The first field named `name` (lower case, as HTTP/2 sends names).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| &self.text[n.clone()] == name)
            .map(|(_, v)| &self.text[v.clone()])
    }

    fn keep(&mut self, name: &[u8], value: &[u8]) {
        let n = self.text.len()..self.text.len() + name.len();
        self.text.extend_from_slice(name);
        let v = self.text.len()..self.text.len() + value.len();
        self.text.extend_from_slice(value);
        self.fields.push((n, v));
    }
}

/// A header block arriving in fragments.
struct Block {
    stream: u32,
    end_stream: bool,
    bytes: Vec<u8>,
}

/// One connection's server state.
pub struct Connection {
    preface_read: bool,
    settings_read: bool,
    decoder: loona_hpack::Decoder<'static>,
    open: HashMap<u32, Request>,
    /// The highest stream the peer has opened; a lower new one is an error.
    highest: u32,
    block: Option<Block>,
    /// DATA received since the last connection WINDOW_UPDATE.
    unacknowledged: u32,
    goaway: bool,
    out: BytesMut,
}

impl Default for Connection {
    fn default() -> Self {
        Connection::new()
    }
}

impl Connection {
    /// A connection whose SETTINGS and first window update are ready to write.
    pub fn new() -> Connection {
        let mut out = BytesMut::with_capacity(4096);
        frame::settings(
            &mut out,
            &[
                (frame::SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW as u32),
                (
                    frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                    MAX_HEADER_BLOCK as u32,
                ),
            ],
        );
        frame::window_update(
            &mut out,
            0,
            CONNECTION_WINDOW - frame::DEFAULT_WINDOW as u32,
        );
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE);
        Connection {
            preface_read: false,
            settings_read: false,
            decoder,
            open: HashMap::new(),
            highest: 0,
            block: None,
            unacknowledged: 0,
            goaway: false,
            out,
        }
    }

    /// What is to be written to the peer; the caller writes it and clears it.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// The peer sent GOAWAY and every stream it opened has ended.
    pub fn finished(&self) -> bool {
        self.goaway && self.open.is_empty()
    }

    /// Streams open (requests whose body has not ended).
    pub fn open_streams(&self) -> usize {
        self.open.len()
    }

    /// Take the whole frames at the start of `input` (leaving a partial one
    /// there), and push each request whose body ended to `done`. On an error the
    /// connection is over: [`Connection::fail`] says so to the peer.
    pub fn receive(
        &mut self,
        input: &mut BytesMut,
        done: &mut Vec<Request>,
    ) -> Result<(), FrameError> {
        if !self.preface_read {
            let n = input.len().min(frame::PREFACE.len());
            if input[..n] != frame::PREFACE[..n] {
                return Err(FrameError::new(
                    frame::PROTOCOL_ERROR,
                    "not the HTTP/2 connection preface (this receiver takes h2c only)",
                ));
            }
            if n < frame::PREFACE.len() {
                return Ok(());
            }
            input.advance(n);
            self.preface_read = true;
        }
        while let Some(head) = Head::read(input) {
            if head.len > frame::DEFAULT_MAX_FRAME {
                return Err(FrameError::new(
                    frame::FRAME_SIZE_ERROR,
                    format!("a frame of {} bytes, over the 16 384 allowed", head.len),
                ));
            }
            if input.len() < frame::HEAD_LEN + head.len {
                input.reserve(frame::HEAD_LEN + head.len - input.len());
                break;
            }
            input.advance(frame::HEAD_LEN);
            let payload = input.split_to(head.len);
            self.frame(head, &payload, done)?;
        }
        Ok(())
    }

    /// Answer `stream` with `status` and no body.
    pub fn answer(&mut self, stream: u32, status: u16) {
        let mut block = Vec::with_capacity(8);
        // RFC 7541 Appendix A: the statuses the static table holds whole.
        let index = match status {
            200 => Some(8),
            204 => Some(9),
            206 => Some(10),
            304 => Some(11),
            400 => Some(12),
            404 => Some(13),
            500 => Some(14),
            _ => None,
        };
        match index {
            Some(i) => hpack::indexed(&mut block, i),
            None => hpack::literal(
                &mut block,
                hpack::Name::Static(8),
                status.to_string().as_bytes(),
                false,
            ),
        }
        frame::headers(
            &mut self.out,
            stream,
            &block,
            true,
            frame::DEFAULT_MAX_FRAME,
        );
    }

    /// Tell the peer why the connection ends.
    pub fn fail(&mut self, error: &FrameError) {
        frame::goaway(
            &mut self.out,
            self.highest,
            error.code,
            error.what.as_bytes(),
        );
    }

    fn frame(
        &mut self,
        head: Head,
        payload: &[u8],
        done: &mut Vec<Request>,
    ) -> Result<(), FrameError> {
        frame::in_order(
            &head,
            self.settings_read,
            self.block.as_ref().map(|b| b.stream),
        )?;
        match head.kind {
            frame::DATA => self.data(head, payload, done),
            frame::HEADERS => {
                let content = frame::content(&head, payload)?;
                self.fragment(head, &payload[content], done)
            }
            frame::CONTINUATION => {
                if self.block.is_none() {
                    return Err(FrameError::new(
                        frame::PROTOCOL_ERROR,
                        "a CONTINUATION frame without a header block",
                    ));
                }
                self.fragment(head, payload, done)
            }
            frame::SETTINGS => self.settings(head, payload),
            frame::PING => {
                exact(&head, 8, true)?;
                if head.flags & frame::ACK == 0 {
                    frame::ping_ack(&mut self.out, payload);
                }
                Ok(())
            }
            frame::RST_STREAM => {
                exact(&head, 4, false)?;
                self.open.remove(&head.stream);
                Ok(())
            }
            frame::GOAWAY => {
                if head.stream != 0 || head.len < 8 {
                    return Err(FrameError::new(
                        frame::PROTOCOL_ERROR,
                        "a malformed GOAWAY frame",
                    ));
                }
                self.goaway = true;
                Ok(())
            }
            // This side sends no DATA, so the peer's window means nothing to it.
            frame::WINDOW_UPDATE => exact(&head, 4, head.stream == 0),
            frame::PRIORITY => exact(&head, 5, false),
            frame::PUSH_PROMISE => Err(FrameError::new(
                frame::PROTOCOL_ERROR,
                "a client sent PUSH_PROMISE",
            )),
            // RFC 9113 §4.1: frames of unknown types are ignored.
            _ => Ok(()),
        }
    }

    fn settings(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        if head.stream != 0 {
            return Err(FrameError::new(
                frame::PROTOCOL_ERROR,
                "SETTINGS on a stream",
            ));
        }
        if head.flags & frame::ACK != 0 {
            return exact(&head, 0, true);
        }
        for (id, value) in frame::settings_values(payload)? {
            let bad = match id {
                frame::SETTINGS_ENABLE_PUSH => value > 1,
                frame::SETTINGS_INITIAL_WINDOW_SIZE => i64::from(value) > frame::MAX_WINDOW,
                frame::SETTINGS_MAX_FRAME_SIZE => !(16_384..=16_777_215).contains(&value),
                _ => false,
            };
            if bad {
                let code = if id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                    frame::FLOW_CONTROL_ERROR
                } else {
                    frame::PROTOCOL_ERROR
                };
                return Err(FrameError::new(
                    code,
                    format!("SETTINGS {id:#x} = {value} is out of range"),
                ));
            }
        }
        self.settings_read = true;
        frame::settings_ack(&mut self.out);
        Ok(())
    }

    fn data(
        &mut self,
        head: Head,
        payload: &[u8],
        done: &mut Vec<Request>,
    ) -> Result<(), FrameError> {
        if head.stream == 0 {
            return Err(FrameError::new(frame::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        // Flow control counts the whole payload, padding included (§6.9.1).
        self.unacknowledged += head.len as u32;
        if self.unacknowledged > CONNECTION_WINDOW {
            return Err(FrameError::new(
                frame::FLOW_CONTROL_ERROR,
                "DATA beyond the connection's window",
            ));
        }
        if self.unacknowledged >= CONNECTION_WINDOW / 2 {
            frame::window_update(&mut self.out, 0, self.unacknowledged);
            self.unacknowledged = 0;
        }
        let content = frame::content(&head, payload)?;
        let Some(request) = self.open.get_mut(&head.stream) else {
            if head.stream > self.highest {
                return Err(FrameError::new(
                    frame::PROTOCOL_ERROR,
                    "DATA on a stream not opened",
                ));
            }
            frame::rst_stream(&mut self.out, head.stream, STREAM_CLOSED);
            return Ok(());
        };
        request.received += head.len;
        if request.received > STREAM_WINDOW {
            return Err(FrameError::new(
                frame::FLOW_CONTROL_ERROR,
                "DATA beyond a stream's window",
            ));
        }
        if request.body.len() + content.len() > MAX_BODY {
            // §8.1: a whole answer before the whole request, and the rest
            // refused without error.
            self.open.remove(&head.stream);
            self.answer(head.stream, 413);
            frame::rst_stream(&mut self.out, head.stream, frame::NO_ERROR);
            return Ok(());
        }
        request.body.extend_from_slice(&payload[content]);
        if head.flags & frame::END_STREAM != 0 {
            done.extend(self.open.remove(&head.stream));
        }
        Ok(())
    }

    /// A HEADERS or CONTINUATION payload: the block so far, decoded once whole.
    fn fragment(
        &mut self,
        head: Head,
        fragment: &[u8],
        done: &mut Vec<Request>,
    ) -> Result<(), FrameError> {
        let mut block = match self.block.take() {
            Some(block) => block,
            None => {
                if head.stream.is_multiple_of(2) {
                    return Err(FrameError::new(
                        frame::PROTOCOL_ERROR,
                        format!("HEADERS on stream {}, not a client's", head.stream),
                    ));
                }
                Block {
                    stream: head.stream,
                    end_stream: head.flags & frame::END_STREAM != 0,
                    bytes: Vec::new(),
                }
            }
        };
        if block.bytes.len() + fragment.len() > MAX_HEADER_BLOCK {
            return Err(FrameError::new(
                ENHANCE_YOUR_CALM,
                format!("a header block over {MAX_HEADER_BLOCK} bytes"),
            ));
        }
        if head.flags & frame::END_HEADERS == 0 {
            block.bytes.extend_from_slice(fragment);
            self.block = Some(block);
            return Ok(());
        }
        if block.bytes.is_empty() {
            self.headers(block.stream, block.end_stream, fragment, done)
        } else {
            block.bytes.extend_from_slice(fragment);
            self.headers(block.stream, block.end_stream, &block.bytes, done)
        }
    }

    /// A whole header block for `stream`: a new request, or a request's trailers.
    fn headers(
        &mut self,
        stream: u32,
        end_stream: bool,
        block: &[u8],
        done: &mut Vec<Request>,
    ) -> Result<(), FrameError> {
        let mut request = Request {
            stream,
            text: Vec::with_capacity(256),
            fields: Vec::with_capacity(12),
            ..Request::default()
        };
        // Every block is decoded, even one refused: the table is the connection's.
        let decoded = self
            .decoder
            .decode_with_cb(block, |name, value| request.keep(&name, &value));
        if let Err(e) = decoded {
            return Err(FrameError::new(
                frame::COMPRESSION_ERROR,
                format!("a header block HPACK cannot read: {e}"),
            ));
        }
        if self.open.contains_key(&stream) {
            if !end_stream {
                return Err(FrameError::new(
                    frame::PROTOCOL_ERROR,
                    "trailers that do not end their stream",
                ));
            }
            done.extend(self.open.remove(&stream));
            return Ok(());
        }
        if stream <= self.highest {
            return Err(FrameError::new(
                frame::PROTOCOL_ERROR,
                format!("HEADERS on stream {stream}, which has ended"),
            ));
        }
        self.highest = stream;
        if self.open.len() >= MAX_STREAMS {
            frame::rst_stream(&mut self.out, stream, frame::REFUSED_STREAM);
        } else if end_stream {
            done.push(request);
        } else {
            self.open.insert(stream, request);
        }
        Ok(())
    }
}

/// A control frame's length must be `len`, and it must be on stream 0
/// (`connection`) or on a stream (not `connection`).
fn exact(head: &Head, len: usize, connection: bool) -> Result<(), FrameError> {
    if (head.stream == 0) != connection {
        return Err(FrameError::new(
            frame::PROTOCOL_ERROR,
            format!(
                "a frame of type {:#x} on the wrong stream ({})",
                head.kind, head.stream
            ),
        ));
    }
    if head.len != len {
        return Err(FrameError::new(
            frame::FRAME_SIZE_ERROR,
            format!(
                "a frame of type {:#x} of {} bytes, not {len}",
                head.kind, head.len
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "h2c_server_tests.rs"]
mod tests;
