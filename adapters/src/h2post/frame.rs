//! HTTP/2 frames (RFC 9113 §4 and §6): those a client that only POSTs writes, and
//! the frame header every frame a server sends starts with.

use bytes::{BufMut, BytesMut};

/// What a client sends first on a connection (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A frame header's length.
pub const HEAD_LEN: usize = 9;
/// The largest frame payload either side may send until told otherwise, and the
/// largest this client accepts.
pub const DEFAULT_MAX_FRAME: usize = 16_384;
/// A flow-control window's limit (2^31 - 1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;
/// Every window's size until SETTINGS or WINDOW_UPDATE change it.
pub const DEFAULT_WINDOW: i64 = 65_535;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

/// SETTINGS parameters (RFC 9113 §6.5.2).
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;

/// An error code's name, for messages.
pub fn error_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "an unknown error code",
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// The header at the start of `buf`, if nine bytes have come. The stream
    /// identifier's reserved bit is ignored, as RFC 9113 §4.1 says.
    pub fn read(buf: &[u8]) -> Option<Head> {
        let b = buf.get(..HEAD_LEN)?;
        Some(Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub fn write(self, out: &mut BytesMut) {
        debug_assert!(self.len < 1 << 24);
        out.put_slice(&(self.len as u32).to_be_bytes()[1..]);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream & 0x7fff_ffff);
    }
}

fn head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    Head {
        len,
        kind,
        flags,
        stream,
    }
    .write(out);
}

/// A SETTINGS frame with `values`.
pub fn settings(out: &mut BytesMut, values: &[(u16, u32)]) {
    head(out, values.len() * 6, SETTINGS, 0, 0);
    for (id, value) in values {
        out.put_u16(*id);
        out.put_u32(*value);
    }
}

pub fn settings_ack(out: &mut BytesMut) {
    head(out, 0, SETTINGS, ACK, 0);
}

pub fn ping_ack(out: &mut BytesMut, opaque: &[u8]) {
    head(out, 8, PING, ACK, 0);
    out.put_slice(opaque);
}

pub fn window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    head(out, 4, WINDOW_UPDATE, 0, stream);
    out.put_u32(increment & 0x7fff_ffff);
}

pub fn rst_stream(out: &mut BytesMut, stream: u32, code: u32) {
    head(out, 4, RST_STREAM, 0, stream);
    out.put_u32(code);
}

pub fn goaway(out: &mut BytesMut, last_stream: u32, code: u32, debug: &[u8]) {
    head(out, 8 + debug.len(), GOAWAY, 0, 0);
    out.put_u32(last_stream & 0x7fff_ffff);
    out.put_u32(code);
    out.put_slice(debug);
}

/// A header block as HEADERS and, where it is larger than `max_frame`,
/// CONTINUATION frames.
pub fn headers(out: &mut BytesMut, stream: u32, block: &[u8], end_stream: bool, max_frame: usize) {
    let mut chunks = block.chunks(max_frame.max(1));
    let first = chunks.next().unwrap_or(&[]);
    let rest = chunks.len();
    let flags = if end_stream { END_STREAM } else { 0 } | if rest == 0 { END_HEADERS } else { 0 };
    head(out, first.len(), HEADERS, flags, stream);
    out.put_slice(first);
    for (i, chunk) in block.chunks(max_frame.max(1)).skip(1).enumerate() {
        let flags = if i + 1 == rest { END_HEADERS } else { 0 };
        head(out, chunk.len(), CONTINUATION, flags, stream);
        out.put_slice(chunk);
    }
}

pub fn data(out: &mut BytesMut, stream: u32, payload: &[u8], end_stream: bool) {
    head(
        out,
        payload.len(),
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
    );
    out.put_slice(payload);
}

/// Why a frame from the server is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct FrameError {
    /// The RFC 9113 error code to close the connection with.
    pub code: u32,
    pub what: String,
}

impl FrameError {
    pub fn new(code: u32, what: impl Into<String>) -> FrameError {
        FrameError {
            code,
            what: what.into(),
        }
    }
}

/// A DATA or HEADERS payload without its padding (and, for HEADERS with the
/// PRIORITY flag, without the priority fields).
pub fn content(head: &Head, payload: &[u8]) -> Result<std::ops::Range<usize>, FrameError> {
    let mut start = 0;
    let mut end = payload.len();
    if head.flags & PADDED != 0 {
        let pad = usize::from(*payload.first().ok_or_else(|| {
            FrameError::new(FRAME_SIZE_ERROR, "a padded frame without its pad length")
        })?);
        start = 1;
        end = end
            .checked_sub(pad)
            .filter(|e| *e >= start)
            .ok_or_else(|| {
                FrameError::new(PROTOCOL_ERROR, "a frame's padding is longer than it")
            })?;
    }
    if head.kind == HEADERS && head.flags & PRIORITY_FLAG != 0 {
        start += 5;
        if start > end {
            return Err(FrameError::new(
                FRAME_SIZE_ERROR,
                "a HEADERS frame too short for its priority fields",
            ));
        }
    }
    Ok(start..end)
}

/// The `(identifier, value)` pairs of a SETTINGS payload.
pub fn settings_values(
    payload: &[u8],
) -> Result<impl Iterator<Item = (u16, u32)> + '_, FrameError> {
    if !payload.len().is_multiple_of(6) {
        return Err(FrameError::new(
            FRAME_SIZE_ERROR,
            format!("a SETTINGS frame of {} bytes", payload.len()),
        ));
    }
    Ok(payload.chunks_exact(6).map(|c| {
        (
            u16::from_be_bytes([c[0], c[1]]),
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
        )
    }))
}

/// The rules of order both ends keep: the peer's first frame is its SETTINGS
/// (RFC 9113 §3.4), and a header block in fragments is followed only by its own
/// CONTINUATION frames (§4.3). `block` is the stream of the block in fragments.
pub fn in_order(head: &Head, settings_seen: bool, block: Option<u32>) -> Result<(), FrameError> {
    if !settings_seen && head.kind != SETTINGS {
        return Err(FrameError::new(
            PROTOCOL_ERROR,
            "the peer's first frame is not SETTINGS",
        ));
    }
    if let Some(stream) = block
        && (head.kind != CONTINUATION || head.stream != stream)
    {
        return Err(FrameError::new(
            PROTOCOL_ERROR,
            "a header block interrupted by another frame",
        ));
    }
    Ok(())
}

/// The whole frames at the start of `bytes`, each with its payload, and how many
/// bytes they take.
pub fn whole_frames(bytes: &[u8]) -> (Vec<(Head, &[u8])>, usize) {
    let mut at = 0;
    let mut all = Vec::new();
    while let Some(h) = Head::read(&bytes[at..]) {
        let start = at + HEAD_LEN;
        let Some(payload) = bytes.get(start..start + h.len) else {
            break;
        };
        all.push((h, payload));
        at = start + h.len;
    }
    (all, at)
}

/// A 4-byte big-endian value at the start of `payload`.
pub fn word(payload: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([
        payload[at],
        payload[at + 1],
        payload[at + 2],
        payload[at + 3],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frames_stop_before_a_partial_one() {
        let mut out = BytesMut::new();
        ping_ack(&mut out, b"12345678");
        window_update(&mut out, 3, 10);
        let whole = out.len();
        settings(&mut out, &[(SETTINGS_ENABLE_PUSH, 0)]);
        let (frames, taken) = whole_frames(&out[..out.len() - 1]);
        assert_eq!(taken, whole);
        let kinds: Vec<_> = frames.iter().map(|(h, p)| (h.kind, p.len())).collect();
        assert_eq!(kinds, [(PING, 8), (WINDOW_UPDATE, 4)]);
        assert_eq!(whole_frames(&out[..5]).1, 0, "not even a header");
    }

    #[test]
    fn a_header_reads_back_as_written() {
        let mut out = BytesMut::new();
        let h = Head {
            len: 70_000,
            kind: HEADERS,
            flags: END_HEADERS | END_STREAM,
            stream: 0x7fff_fffd,
        };
        h.write(&mut out);
        assert_eq!(out.len(), HEAD_LEN);
        assert_eq!(Head::read(&out), Some(h));
        assert_eq!(Head::read(&out[..8]), None);
    }

    #[test]
    fn the_reserved_bit_is_ignored() {
        let b = [0, 0, 4, WINDOW_UPDATE, 0, 0x80, 0, 0, 3];
        assert_eq!(Head::read(&b).map(|h| h.stream), Some(3));
    }

    #[test]
    fn a_large_header_block_goes_on_in_continuation_frames() {
        let block: Vec<u8> = (0..40u8).collect();
        let mut out = BytesMut::new();
        headers(&mut out, 5, &block, true, 16);
        let mut at = 0;
        let mut seen = Vec::new();
        let mut kinds = Vec::new();
        while let Some(h) = Head::read(&out[at..]) {
            kinds.push((h.kind, h.flags, h.stream));
            seen.extend_from_slice(&out[at + HEAD_LEN..at + HEAD_LEN + h.len]);
            at += HEAD_LEN + h.len;
        }
        assert_eq!(seen, block);
        assert_eq!(
            kinds,
            vec![
                (HEADERS, END_STREAM, 5),
                (CONTINUATION, 0, 5),
                (CONTINUATION, END_HEADERS, 5)
            ]
        );
    }

    #[test]
    fn a_small_header_block_is_one_frame() {
        let mut out = BytesMut::new();
        headers(&mut out, 1, b"abc", false, 16_384);
        let h = Head::read(&out).unwrap();
        assert_eq!((h.kind, h.flags, h.len), (HEADERS, END_HEADERS, 3));
    }

    #[test]
    fn padding_and_priority_are_taken_off() {
        let h = Head {
            len: 0,
            kind: HEADERS,
            flags: PADDED | PRIORITY_FLAG,
            stream: 1,
        };
        let payload = [2, 0, 0, 0, 0, 9, b'x', b'y', 0, 0];
        assert_eq!(content(&h, &payload), Ok(6..8));
        assert!(content(&h, &[9, 1, 2]).is_err());
        assert!(content(&h, &[]).is_err());
        let d = Head { kind: DATA, ..h };
        assert_eq!(content(&d, &[1, b'a', 0]), Ok(1..2));
    }

    #[test]
    fn settings_are_read_in_sixes() {
        let mut out = BytesMut::new();
        settings(&mut out, &[(SETTINGS_MAX_FRAME_SIZE, 20_000), (9, 1)]);
        let values: Vec<_> = settings_values(&out[HEAD_LEN..]).unwrap().collect();
        assert_eq!(values, vec![(SETTINGS_MAX_FRAME_SIZE, 20_000), (9, 1)]);
        assert!(settings_values(&[0; 5]).is_err());
    }
}
