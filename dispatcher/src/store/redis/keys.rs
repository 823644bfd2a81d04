//! Key names. Every key of one destination's verifications — the records, their
//! dedupe entries, the partition's escalation index — carries the same hash tag, the
//! destination's *partition*, so that a Redis Cluster keeps them in one slot and one
//! Lua script may touch them all.
//!
//! The partition is the id's shard tag (see [`crate::id`]) modulo the configured
//! number of partitions. It is part of every key name, so the number of partitions
//! is fixed for the life of a Redis dataset.

use std::fmt::Write as _;

use crate::id::{ShardTag, VerificationId};
use crate::phone::E164;

/// Builds key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: Box<str>,
    partitions: u16,
}

impl Keys {
    /// `partitions` is at least 1.
    pub fn new(prefix: &str, partitions: u16) -> Self {
        Self {
            prefix: prefix.into(),
            partitions: partitions.max(1),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    pub fn partition_of(&self, tag: ShardTag) -> u16 {
        tag.0 % self.partitions
    }

    /// `otpd:{17}:`: the start of every key of partition 17.
    fn partition_prefix(&self, partition: u16) -> String {
        format!("{}:{{{partition}}}:", self.prefix)
    }

    pub fn verification(&self, id: &VerificationId) -> String {
        let mut k = self.partition_prefix(self.partition_of(id.shard_tag()));
        write!(k, "v:{id}").expect("writing to a String");
        k
    }

    /// The verification id at the end of a verification key.
    pub fn id_of(key: &[u8]) -> Option<VerificationId> {
        let start = key.iter().rposition(|&b| b == b':')? + 1;
        std::str::from_utf8(&key[start..]).ok()?.parse().ok()
    }

    /// The entry naming the pending verification of one client, number and purpose.
    pub fn dedupe(&self, to: E164, purpose: &str, client: Option<&str>) -> String {
        let mut k = self.partition_prefix(self.partition_of(ShardTag::of(to)));
        // The client comes last: a purpose name cannot contain ':' (config checks
        // it), so no two (purpose, client) pairs share a key.
        write!(k, "d:{}:{purpose}:{}", to.digits(), client.unwrap_or("")).expect("String");
        k
    }

    /// The partition's armed escalations, scored by due time.
    pub fn escalations(&self, partition: u16) -> String {
        self.partition_prefix(partition) + "esc"
    }

    /// The escalation index a verification is armed in.
    pub fn escalations_of(&self, id: &VerificationId) -> String {
        self.escalations(self.partition_of(id.shard_tag()))
    }

    /// The partition's delivery stream.
    pub fn stream(&self, partition: u16) -> String {
        self.partition_prefix(partition) + "q"
    }

    /// The delivery stream a verification's jobs go to.
    pub fn stream_of(&self, id: &VerificationId) -> String {
        self.stream(self.partition_of(id.shard_tag()))
    }

    /// Where a carrier's SMSC message id is noted (see [`super::directory`]). The id
    /// alone picks the partition: the node that looks it up knows nothing else.
    pub fn message(&self, carrier: &str, message_id: &str) -> String {
        let partition = slot(message_id.as_bytes()) % self.partitions;
        let mut k = self.partition_prefix(partition);
        write!(k, "m:{carrier}:{message_id}").expect("writing to a String");
        k
    }

    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{{{key}}}", self.prefix)
    }

    /// The registry lives in one slot (`{reg}`): a number's owner and the subject's
    /// record must change together, in one script.
    pub fn subscriber(&self, subject: &str) -> String {
        format!("{}:{{reg}}:s:{subject}", self.prefix)
    }

    pub fn phone_owner(&self, phone: E164) -> String {
        format!("{}{}", self.phone_owner_prefix(), phone.digits())
    }

    /// Scripts append a number's digits to this to find its owner entry.
    pub fn phone_owner_prefix(&self) -> String {
        format!("{}:{{reg}}:p:", self.prefix)
    }
}

/// The Redis Cluster slot of a key: CRC16/XMODEM of its hash tag (the text between
/// the first `{` and the next `}`, if not empty) or of the whole key, mod 16384.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|a| {
            let rest = &key[a + 1..];
            let b = rest.iter().position(|&b| b == b'}')?;
            (b > 0).then(|| &rest[..b])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(key: &str) -> u16 {
        super::slot(key.as_bytes())
    }

    #[test]
    fn slots_are_those_redis_computes() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
    }

    #[test]
    fn a_destinations_keys_share_a_slot() {
        let keys = Keys::new("otpd", 64);
        for digits in [34_600_000_001u64, 34_600_000_002, 447_700_900_123] {
            let to = E164::from_digits_unchecked(digits);
            let id = VerificationId::new(ShardTag::of(to), [7; 14]);
            let v = keys.verification(&id);
            assert_eq!(slot(&v), slot(&keys.dedupe(to, "login", Some("bank"))));
            assert_eq!(slot(&v), slot(&keys.escalations_of(&id)));
            assert_eq!(slot(&v), slot(&keys.stream_of(&id)));
            assert_eq!(Keys::id_of(v.as_bytes()), Some(id));
        }
        assert_eq!(
            slot(&keys.subscriber("12345678Z")),
            slot(&keys.phone_owner(E164::from_digits_unchecked(34_600_000_001)))
        );
    }

    #[test]
    fn partitions_spread_over_slots() {
        let keys = Keys::new("otpd", 64);
        let slots: std::collections::HashSet<u16> =
            (0..64).map(|p| slot(&keys.escalations(p))).collect();
        assert_eq!(slots.len(), 64);
    }
}
