//! The server connection driven frame by frame, as a client's bytes would come.

use bytes::{BufMut, BytesMut};
use otpd_adapters::h2post::frame::{self, Head};
use otpd_adapters::h2post::hpack;

use super::*;

/// The frames in `bytes`, which hold whole frames only.
fn frames(bytes: &[u8]) -> Vec<(Head, Vec<u8>)> {
    let (all, taken) = frame::whole_frames(bytes);
    assert_eq!(taken, bytes.len(), "whole frames");
    all.into_iter().map(|(h, p)| (h, p.to_vec())).collect()
}

fn written(c: &mut Connection) -> Vec<(Head, Vec<u8>)> {
    let out = c.output().split();
    frames(&out)
}

/// A connection past the preface and the client's SETTINGS, its own output read.
fn ready() -> Connection {
    let mut c = Connection::new();
    let mut input = BytesMut::from(frame::PREFACE);
    frame::settings(&mut input, &[(frame::SETTINGS_ENABLE_PUSH, 0)]);
    c.receive(&mut input, &mut Vec::new()).unwrap();
    assert!(input.is_empty());
    c.output().clear();
    c
}

/// A POST's header block to `path`, literals only.
fn block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    hpack::indexed(&mut b, hpack::METHOD_POST);
    hpack::indexed(&mut b, hpack::SCHEME_HTTP);
    hpack::literal(
        &mut b,
        hpack::Name::Static(hpack::AUTHORITY),
        b"127.0.0.1",
        false,
    );
    hpack::literal(
        &mut b,
        hpack::Name::Static(hpack::PATH),
        path.as_bytes(),
        false,
    );
    for (n, v) in extra {
        hpack::literal(&mut b, hpack::Name::New(n.as_bytes()), v.as_bytes(), true);
    }
    b
}

fn feed(c: &mut Connection, input: BytesMut) -> Result<Vec<Request>, FrameError> {
    let mut input = input;
    let mut done = Vec::new();
    c.receive(&mut input, &mut done)?;
    assert!(input.is_empty(), "every frame taken");
    Ok(done)
}

fn error(c: &mut Connection, input: BytesMut) -> FrameError {
    feed(c, input).expect_err("a connection error")
}

#[test]
fn it_opens_with_its_settings_and_a_wide_window_and_acknowledges_the_clients() {
    let mut c = Connection::new();
    let opening = written(&mut c);
    assert_eq!(opening[0].0.kind, frame::SETTINGS);
    let values: Vec<_> = frame::settings_values(&opening[0].1).unwrap().collect();
    assert!(values.contains(&(frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW as u32)));
    assert!(values.contains(&(frame::SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32)));
    assert_eq!(opening[1].0.kind, frame::WINDOW_UPDATE);
    assert_eq!(opening[1].0.stream, 0);

    // The preface may come a few bytes at a time.
    let mut input = BytesMut::from(&frame::PREFACE[..10]);
    c.receive(&mut input, &mut Vec::new()).unwrap();
    assert_eq!(input.len(), 10, "nothing taken before the whole preface");
    input.put_slice(&frame::PREFACE[10..]);
    frame::settings(&mut input, &[(frame::SETTINGS_MAX_FRAME_SIZE, 32_768)]);
    c.receive(&mut input, &mut Vec::new()).unwrap();
    let acks = written(&mut c);
    assert_eq!(acks.len(), 1);
    assert_eq!(
        (acks[0].0.kind, acks[0].0.flags),
        (frame::SETTINGS, frame::ACK)
    );
}

#[test]
fn a_request_in_fragments_with_padding_is_taken_whole_and_answered_204() {
    let mut c = ready();
    let b = block("/hook", &[("webhook-id", "msg_1")]);
    let mut input = BytesMut::new();
    // HEADERS padded and with priority fields, then a CONTINUATION.
    let (first, rest) = b.split_at(5);
    Head {
        len: 1 + 5 + first.len() + 3,
        kind: frame::HEADERS,
        flags: frame::PADDED | frame::PRIORITY_FLAG,
        stream: 1,
    }
    .write(&mut input);
    input.put_u8(3);
    input.put_slice(&[0, 0, 0, 0, 16]);
    input.put_slice(first);
    input.put_slice(&[0, 0, 0]);
    Head {
        len: rest.len(),
        kind: frame::CONTINUATION,
        flags: frame::END_HEADERS,
        stream: 1,
    }
    .write(&mut input);
    input.put_slice(rest);
    frame::data(&mut input, 1, b"{\"type\":", false);
    // The last DATA padded, and cut in two reads.
    let mut last = BytesMut::new();
    Head {
        len: 1 + 6 + 2,
        kind: frame::DATA,
        flags: frame::PADDED | frame::END_STREAM,
        stream: 1,
    }
    .write(&mut last);
    last.put_u8(2);
    last.put_slice(b"\"x\"}\n\n");
    last.put_slice(&[0, 0]);
    input.put_slice(&last[..7]);
    let mut done = Vec::new();
    c.receive(&mut input, &mut done).unwrap();
    assert!(done.is_empty(), "the body has not ended");
    assert_eq!(input.len(), 7, "a partial frame is left for the next read");
    input.put_slice(&last[7..]);
    c.receive(&mut input, &mut done).unwrap();
    assert_eq!(done.len(), 1);
    let r = &done[0];
    assert_eq!(r.stream, 1);
    assert_eq!(r.header(b":method"), Some(b"POST".as_slice()));
    assert_eq!(r.header(b":path"), Some(b"/hook".as_slice()));
    assert_eq!(r.header(b"webhook-id"), Some(b"msg_1".as_slice()));
    assert_eq!(r.header(b"webhook-timestamp"), None);
    assert_eq!(r.body, b"{\"type\":\"x\"}\n\n");

    c.answer(1, 204);
    c.answer(1, 413);
    let answers = written(&mut c);
    assert_eq!(answers[0].0.kind, frame::HEADERS);
    assert_eq!(
        answers[0].0.flags,
        frame::END_HEADERS | frame::END_STREAM,
        "an answer without a body"
    );
    assert_eq!(answers[0].1, [0x89], ":status 204 from the static table");
    let mut decoder = loona_hpack::Decoder::new();
    let decoded = decoder.decode(&answers[1].1).unwrap();
    assert_eq!(decoded, [(b":status".to_vec(), b"413".to_vec())]);
}

#[test]
fn a_request_without_a_body_and_one_with_trailers_are_taken() {
    let mut c = ready();
    let mut input = BytesMut::new();
    frame::headers(&mut input, 1, &block("/a", &[]), true, 16_384);
    frame::headers(&mut input, 3, &block("/b", &[]), false, 16_384);
    frame::data(&mut input, 3, b"body", false);
    frame::headers(&mut input, 3, &block("/ignored", &[]), true, 16_384);
    let done = feed(&mut c, input).unwrap();
    let taken: Vec<_> = done.iter().map(|r| (r.stream, r.body.len())).collect();
    assert_eq!(taken, [(1, 0), (3, 4)]);
    assert_eq!(done[1].header(b":path"), Some(b"/b".as_slice()));
    assert_eq!(c.open_streams(), 0);
}

#[test]
fn pings_are_answered_and_window_updates_and_priorities_ignored() {
    let mut c = ready();
    let mut input = BytesMut::new();
    Head {
        len: 8,
        kind: frame::PING,
        flags: 0,
        stream: 0,
    }
    .write(&mut input);
    input.put_slice(b"12345678");
    frame::window_update(&mut input, 0, 1000);
    frame::window_update(&mut input, 7, 1000);
    Head {
        len: 5,
        kind: frame::PRIORITY,
        flags: 0,
        stream: 9,
    }
    .write(&mut input);
    input.put_slice(&[0, 0, 0, 1, 7]);
    // A frame of a type RFC 9113 does not define.
    Head {
        len: 2,
        kind: 0xfa,
        flags: 0,
        stream: 0,
    }
    .write(&mut input);
    input.put_slice(b"??");
    feed(&mut c, input).unwrap();
    let out = written(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.kind, out[0].0.flags), (frame::PING, frame::ACK));
    assert_eq!(out[0].1, b"12345678");
}

#[test]
fn the_connection_window_is_handed_back_in_large_steps() {
    let mut c = ready();
    let mut input = BytesMut::new();
    let chunk = vec![b'x'; 16_384];
    let mut stream = 1;
    let mut sent = 0usize;
    // Requests of 1 MiB until half the connection's window.
    while sent < (CONNECTION_WINDOW / 2) as usize {
        frame::headers(&mut input, stream, &block("/hook", &[]), false, 16_384);
        for i in 0..64 {
            frame::data(&mut input, stream, &chunk, i == 63);
        }
        let done = feed(&mut c, input.split()).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].body.len(), MAX_BODY);
        sent += MAX_BODY;
        stream += 2;
        let updates: Vec<_> = written(&mut c)
            .into_iter()
            .filter(|(h, _)| h.kind == frame::WINDOW_UPDATE)
            .collect();
        if sent < (CONNECTION_WINDOW / 2) as usize {
            assert!(updates.is_empty(), "no update after {sent} bytes");
        } else {
            assert_eq!(updates.len(), 1);
            assert_eq!(updates[0].0.stream, 0);
            assert_eq!(frame::word(&updates[0].1, 0) as usize, sent);
        }
    }
}

#[test]
fn a_body_over_the_limit_is_answered_413_and_its_stream_reset_without_error() {
    let mut c = ready();
    let mut input = BytesMut::new();
    frame::headers(&mut input, 1, &block("/hook", &[]), false, 16_384);
    let chunk = vec![b'x'; 16_384];
    for _ in 0..64 {
        frame::data(&mut input, 1, &chunk, false);
    }
    let done = feed(&mut c, input).unwrap();
    assert!(done.is_empty());
    assert!(written(&mut c).is_empty(), "1 MiB is taken");

    let mut more = BytesMut::new();
    frame::data(&mut more, 1, b"!", false);
    assert!(feed(&mut c, more).unwrap().is_empty());
    let out = written(&mut c);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].0.kind, frame::HEADERS);
    let mut decoder = loona_hpack::Decoder::new();
    assert_eq!(decoder.decode(&out[0].1).unwrap()[0].1, b"413");
    assert_eq!(out[1].0.kind, frame::RST_STREAM);
    assert_eq!(frame::word(&out[1].1, 0), frame::NO_ERROR);
    // What was in flight on that stream is refused as closed, not an error.
    let mut late = BytesMut::new();
    frame::data(&mut late, 1, b"late", true);
    assert!(feed(&mut c, late).unwrap().is_empty());
    let out = written(&mut c);
    assert_eq!(out[0].0.kind, frame::RST_STREAM);
    assert_eq!(frame::word(&out[0].1, 0), STREAM_CLOSED);
}

#[test]
fn padding_counts_against_a_streams_window() {
    let mut c = ready();
    let mut input = BytesMut::new();
    frame::headers(&mut input, 1, &block("/hook", &[]), false, 16_384);
    // Frames of padding alone: 256 bytes of window each, no body.
    let frames = STREAM_WINDOW / 256 + 1;
    for _ in 0..frames {
        Head {
            len: 256,
            kind: frame::DATA,
            flags: frame::PADDED,
            stream: 1,
        }
        .write(&mut input);
        input.put_u8(255);
        input.put_slice(&[0; 255]);
    }
    let e = error(&mut c, input);
    assert_eq!(e.code, frame::FLOW_CONTROL_ERROR, "{e}");
}

#[test]
fn streams_beyond_the_limit_are_refused_and_the_connection_goes_on() {
    let mut c = ready();
    let b = block("/hook", &[]);
    let mut input = BytesMut::new();
    for i in 0..=MAX_STREAMS as u32 {
        frame::headers(&mut input, 1 + 2 * i, &b, false, 16_384);
    }
    assert!(feed(&mut c, input).unwrap().is_empty());
    assert_eq!(c.open_streams(), MAX_STREAMS);
    let out = written(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.kind, frame::RST_STREAM);
    assert_eq!(out[0].0.stream, 1 + 2 * MAX_STREAMS as u32);
    assert_eq!(frame::word(&out[0].1, 0), frame::REFUSED_STREAM);
    // An open stream that the client resets is forgotten.
    let mut input = BytesMut::new();
    frame::rst_stream(&mut input, 1, frame::CANCEL);
    frame::data(&mut input, 3, b"{}", true);
    let done = feed(&mut c, input).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(c.open_streams(), MAX_STREAMS - 2);
}

#[test]
fn after_goaway_the_connection_is_finished_once_its_streams_have_ended() {
    let mut c = ready();
    let mut input = BytesMut::new();
    frame::headers(&mut input, 1, &block("/hook", &[]), false, 16_384);
    frame::goaway(&mut input, 0, frame::NO_ERROR, b"bye");
    feed(&mut c, input).unwrap();
    assert!(!c.finished(), "stream 1 is still open");
    let mut input = BytesMut::new();
    frame::data(&mut input, 1, b"{}", true);
    assert_eq!(feed(&mut c, input).unwrap().len(), 1);
    assert!(c.finished());
}

#[test]
fn a_connection_that_is_not_http2_is_refused_naming_the_preface() {
    let mut c = Connection::new();
    let mut input = BytesMut::from("POST /hook HTTP/1.1\r\n");
    let e = c.receive(&mut input, &mut Vec::new()).unwrap_err();
    assert_eq!(e.code, frame::PROTOCOL_ERROR);
    assert!(e.what.contains("preface"), "{e}");
}

#[test]
fn what_breaks_http2_ends_the_connection_with_the_right_code() {
    let cases: Vec<(&str, u32, BytesMut)> = vec![
        ("a frame too large", frame::FRAME_SIZE_ERROR, {
            let mut b = BytesMut::new();
            frame::data(&mut b, 1, &vec![0; 16_385], false);
            b
        }),
        ("DATA on stream 0", frame::PROTOCOL_ERROR, {
            let mut b = BytesMut::new();
            frame::data(&mut b, 0, b"x", false);
            b
        }),
        ("DATA on an idle stream", frame::PROTOCOL_ERROR, {
            let mut b = BytesMut::new();
            frame::data(&mut b, 5, b"x", false);
            b
        }),
        ("HEADERS on an even stream", frame::PROTOCOL_ERROR, {
            let mut b = BytesMut::new();
            frame::headers(&mut b, 2, &block("/hook", &[]), true, 16_384);
            b
        }),
        ("a stream opened again", frame::PROTOCOL_ERROR, {
            let mut b = BytesMut::new();
            frame::headers(&mut b, 3, &block("/hook", &[]), true, 16_384);
            frame::headers(&mut b, 1, &block("/hook", &[]), true, 16_384);
            b
        }),
        (
            "a header block cut by another frame",
            frame::PROTOCOL_ERROR,
            {
                let mut b = BytesMut::new();
                let hb = block("/hook", &[]);
                frame::headers(&mut b, 1, &hb, false, 4);
                let cut = frame::HEAD_LEN + 4;
                let mut first = b.split_to(cut);
                first[4] &= !frame::END_HEADERS;
                frame::settings(&mut first, &[]);
                first
            },
        ),
        ("a CONTINUATION without a block", frame::PROTOCOL_ERROR, {
            let mut b = BytesMut::new();
            Head {
                len: 1,
                kind: frame::CONTINUATION,
                flags: frame::END_HEADERS,
                stream: 1,
            }
            .write(&mut b);
            b.put_u8(0x82);
            b
        }),
        (
            "a header block HPACK cannot read",
            frame::COMPRESSION_ERROR,
            {
                let mut b = BytesMut::new();
                // Index 70 names no entry: the dynamic table is empty.
                frame::headers(&mut b, 1, &[0x80 | 70], true, 16_384);
                b
            },
        ),
        ("a header block too large", ENHANCE_YOUR_CALM, {
            let mut b = BytesMut::new();
            let hb = vec![0u8; MAX_HEADER_BLOCK + 1];
            frame::headers(&mut b, 1, &hb, true, 16_384);
            b
        }),
        (
            "trailers that do not end the stream",
            frame::PROTOCOL_ERROR,
            {
                let mut b = BytesMut::new();
                frame::headers(&mut b, 1, &block("/hook", &[]), false, 16_384);
                frame::headers(&mut b, 1, &block("/hook", &[]), false, 16_384);
                b
            },
        ),
        ("a PING of 7 bytes", frame::FRAME_SIZE_ERROR, {
            let mut b = BytesMut::new();
            Head {
                len: 7,
                kind: frame::PING,
                flags: 0,
                stream: 0,
            }
            .write(&mut b);
            b.put_slice(b"1234567");
            b
        }),
        (
            "a SETTINGS window out of range",
            frame::FLOW_CONTROL_ERROR,
            {
                let mut b = BytesMut::new();
                frame::settings(&mut b, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31)]);
                b
            },
        ),
        ("SETTINGS of 5 bytes", frame::FRAME_SIZE_ERROR, {
            let mut b = BytesMut::new();
            Head {
                len: 5,
                kind: frame::SETTINGS,
                flags: 0,
                stream: 0,
            }
            .write(&mut b);
            b.put_slice(&[0; 5]);
            b
        }),
        ("a RST_STREAM on stream 0", frame::PROTOCOL_ERROR, {
            let mut b = BytesMut::new();
            frame::rst_stream(&mut b, 0, frame::CANCEL);
            b
        }),
        ("PUSH_PROMISE from a client", frame::PROTOCOL_ERROR, {
            let mut b = BytesMut::new();
            Head {
                len: 4,
                kind: frame::PUSH_PROMISE,
                flags: frame::END_HEADERS,
                stream: 1,
            }
            .write(&mut b);
            b.put_u32(2);
            b
        }),
    ];
    for (what, code, input) in cases {
        let mut c = ready();
        let e = error(&mut c, input);
        assert_eq!(e.code, code, "{what}: {e}");
        c.fail(&e);
        let out = written(&mut c);
        assert_eq!(out.last().unwrap().0.kind, frame::GOAWAY, "{what}");
        assert_eq!(frame::word(&out.last().unwrap().1, 4), code, "{what}");
    }

    // The client's first frame must be its SETTINGS.
    let mut c = Connection::new();
    let mut input = BytesMut::from(frame::PREFACE);
    frame::headers(&mut input, 1, &block("/hook", &[]), true, 16_384);
    let e = c.receive(&mut input, &mut Vec::new()).unwrap_err();
    assert_eq!(e.code, frame::PROTOCOL_ERROR, "{e}");
}
