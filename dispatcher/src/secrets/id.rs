//! Verification ids: `vf_` followed by 32 lowercase hex digits (128 bits).
//!
//! The first 16 bits are a *shard tag* derived from the destination number; the other
//! 112 bits come from the operating system's CSPRNG, so ids cannot be guessed. The tag
//! lets a store keep every record about one destination (the verification, its dedupe
//! entry, later its limits) on one shard — one lock in memory, one Redis Cluster slot —
//! and find that shard again from the id alone.

use std::fmt;
use std::str::FromStr;

use crate::numbers::e164::E164;

pub const ID_PREFIX: &str = "vf_";

/// 16-bit tag naming the shard of a destination. Stable across processes and versions:
/// it is part of every id ever issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardTag(pub u16);

impl ShardTag {
    /// The tag of a destination number (splitmix64 finaliser of its digits: fixed,
    /// fast, and well mixed even for consecutive numbers).
    pub fn of(to: E164) -> Self {
        let mut z = to.digits().wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ShardTag((z >> 48) as u16)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerificationId([u8; 16]);

impl VerificationId {
    pub fn new(tag: ShardTag, random: [u8; 14]) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..2].copy_from_slice(&tag.0.to_be_bytes());
        bytes[2..].copy_from_slice(&random);
        Self(bytes)
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn shard_tag(&self) -> ShardTag {
        ShardTag(u16::from_be_bytes([self.0[0], self.0[1]]))
    }
}

impl fmt::Display for VerificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        hex::encode_to_slice(self.0, &mut buf).expect("32 hex digits for 16 bytes");
        f.write_str(ID_PREFIX)?;
        f.write_str(std::str::from_utf8(&buf).expect("hex is ASCII"))
    }
}

impl fmt::Debug for VerificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a verification id is `vf_` followed by 32 lowercase hex digits")]
pub struct InvalidId;

impl FromStr for VerificationId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, InvalidId> {
        let hex_part = s.strip_prefix(ID_PREFIX).ok_or(InvalidId)?;
        if hex_part.len() != 32
            || !hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(InvalidId);
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| InvalidId)?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = VerificationId::new(ShardTag(0xBEEF), [7; 14]);
        let s = id.to_string();
        assert_eq!(s, "vf_beef0707070707070707070707070707");
        assert_eq!(s.parse::<VerificationId>().unwrap(), id);
        assert_eq!(id.shard_tag(), ShardTag(0xBEEF));
    }

    #[test]
    fn rejects_anything_but_the_canonical_form() {
        for bad in [
            "",
            "vf_",
            "beef0707070707070707070707070707",
            "vf_BEEF0707070707070707070707070707",
            "vf_beef070707070707070707070707070",
            "vf_beef07070707070707070707070707070",
            "vf_beef070707070707070707070707070g",
            "xx_beef0707070707070707070707070707",
            "vf_beef0707070707070707070707070７07",
        ] {
            assert_eq!(bad.parse::<VerificationId>(), Err(InvalidId), "{bad:?}");
        }
    }

    #[test]
    fn consecutive_numbers_spread_over_tags() {
        let tags: std::collections::HashSet<u16> = (0..1000u64)
            .map(|i| ShardTag::of(E164::from_digits_unchecked(34_600_000_000 + i)).0 >> 10)
            .collect();
        // 1000 numbers over 64 buckets of the top six bits: all buckets get some.
        assert_eq!(tags.len(), 64);
    }

    proptest! {
        #[test]
        fn any_id_round_trips(bytes in any::<[u8; 16]>()) {
            let id = VerificationId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<VerificationId>().unwrap(), id);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,64}") {
            let _ = s.parse::<VerificationId>();
        }
    }
}
