//! The session's unit tests (driven frame by frame) and its fuzz tests.

mod unit {
    use std::time::Duration;

    use super::super::*;

    fn target() -> Target {
        Target {
            authority: "127.0.0.1:8080".into(),
            path: "/hooks?x=1".into(),
            tls: false,
            content_type: "application/json".into(),
        }
    }

    /// The frames in `bytes` (after the preface, if it starts with one).
    fn frames(bytes: &[u8]) -> Vec<(Head, Vec<u8>)> {
        let bytes = bytes.strip_prefix(frame::PREFACE).unwrap_or(bytes);
        let (all, taken) = frame::whole_frames(bytes);
        assert_eq!(taken, bytes.len(), "whole frames");
        all.into_iter().map(|(h, p)| (h, p.to_vec())).collect()
    }

    fn written(s: &mut Session<u32>) -> Vec<(Head, Vec<u8>)> {
        let out = s.output().split();
        frames(&out)
    }

    fn server_settings(values: &[(u16, u32)]) -> BytesMut {
        let mut b = BytesMut::new();
        frame::settings(&mut b, values);
        b
    }

    fn answer(stream: u32, block: &[u8], end_stream: bool) -> BytesMut {
        let mut b = BytesMut::new();
        frame::headers(&mut b, stream, block, end_stream, 16_384);
        b
    }

    fn ready(max: usize) -> (Session<u32>, Instant) {
        let mut s = Session::new(&target(), max);
        let mut input = server_settings(&[]);
        s.receive(&mut input);
        s.output().clear();
        (s, Instant::now())
    }

    fn post(body: &str) -> Post {
        Post::new(Bytes::from(body.to_string()))
            .header("webhook-id", b"msg_1")
            .secret_header("webhook-signature", b"v1,abc")
    }

    fn settled(s: &mut Session<u32>) -> Vec<(u32, Outcome)> {
        std::iter::from_fn(|| s.settled()).collect()
    }

    #[test]
    fn a_session_opens_with_the_preface_settings_and_a_larger_window() {
        let mut s: Session<u32> = Session::new(&target(), 8);
        let out = s.output().split();
        assert!(out.starts_with(frame::PREFACE));
        let f = frames(&out);
        assert_eq!(f[0].0.kind, frame::SETTINGS);
        let values: Vec<_> = frame::settings_values(&f[0].1).unwrap().collect();
        assert!(values.contains(&(frame::SETTINGS_HEADER_TABLE_SIZE, 0)));
        assert!(values.contains(&(frame::SETTINGS_ENABLE_PUSH, 0)));
        assert_eq!(f[1].0.kind, frame::WINDOW_UPDATE);
    }

    #[test]
    fn a_post_is_headers_then_data_and_settles_on_its_status() {
        let (mut s, now) = ready(8);
        s.post(7, post("{\"a\":1}"), now + Duration::from_secs(1));
        let f = written(&mut s);
        assert_eq!(f.len(), 2);
        let (h, block) = &f[0];
        assert_eq!(
            (h.kind, h.flags, h.stream),
            (frame::HEADERS, frame::END_HEADERS, 1)
        );
        assert!(block.starts_with(&[0x83, 0x86]), "POST, http");
        assert!(block.windows(10).any(|w| w == b"/hooks?x=1"));
        assert!(block.windows(17).any(|w| w == b"webhook-signature"));
        assert_eq!(f[1].0.kind, frame::DATA);
        assert_eq!(f[1].0.flags, frame::END_STREAM);
        assert_eq!(f[1].1, b"{\"a\":1}");
        assert!(settled(&mut s).is_empty());
        s.receive(&mut answer(1, &[0x88], true));
        assert_eq!(settled(&mut s), vec![(7, Outcome::Answered(200))]);
        assert!(s.drained());
    }

    #[test]
    fn a_status_settles_before_the_body_which_is_read_and_dropped() {
        let (mut s, now) = ready(8);
        s.post(1, post("x"), now + Duration::from_secs(1));
        s.receive(&mut answer(1, b"\x08\x03503", false));
        assert_eq!(settled(&mut s), vec![(1, Outcome::Answered(503))]);
        let mut body = BytesMut::new();
        frame::data(&mut body, 1, b"busy", true);
        s.receive(&mut body);
        assert!(s.drained());
        assert!(s.broken().is_none());
    }

    #[test]
    fn informational_answers_are_skipped() {
        let (mut s, now) = ready(8);
        s.post(1, post("x"), now + Duration::from_secs(1));
        s.receive(&mut answer(1, b"\x08\x03100", false));
        assert!(settled(&mut s).is_empty());
        s.receive(&mut answer(1, &[0x89], true));
        assert_eq!(settled(&mut s), vec![(1, Outcome::Answered(204))]);
    }

    #[test]
    fn the_servers_stream_limit_holds_requests_in_order() {
        let mut s: Session<u32> = Session::new(&target(), 100);
        s.receive(&mut server_settings(&[(
            frame::SETTINGS_MAX_CONCURRENT_STREAMS,
            1,
        )]));
        s.output().clear();
        let now = Instant::now();
        for tag in 0..3 {
            s.post(tag, post("x"), now + Duration::from_secs(1));
        }
        let heads: Vec<u32> = written(&mut s)
            .iter()
            .filter(|f| f.0.kind == frame::HEADERS)
            .map(|f| f.0.stream)
            .collect();
        assert_eq!(heads, vec![1]);
        s.receive(&mut answer(1, &[0x88], true));
        let heads: Vec<u32> = written(&mut s)
            .iter()
            .filter(|f| f.0.kind == frame::HEADERS)
            .map(|f| f.0.stream)
            .collect();
        assert_eq!(heads, vec![3]);
    }

    #[test]
    fn bodies_wait_for_the_windows() {
        let mut s: Session<u32> = Session::new(&target(), 8);
        s.receive(&mut server_settings(&[(
            frame::SETTINGS_INITIAL_WINDOW_SIZE,
            3,
        )]));
        s.output().clear();
        s.post(1, post("abcdefgh"), Instant::now() + Duration::from_secs(1));
        let data: Vec<Vec<u8>> = written(&mut s)
            .into_iter()
            .filter(|f| f.0.kind == frame::DATA)
            .map(|f| f.1)
            .collect();
        assert_eq!(data, vec![b"abc".to_vec()]);
        let mut update = BytesMut::new();
        frame::window_update(&mut update, 1, 10);
        s.receive(&mut update);
        let f = written(&mut s);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].1.as_slice(), f[0].0.flags),
            (&b"defgh"[..], frame::END_STREAM)
        );
    }

    #[test]
    fn a_refused_stream_goes_again_once_then_fails() {
        let (mut s, now) = ready(8);
        s.post(1, post("x"), now + Duration::from_secs(1));
        s.output().clear();
        let mut rst = BytesMut::new();
        frame::rst_stream(&mut rst, 1, frame::REFUSED_STREAM);
        s.receive(&mut rst);
        assert!(settled(&mut s).is_empty());
        let heads: Vec<u32> = written(&mut s)
            .iter()
            .filter(|f| f.0.kind == frame::HEADERS)
            .map(|f| f.0.stream)
            .collect();
        assert_eq!(heads, vec![3], "made again at once on the same connection");
        let mut rst = BytesMut::new();
        frame::rst_stream(&mut rst, 3, frame::REFUSED_STREAM);
        s.receive(&mut rst);
        let got = settled(&mut s);
        assert!(matches!(&got[..], [(1, Outcome::Failed(why))] if why.contains("REFUSED_STREAM")));
    }

    #[test]
    fn a_goaway_hands_back_what_it_did_not_process() {
        let (mut s, now) = ready(8);
        for tag in 0..3 {
            s.post(tag, post("x"), now + Duration::from_secs(1));
        }
        let mut away = BytesMut::new();
        frame::goaway(&mut away, 1, frame::NO_ERROR, b"restarting");
        s.receive(&mut away);
        assert!(!s.usable());
        assert!(!s.drained(), "stream 1 is still to be answered");
        s.post(9, post("x"), now + Duration::from_secs(1));
        let again: Vec<u32> = s.take_waiting().into_iter().map(|w| w.0).collect();
        assert_eq!(again, vec![1, 2, 9]);
        s.receive(&mut answer(1, &[0x88], true));
        assert_eq!(settled(&mut s), vec![(0, Outcome::Answered(200))]);
        assert!(s.drained());
    }

    #[test]
    fn deadlines_reset_open_streams_and_fail_waiting_ones() {
        let (mut s, now) = ready(1);
        s.post(1, post("x"), now + Duration::from_millis(10));
        s.post(2, post("x"), now + Duration::from_millis(20));
        s.output().clear();
        assert_eq!(s.next_deadline(), Some(now + Duration::from_millis(10)));
        s.expire(now + Duration::from_millis(15));
        let f = written(&mut s);
        assert_eq!(f[0].0.kind, frame::RST_STREAM);
        assert_eq!(frame::word(&f[0].1, 0), frame::CANCEL);
        assert!(
            f.iter()
                .any(|f| f.0.kind == frame::HEADERS && f.0.stream == 3),
            "the next one starts"
        );
        s.expire(now + Duration::from_millis(25));
        let got = settled(&mut s);
        assert_eq!(got.len(), 2);
        assert!(
            got.iter()
                .all(|g| matches!(&g.1, Outcome::Failed(w) if w.contains("deadline")))
        );
        // A late answer on a reset stream is ignored.
        s.receive(&mut answer(1, &[0x88], true));
        assert!(settled(&mut s).is_empty());
        assert!(s.broken().is_none());
    }

    #[test]
    fn pings_are_answered_and_acks_are_not() {
        let (mut s, _) = ready(8);
        let mut ping = BytesMut::new();
        frame::Head {
            len: 8,
            kind: frame::PING,
            flags: 0,
            stream: 0,
        }
        .write(&mut ping);
        ping.extend_from_slice(b"12345678");
        s.receive(&mut ping);
        let f = written(&mut s);
        assert_eq!(
            (f[0].0.kind, f[0].0.flags, f[0].1.as_slice()),
            (frame::PING, frame::ACK, &b"12345678"[..])
        );
    }

    #[test]
    fn answer_bodies_give_the_connection_window_back() {
        let (mut s, now) = ready(8);
        let chunk = vec![b'x'; 16_000];
        let mut sent = 0i64;
        let mut tag = 0;
        while sent < CONN_WINDOW {
            s.post(tag, post("x"), now + Duration::from_secs(1));
            let id = tag * 2 + 1;
            s.receive(&mut answer(id, &[0x88], false));
            let mut body = BytesMut::new();
            for _ in 0..4 {
                frame::data(&mut body, id, &chunk, false);
            }
            frame::data(&mut body, id, b"", true);
            s.receive(&mut body);
            sent += 64_000;
            tag += 1;
        }
        assert!(s.broken().is_none());
        assert!(
            written(&mut s)
                .iter()
                .any(|f| f.0.kind == frame::WINDOW_UPDATE && f.0.stream == 0)
        );
    }

    #[test]
    fn a_server_that_breaks_the_protocol_is_left_with_a_goaway() {
        let cases: Vec<(&str, BytesMut)> = vec![
            ("not settings first", answer(1, &[0x88], true)),
            ("a push", {
                let mut b = server_settings(&[]);
                frame::Head {
                    len: 4,
                    kind: frame::PUSH_PROMISE,
                    flags: frame::END_HEADERS,
                    stream: 1,
                }
                .write(&mut b);
                b.extend_from_slice(&[0, 0, 0, 2]);
                b
            }),
            ("a huge frame", {
                let mut b = server_settings(&[]);
                frame::Head {
                    len: 20_000,
                    kind: frame::DATA,
                    flags: 0,
                    stream: 1,
                }
                .write(&mut b);
                b
            }),
            ("an unopened stream", {
                let mut b = server_settings(&[]);
                b.extend_from_slice(&answer(5, &[0x88], true));
                b
            }),
            ("a bad header block", {
                let mut b = server_settings(&[]);
                b.extend_from_slice(&answer(1, &[0xbe], true));
                b
            }),
            (
                "a bad frame size",
                server_settings(&[(frame::SETTINGS_MAX_FRAME_SIZE, 10)]),
            ),
        ];
        for (what, mut input) in cases {
            let mut s: Session<u32> = Session::new(&target(), 8);
            s.post(1, post("x"), Instant::now() + Duration::from_secs(1));
            s.output().clear();
            s.receive(&mut input);
            assert!(s.broken().is_some(), "{what}");
            let f = written(&mut s);
            assert_eq!(f.last().map(|f| f.0.kind), Some(frame::GOAWAY), "{what}");
            let handed = s.lose("broken");
            assert!(handed.is_empty(), "{what}");
            assert_eq!(settled(&mut s).len(), 1, "{what}: the open request fails");
        }
    }

    #[test]
    fn a_header_block_across_continuations() {
        let (mut s, now) = ready(8);
        s.post(1, post("x"), now + Duration::from_secs(1));
        let mut block = vec![0x00, 0x01, b'x', 0x7f, 0x00];
        block.extend(std::iter::repeat_n(b'y', 127));
        block.push(0x88);
        let mut b = BytesMut::new();
        frame::headers(&mut b, 1, &block, true, 50);
        s.receive(&mut b);
        assert_eq!(settled(&mut s), vec![(1, Outcome::Answered(200))]);
    }

    #[test]
    fn frames_split_anywhere_read_the_same() {
        let (mut s, now) = ready(8);
        s.post(1, post("x"), now + Duration::from_secs(1));
        let whole = answer(1, b"\x08\x03201", true);
        let mut input = BytesMut::new();
        for b in whole.iter() {
            input.extend_from_slice(&[*b]);
            s.receive(&mut input);
        }
        assert_eq!(settled(&mut s), vec![(1, Outcome::Answered(201))]);
    }
}

mod fuzz {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::super::*;

    proptest! {
        /// Whatever a server sends, split however, the session neither panics nor
        /// leaves a request unaccounted: each one is settled once, by an answer,
        /// a failure, its deadline or the connection's loss.
        #[test]
        fn any_bytes_from_a_server_are_survived(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            with_settings in any::<bool>(),
        ) {
            let target = Target {
                authority: "127.0.0.1:1".into(),
                path: "/".into(),
                tls: false,
                content_type: "application/json".into(),
            };
            let mut s: Session<u32> = Session::new(&target, 4);
            let now = Instant::now();
            for tag in 0..6 {
                s.post(tag, Post::new(Bytes::from_static(b"{}")), now + Duration::from_secs(1));
            }
            let mut input = BytesMut::new();
            if with_settings {
                frame::settings(&mut input, &[]);
            }
            for chunk in chunks {
                input.extend_from_slice(&chunk);
                s.receive(&mut input);
            }
            let mut settled: Vec<u32> = std::iter::from_fn(|| s.settled()).map(|d| d.0).collect();
            if s.broken().is_some() {
                settled.extend(s.lose("broken").into_iter().map(|w| w.0));
            } else {
                s.expire(now + Duration::from_secs(2));
            }
            settled.extend(std::iter::from_fn(|| s.settled()).map(|d| d.0));
            settled.extend(s.take_waiting().into_iter().map(|w| w.0));
            settled.sort_unstable();
            prop_assert_eq!(settled, (0..6).collect::<Vec<u32>>());
        }

        #[test]
        fn any_header_block_is_read_or_refused(block in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = hpack::status(&block);
        }
    }
}
