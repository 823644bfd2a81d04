//! The embedded store's bytes on disk, pure: how a record becomes a frame of the
//! journal and back, and how a record's fields are laid out.
//!
//! A frame is `[u32 length][u32 CRC-32 of the payload][payload]`, little-endian. The
//! CRC tells a frame torn by a crash (or rotted on disk) from a whole one: reading
//! stops at the first frame that does not check, and everything before it is kept.
//!
//! Payloads:
//! - `1` a verification: `[16 id][i64 retain until][fields]`;
//! - `2` a verification given up (its issue could not be made durable): `[16 id]`;
//! - `3` a client's event (the event journal): `[u8 client length][client][u64 ms]
//!   [u64 seq][u64 order][i64 at][i64 retain until][payload]`;
//! - `4` a client's events done: `[u8 client length][client][i64 retain until]
//!   [u64 ms][u64 seq]…`.
//!
//! Fields are the store's record fields (the same ones the Redis store keeps in a
//! hash, see [`crate::store::redis::record`]): `[u8 name length][name][u32 value
//! length][value]`, repeated.

use crate::domain::clock::UnixMillis;
use crate::store::redis::record::Fields;

/// Bytes before a frame's payload.
pub const HEADER: usize = 8;
/// The largest payload written or read: a verification's record is well under a
/// kilobyte, so anything larger is damage.
pub const MAX_PAYLOAD: usize = 1 << 20;

const TAG_VERIFICATION: u8 = 1;
const TAG_GIVEN_UP: u8 = 2;
const TAG_EVENT: u8 = 3;
const TAG_EVENT_DONE: u8 = 4;

/// A record read back from a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Verification {
        id: [u8; 16],
        retain_until: UnixMillis,
        fields: Fields,
    },
    GivenUp {
        id: [u8; 16],
    },
    Event {
        client: String,
        /// The event id's millisecond and sequence.
        id: (u64, u64),
        order: u64,
        at: UnixMillis,
        retain_until: UnixMillis,
        payload: Vec<u8>,
    },
    EventsDone {
        client: String,
        retain_until: UnixMillis,
        ids: Vec<(u64, u64)>,
    },
}

impl Record {
    /// Until when the record matters (nothing for a given-up mark).
    pub fn retain_until(&self) -> Option<UnixMillis> {
        match self {
            Record::Verification { retain_until, .. }
            | Record::Event { retain_until, .. }
            | Record::EventsDone { retain_until, .. } => Some(*retain_until),
            Record::GivenUp { .. } => None,
        }
    }
}

/// Why a frame or payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header says, or the last frame before the zeros of a
    /// segment's room ahead with a checksum that does not match: the write was cut
    /// off (pages of one write may reach the disk in any order).
    #[error("a frame cut short at byte {at}")]
    Torn { at: usize },
    /// The length is impossible or the CRC does not match.
    #[error("a damaged frame at byte {at}: {why}")]
    Damaged { at: usize, why: &'static str },
    /// A whole frame whose payload is not a record of this format.
    #[error("an unreadable record: {0}")]
    Payload(&'static str),
}

/// Append a verification's frame to `out`.
pub fn put_verification(
    out: &mut Vec<u8>,
    id: &[u8; 16],
    retain_until: UnixMillis,
    fields: &[(&str, Vec<u8>)],
) {
    frame(out, |p| {
        p.push(TAG_VERIFICATION);
        p.extend_from_slice(id);
        p.extend_from_slice(&retain_until.0.to_le_bytes());
        put_fields(p, fields);
    });
}

/// Append the frame that gives up verification `id`.
pub fn put_given_up(out: &mut Vec<u8>, id: &[u8; 16]) {
    frame(out, |p| {
        p.push(TAG_GIVEN_UP);
        p.extend_from_slice(id);
    });
}

/// Append a client's event's frame to `out`.
pub fn put_event(
    out: &mut Vec<u8>,
    client: &str,
    id: (u64, u64),
    order: u64,
    at: UnixMillis,
    retain_until: UnixMillis,
    payload: &[u8],
) {
    frame(out, |p| {
        p.push(TAG_EVENT);
        put_name(p, client);
        p.extend_from_slice(&id.0.to_le_bytes());
        p.extend_from_slice(&id.1.to_le_bytes());
        p.extend_from_slice(&order.to_le_bytes());
        p.extend_from_slice(&at.0.to_le_bytes());
        p.extend_from_slice(&retain_until.0.to_le_bytes());
        p.extend_from_slice(payload);
    });
}

/// Append the frame that marks a client's events done.
pub fn put_events_done(
    out: &mut Vec<u8>,
    client: &str,
    retain_until: UnixMillis,
    ids: &[(u64, u64)],
) {
    frame(out, |p| {
        p.push(TAG_EVENT_DONE);
        put_name(p, client);
        p.extend_from_slice(&retain_until.0.to_le_bytes());
        for (ms, seq) in ids {
            p.extend_from_slice(&ms.to_le_bytes());
            p.extend_from_slice(&seq.to_le_bytes());
        }
    });
}

/// A client's name: at most 255 bytes (configured names are at most 64).
fn put_name(out: &mut Vec<u8>, name: &str) {
    let n = u8::try_from(name.len()).expect("client names are short");
    out.push(n);
    out.extend_from_slice(name.as_bytes());
}

/// A name written by [`put_name`], and what follows it.
fn read_name(b: &[u8]) -> Result<(String, &[u8]), FrameError> {
    let n = *b.first().ok_or(FrameError::Payload("a client name"))? as usize;
    let name = b
        .get(1..1 + n)
        .ok_or(FrameError::Payload("a client name"))?;
    let name = std::str::from_utf8(name).map_err(|_| FrameError::Payload("a client name"))?;
    Ok((name.to_string(), &b[1 + n..]))
}

/// Little-endian 8-byte words from the front of `b`.
fn words<const N: usize>(b: &[u8]) -> Result<([u64; N], &[u8]), FrameError> {
    let mut out = [0; N];
    for (i, w) in out.iter_mut().enumerate() {
        *w = b
            .get(i * 8..i * 8 + 8)
            .map(|r| u64::from_le_bytes(r.try_into().expect("8 bytes")))
            .ok_or(FrameError::Payload("a number"))?;
    }
    Ok((out, &b[N * 8..]))
}

/// Write a frame whose payload `body` appends to `out`.
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    body(out);
    let payload = &out[start + HEADER..];
    let len = u32::try_from(payload.len()).expect("a record fits in 4 GiB");
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// Fields as `[u8 name length][name][u32 value length][value]`, repeated. Names are
/// the store's short field names, never longer than 255 bytes.
pub fn put_fields(out: &mut Vec<u8>, fields: &[(&str, Vec<u8>)]) {
    for (name, value) in fields {
        let n = u8::try_from(name.len()).expect("field names are short");
        out.push(n);
        out.extend_from_slice(name.as_bytes());
        let len = u32::try_from(value.len()).expect("a field fits in 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(value);
    }
}

/// Read fields written by [`put_fields`].
pub fn read_fields(mut b: &[u8]) -> Result<Fields, FrameError> {
    let mut fields = Fields::new();
    while !b.is_empty() {
        let n = b[0] as usize;
        let name = b.get(1..1 + n).ok_or(FrameError::Payload("a field name"))?;
        let rest = &b[1 + n..];
        let len = rest
            .get(..4)
            .map(|l| u32::from_le_bytes(l.try_into().expect("4 bytes")) as usize)
            .ok_or(FrameError::Payload("a field length"))?;
        let value = rest
            .get(4..4 + len)
            .ok_or(FrameError::Payload("a field value"))?;
        fields.insert(name.to_vec(), value.to_vec());
        b = &rest[4 + len..];
    }
    Ok(fields)
}

/// The next whole frame's payload in `buf` from byte `at`, and where the one after
/// it starts; `Ok(None)` at the end, or where only zeros follow (the room a journal
/// segment is given ahead of its records: no frame starts with a zero length).
pub fn next_frame(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let rest = &buf[at..];
    let zero = |b: &[u8]| b.iter().all(|&b| b == 0);
    if zero(&rest[..rest.len().min(HEADER)]) && zero(rest) {
        return Ok(None);
    }
    if rest.len() < HEADER {
        return Err(FrameError::Torn { at });
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_PAYLOAD {
        return Err(FrameError::Damaged {
            at,
            why: "an impossible length",
        });
    }
    let Some(payload) = rest.get(HEADER..HEADER + len) else {
        return Err(FrameError::Torn { at });
    };
    if crc32fast::hash(payload) != crc {
        if zero(&rest[HEADER + len..]) && zero(&payload[payload.len().saturating_sub(HEADER)..]) {
            return Err(FrameError::Torn { at });
        }
        return Err(FrameError::Damaged {
            at,
            why: "the checksum does not match",
        });
    }
    Ok(Some((payload, at + HEADER + len)))
}

/// The record a whole frame's payload holds.
pub fn read_record(payload: &[u8]) -> Result<Record, FrameError> {
    let id = |b: &[u8]| -> Result<[u8; 16], FrameError> {
        b.get(..16)
            .map(|i| i.try_into().expect("16 bytes"))
            .ok_or(FrameError::Payload("an id"))
    };
    match payload.first() {
        Some(&TAG_VERIFICATION) => {
            let b = &payload[1..];
            let id = id(b)?;
            let retain = b
                .get(16..24)
                .map(|r| i64::from_le_bytes(r.try_into().expect("8 bytes")))
                .ok_or(FrameError::Payload("a retention time"))?;
            Ok(Record::Verification {
                id,
                retain_until: UnixMillis(retain),
                fields: read_fields(&b[24..])?,
            })
        }
        Some(&TAG_GIVEN_UP) => Ok(Record::GivenUp {
            id: id(&payload[1..])?,
        }),
        Some(&TAG_EVENT) => {
            let (client, b) = read_name(&payload[1..])?;
            let ([ms, seq, order, at, retain], rest) = words::<5>(b)?;
            Ok(Record::Event {
                client,
                id: (ms, seq),
                order,
                at: UnixMillis(at as i64),
                retain_until: UnixMillis(retain as i64),
                payload: rest.to_vec(),
            })
        }
        Some(&TAG_EVENT_DONE) => {
            let (client, b) = read_name(&payload[1..])?;
            let ([retain], mut rest) = words::<1>(b)?;
            if rest.len() % 16 != 0 {
                return Err(FrameError::Payload("event ids"));
            }
            let mut ids = Vec::with_capacity(rest.len() / 16);
            while !rest.is_empty() {
                let ([ms, seq], r) = words::<2>(rest)?;
                ids.push((ms, seq));
                rest = r;
            }
            Ok(Record::EventsDone {
                client,
                retain_until: UnixMillis(retain as i64),
                ids,
            })
        }
        _ => Err(FrameError::Payload("an unknown record kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields(pairs: &[(&str, &[u8])]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn events_and_their_done_marks_read_back_as_written() {
        let mut buf = Vec::new();
        put_event(
            &mut buf,
            "sede",
            (17, 2),
            99,
            UnixMillis(5),
            UnixMillis(9),
            b"{\"type\":1}",
        );
        put_events_done(&mut buf, "sede", UnixMillis(9), &[(17, 2), (18, 0)]);
        let (first, next) = next_frame(&buf, 0).unwrap().unwrap();
        assert_eq!(
            read_record(first).unwrap(),
            Record::Event {
                client: "sede".into(),
                id: (17, 2),
                order: 99,
                at: UnixMillis(5),
                retain_until: UnixMillis(9),
                payload: b"{\"type\":1}".to_vec(),
            }
        );
        let (second, _) = next_frame(&buf, next).unwrap().unwrap();
        assert_eq!(
            read_record(second).unwrap(),
            Record::EventsDone {
                client: "sede".into(),
                retain_until: UnixMillis(9),
                ids: vec![(17, 2), (18, 0)],
            }
        );
    }

    #[test]
    fn records_read_back_as_written() {
        let mut buf = Vec::new();
        put_verification(
            &mut buf,
            &[7; 16],
            UnixMillis(1_800_000_000_000),
            &[("to", b"34600000001".to_vec()), ("st", b"pending".to_vec())],
        );
        put_given_up(&mut buf, &[9; 16]);
        let (first, next) = next_frame(&buf, 0).unwrap().unwrap();
        assert_eq!(
            read_record(first).unwrap(),
            Record::Verification {
                id: [7; 16],
                retain_until: UnixMillis(1_800_000_000_000),
                fields: fields(&[("to", b"34600000001"), ("st", b"pending")]),
            }
        );
        let (second, end) = next_frame(&buf, next).unwrap().unwrap();
        assert_eq!(
            read_record(second).unwrap(),
            Record::GivenUp { id: [9; 16] }
        );
        assert_eq!(end, buf.len());
        assert_eq!(next_frame(&buf, end), Ok(None));
    }

    #[test]
    fn a_frame_cut_anywhere_is_torn_and_what_came_before_stays() {
        let mut buf = Vec::new();
        put_given_up(&mut buf, &[1; 16]);
        let whole = buf.len();
        put_verification(&mut buf, &[2; 16], UnixMillis(5), &[("a", vec![1; 40])]);
        for cut in whole + 1..buf.len() {
            let b = &buf[..cut];
            let (_, next) = next_frame(b, 0).unwrap().unwrap();
            assert_eq!(next, whole);
            assert_eq!(next_frame(b, next), Err(FrameError::Torn { at: whole }));
        }
    }

    #[test]
    fn zeros_after_the_frames_are_the_end_and_zeros_before_a_frame_are_damage() {
        let mut buf = Vec::new();
        put_given_up(&mut buf, &[1; 16]);
        let whole = buf.len();
        for room in [1, HEADER - 1, HEADER, 4096] {
            let mut b = buf.clone();
            b.resize(whole + room, 0);
            let (_, next) = next_frame(&b, 0).unwrap().unwrap();
            assert_eq!(next_frame(&b, next), Ok(None), "{room} zeros ahead");
        }
        // The last write cut off inside the room ahead: its frame's end is zeros.
        let mut b = buf.clone();
        put_verification(&mut b, &[2; 16], UnixMillis(5), &[("a", vec![1; 40])]);
        let end = b.len();
        b[end - 20..].fill(0);
        b.resize(end + 4096, 0);
        assert_eq!(next_frame(&b, whole), Err(FrameError::Torn { at: whole }));
        let mut b = buf.clone();
        b.resize(whole + 64, 0);
        put_given_up(&mut b, &[2; 16]);
        assert!(matches!(
            next_frame(&b, whole),
            Err(FrameError::Damaged { .. })
        ));
    }

    #[test]
    fn a_flipped_bit_is_damage_not_a_record() {
        let mut buf = Vec::new();
        put_verification(&mut buf, &[2; 16], UnixMillis(5), &[("a", vec![1; 40])]);
        for i in HEADER..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x10;
            assert!(matches!(
                next_frame(&b, 0),
                Err(FrameError::Damaged { at: 0, .. })
            ));
        }
        let mut b = buf.clone();
        b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            next_frame(&b, 0),
            Err(FrameError::Damaged { at: 0, .. })
        ));
    }

    #[test]
    fn payloads_of_another_shape_are_refused() {
        assert!(read_record(&[]).is_err());
        assert!(read_record(&[3, 0, 0]).is_err());
        assert!(read_record(&[1, 0, 0]).is_err());
        assert!(read_fields(&[5, b'a']).is_err());
        assert!(read_fields(&[1, b'a', 9, 0, 0, 0, 1]).is_err());
    }

    proptest! {
        #[test]
        fn any_fields_read_back(pairs in proptest::collection::btree_map(
            "[a-z]{1,4}", proptest::collection::vec(any::<u8>(), 0..64), 0..12)) {
            let list: Vec<(&str, Vec<u8>)> =
                pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let mut out = Vec::new();
            put_fields(&mut out, &list);
            let back = read_fields(&out).unwrap();
            prop_assert_eq!(back.len(), pairs.len());
            for (k, v) in &pairs {
                prop_assert_eq!(back.get(k.as_bytes()), Some(v));
            }
        }
    }
}
