//! The little of HPACK (RFC 7541) this client needs.
//!
//! Encoding: header fields as literals that the server does not add to its
//! table, so the encoder keeps no state and a request's header block is a
//! fixed prefix plus its own fields.
//!
//! Decoding: the client tells the server its table holds nothing
//! (`SETTINGS_HEADER_TABLE_SIZE = 0`), so a server's header block refers only to
//! the static table and the decoder keeps no state either. It walks every field,
//! so that a malformed block is caught, and decodes only `:status`: the other
//! names and values are skipped by their lengths, Huffman-coded or not.

/// Where a header block is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a malformed header block: {0}")]
pub struct HpackError(pub &'static str);

/// `value` in HPACK's integer form with an `n`-bit prefix, the byte's high bits
/// set to `high` (RFC 7541 §5.1).
pub fn integer(out: &mut Vec<u8>, n: u8, high: u8, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A string literal, not Huffman-coded.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 7, 0, s.len());
    out.extend_from_slice(s);
}

/// A field in the static table, name and value (`:method POST` is 3).
pub fn indexed(out: &mut Vec<u8>, index: usize) {
    integer(out, 7, 0x80, index);
}

/// A literal field the server must not add to its table; with `never`, no
/// intermediary may either (RFC 7541 §6.2.3), for values such as signatures.
/// `name` is a static-table index, or the name itself.
pub fn literal(out: &mut Vec<u8>, name: Name<'_>, value: &[u8], never: bool) {
    let high = if never { 0x10 } else { 0x00 };
    match name {
        Name::Static(index) => integer(out, 4, high, index),
        Name::New(name) => {
            out.push(high);
            string(out, name);
        }
    }
    string(out, value);
}

/// How a literal field names itself.
#[derive(Debug, Clone, Copy)]
pub enum Name<'a> {
    Static(usize),
    New(&'a [u8]),
}

/// Static-table indices a POST uses (RFC 7541 Appendix A).
pub const METHOD_POST: usize = 3;
pub const SCHEME_HTTP: usize = 6;
pub const SCHEME_HTTPS: usize = 7;
pub const AUTHORITY: usize = 1;
pub const PATH: usize = 4;
pub const CONTENT_LENGTH: usize = 28;
pub const CONTENT_TYPE: usize = 31;
/// `:status` and the statuses the static table holds with it (indices 8 to 14).
const STATUS: usize = 8;
const STATIC_STATUSES: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
/// The static table's last index; a higher one is in the dynamic table, which the
/// client keeps empty.
const STATIC_LEN: usize = 61;

/// The `:status` a response's header block carries, if any.
pub fn status(block: &[u8]) -> Result<Option<u16>, HpackError> {
    let mut r = Reader { buf: block, at: 0 };
    let mut status = None;
    while let Some(&first) = r.buf.get(r.at) {
        if first & 0x80 != 0 {
            let index = r.integer(7)?;
            match index {
                0 => return Err(HpackError("an indexed field with index 0")),
                8..=14 => status = Some(STATIC_STATUSES[index - STATUS]),
                i if i > STATIC_LEN => return Err(HpackError("an index into an empty table")),
                _ => {}
            }
        } else if first & 0xe0 == 0x20 {
            if r.integer(5)? != 0 {
                return Err(HpackError("a table size above the 0 the client set"));
            }
        } else {
            // With incremental indexing (6-bit prefix; the entry cannot fit in a
            // table of size 0, so nothing is kept), without indexing or never
            // indexed (4-bit prefix).
            let n = if first & 0xc0 == 0x40 { 6 } else { 4 };
            let index = r.integer(n)?;
            if index > STATIC_LEN {
                return Err(HpackError("an index into an empty table"));
            }
            if index == 0 {
                r.string()?;
            }
            let (huffman, value) = r.string()?;
            if index == STATUS {
                status = Some(status_value(huffman, value)?);
            }
        }
    }
    Ok(status)
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, HpackError> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or(HpackError("a field cut short"))?;
        self.at += 1;
        Ok(b)
    }

    fn integer(&mut self, n: u8) -> Result<usize, HpackError> {
        let max = (1usize << n) - 1;
        let mut value = usize::from(self.byte()?) & max;
        if value < max {
            return Ok(value);
        }
        for shift in (0..28).step_by(7) {
            let b = self.byte()?;
            value += usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(HpackError("an integer too large"))
    }

    /// A string's bytes as sent, and whether they are Huffman-coded.
    fn string(&mut self) -> Result<(bool, &'a [u8]), HpackError> {
        let huffman = self.buf.get(self.at).is_some_and(|b| b & 0x80 != 0);
        let len = self.integer(7)?;
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or(HpackError("a string longer than the block"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok((huffman, s))
    }
}

/// A `:status` value: three digits, raw or Huffman-coded.
fn status_value(huffman: bool, value: &[u8]) -> Result<u16, HpackError> {
    let mut digits = [0u8; 3];
    let n = if huffman {
        huffman_digits(value, &mut digits)?
    } else {
        if value.len() > 3 {
            return Err(HpackError("a :status that is not three digits"));
        }
        digits[..value.len()].copy_from_slice(value);
        value.len()
    };
    if n != 3 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HpackError("a :status that is not three digits"));
    }
    Ok(digits
        .iter()
        .fold(0u16, |s, d| s * 10 + u16::from(d - b'0')))
}

/// Decode a Huffman-coded string of digits (RFC 7541 Appendix B: `0`, `1` and
/// `2` are the 5-bit codes 0 to 2, `3` to `9` the 6-bit codes 25 to 31) into
/// `into`; any other symbol is an error, since a status holds none.
fn huffman_digits(coded: &[u8], into: &mut [u8; 3]) -> Result<usize, HpackError> {
    let mut bits: u64 = 0;
    let mut have = 0u32;
    let mut n = 0;
    let mut take = |into: &mut [u8; 3], d: u8| -> Result<(), HpackError> {
        *into
            .get_mut(n)
            .ok_or(HpackError("a :status that is not three digits"))? = d;
        n += 1;
        Ok(())
    };
    for &b in coded {
        if have > 48 {
            return Err(HpackError("a :status that is not three digits"));
        }
        bits = (bits << 8) | u64::from(b);
        have += 8;
        loop {
            if have >= 5 {
                let five = (bits >> (have - 5)) & 0x1f;
                if five <= 2 {
                    take(into, b'0' + five as u8)?;
                    have -= 5;
                    continue;
                }
            }
            let ones = (1u64 << have) - 1;
            if have >= 6 {
                let six = (bits >> (have - 6)) & 0x3f;
                if (25..=31).contains(&six) {
                    take(into, b'3' + (six - 25) as u8)?;
                    have -= 6;
                    continue;
                }
                // All ones may be the padding at the end (checked there).
                if bits & ones != ones {
                    return Err(HpackError("a :status that is not three digits"));
                }
            }
            break;
        }
    }
    // What is left is padding: fewer than 8 bits, all ones (the start of EOS).
    let rest = bits & ((1u64 << have) - 1);
    if have >= 8 || rest != (1u64 << have) - 1 {
        return Err(HpackError("a Huffman string with bad padding"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_rfc_7541_c1() {
        let mut out = Vec::new();
        integer(&mut out, 5, 0, 10);
        assert_eq!(out, [0x0a]);
        out.clear();
        integer(&mut out, 5, 0, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        integer(&mut out, 8, 0, 42);
        assert_eq!(out, [0x2a]);
        let mut r = Reader {
            buf: &[0x1f, 0x9a, 0x0a],
            at: 0,
        };
        assert_eq!(r.integer(5), Ok(1337));
    }

    #[test]
    fn a_literal_with_a_new_name_is_rfc_7541_c2_2() {
        let mut out = Vec::new();
        literal(&mut out, Name::New(b"password"), b"secret", true);
        assert_eq!(out, b"\x10\x08password\x06secret");
        out.clear();
        literal(&mut out, Name::Static(PATH), b"/sample/path", false);
        assert_eq!(out, b"\x04\x0c/sample/path");
    }

    #[test]
    fn statuses_in_the_static_table() {
        assert_eq!(status(&[0x88]), Ok(Some(200)));
        assert_eq!(status(&[0x8e]), Ok(Some(500)));
        assert_eq!(status(&[0x8d, 0x0f, 0x0d, 0x01, b'0']), Ok(Some(404)));
    }

    #[test]
    fn a_literal_status_raw_or_huffman_coded() {
        // "302" Huffman-coded as in RFC 7541 C.6.1: 0x48 0x82 0x64 0x02.
        assert_eq!(status(&[0x48, 0x82, 0x64, 0x02]), Ok(Some(302)));
        // "307" (C.6.2): 0x48 0x83 0x64 0x0e 0xff.
        assert_eq!(status(&[0x48, 0x83, 0x64, 0x0e, 0xff]), Ok(Some(307)));
        assert_eq!(status(b"\x08\x03503"), Ok(Some(503)));
        assert_eq!(status(b"\x18\x03202"), Ok(Some(202)));
    }

    #[test]
    fn other_fields_are_skipped_whatever_their_coding() {
        // C.6.1's first response after :status: cache-control, date, location,
        // all Huffman-coded, with incremental indexing.
        let block = [
            0x48, 0x82, 0x64, 0x02, 0x58, 0x85, 0xae, 0xc3, 0x77, 0x1a, 0x4b, 0x61, 0x96, 0xd0,
            0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20, 0x05, 0x95, 0x04, 0x0b, 0x81,
            0x66, 0xe0, 0x82, 0xa6, 0x2d, 0x1b, 0xff, 0x6e, 0x91, 0x9d, 0x29, 0xad, 0x17, 0x18,
            0x63, 0xc7, 0x8f, 0x0b, 0x97, 0xc8, 0xe9, 0xae, 0x82, 0xae, 0x43, 0xd3,
        ];
        assert_eq!(status(&block), Ok(Some(302)));
        assert_eq!(status(b"\x00\x01x\x01y\x20\x88"), Ok(Some(200)));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        assert!(status(&[0x80]).is_err(), "index 0");
        assert!(status(&[0xbe]).is_err(), "a dynamic index");
        assert!(status(&[0x3f, 0xe1, 0x1f]).is_err(), "a table of 4096");
        assert!(status(&[0x08, 0x05, b'2']).is_err(), "cut short");
        assert!(status(b"\x08\x0420x0").is_err(), "four characters");
        assert!(status(b"\x08\x022x").is_err(), "not digits");
        assert!(
            status(&[0x48, 0x81, 0x64]).is_err(),
            "two digits, bad padding"
        );
        assert!(
            status(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "a huge integer"
        );
        // 'a' (00011) is not a digit.
        assert!(status(&[0x48, 0x81, 0x1f]).is_err());
    }

    #[test]
    fn no_status_is_none() {
        assert_eq!(status(&[]), Ok(None));
        assert_eq!(status(b"\x0f\x10\x10application/json"), Ok(None));
    }
}
