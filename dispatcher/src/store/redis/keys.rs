//! Key names. Every key of one destination's verifications — the records, their
//! dedupe entries, the partition's escalation index — carries the same hash tag, the
//! destination's *partition*, so that a Redis Cluster keeps them in one slot and one
//! Lua script may touch them all.
//!
//! The partition is the id's shard tag (see [`crate::secrets::id`]) modulo the configured
//! number of partitions. It is part of every key name, so the number of partitions
//! is fixed for the life of a Redis dataset.
//!
//! No key name carries personal data, nor a hash tag taken from a caller's input.
//! Where a key is found by something personal — a phone number, an identity number,
//! a caller's address, an idempotency key — its name holds a keyed hash of it
//! ([`crate::secrets::code::CodeKeys::pseudonym`], keyed by the server secret): somebody who
//! can list the keys (a Redis operator, a leaked `SCAN`) learns no phone and no
//! identity number, and cannot test a guess without the secret. Hash tags are otpd's
//! own: a partition number, `reg`, or a hex hash.

use std::fmt::Write as _;

use crate::numbers::e164::E164;
use crate::policy::limiter::Check;
use crate::secrets::code::Pseudonyms;
use crate::secrets::id::{ShardTag, VerificationId};

/// Builds key names under one prefix.
#[derive(Clone)]
pub struct Keys {
    prefix: Box<str>,
    partitions: u16,
    names: Pseudonyms,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("prefix", &self.prefix)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// `partitions` is at least 1; `names` keys the hashes that stand in for personal
    /// data (every node must use the same: they come from `codes.secret`).
    pub fn new(prefix: &str, partitions: u16, names: Pseudonyms) -> Self {
        Self {
            prefix: prefix.into(),
            partitions: partitions.max(1),
            names,
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
        let name = self.names.of(
            b"dedupe",
            &[
                &to.digits().to_be_bytes(),
                purpose.as_bytes(),
                client.unwrap_or("").as_bytes(),
            ],
        );
        write!(k, "d:{name}").expect("String");
        k
    }

    /// The subject's verifications in partition `partition`: a sorted set of record
    /// keys scored by when each record goes (see `issue.lua`). Kept in the
    /// partition of the verifications it names, so that the script writes
    /// it in the same step; a lookup reads every partition's.
    pub fn subject_index(&self, partition: u16, subject: &str) -> String {
        let mut k = self.partition_prefix(partition);
        let name = self.names.of(b"subject_index", &[subject.as_bytes()]);
        write!(k, "u:{name}").expect("String");
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
    /// alone picks the partition: the node that looks it up knows nothing else. (The
    /// whole id, read as no hash tag: it is the SMSC's text.)
    pub fn message(&self, carrier: &str, message_id: &str) -> String {
        let partition = crc16(message_id.as_bytes()) % self.partitions;
        let mut k = self.partition_prefix(partition);
        write!(k, "m:{carrier}:{message_id}").expect("writing to a String");
        k
    }

    /// An idempotency record: the client's key, hashed — it is the caller's text,
    /// so it must neither show nor pick the hash tag (a `}` in it would move it).
    /// The hash itself is the tag, spreading records over the cluster.
    pub fn idempotency(&self, key: &str) -> String {
        let name = self.names.of(b"idempotency", &[key.as_bytes()]);
        format!("{}:idem:{{{name}}}", self.prefix)
    }

    /// The registry lives in one slot (`{reg}`): a number's owner and the subject's
    /// record must change together, in one script.
    pub fn subscriber(&self, subject: &str) -> String {
        let name = self.names.of(b"subscriber", &[subject.as_bytes()]);
        format!("{}:{{reg}}:s:{name}", self.prefix)
    }

    /// The entry naming the subject a number is registered to. Its name is kept in
    /// the subscriber's record (`pk`), so that scripts find the old entry when the
    /// number changes.
    pub fn phone_owner(&self, phone: E164) -> String {
        let name = self.names.of(b"phone", &[&phone.digits().to_be_bytes()]);
        format!("{}:{{reg}}:p:{name}", self.prefix)
    }

    /// One limit's key: `otpd:l:<limit>:<hash of the key bytes>`. Every limit's key
    /// is hashed alike, whether it is a number, an address, a subject or a client.
    pub fn limit(&self, c: &Check<'_>) -> Vec<u8> {
        let mut k = self.limit_prefix(c.limit).into_bytes();
        write!(Hex(&mut k), "{}", self.limit_name(c.limit, c.key)).expect("Vec");
        k
    }

    /// The start of every key of one limit.
    pub fn limit_prefix(&self, limit: &str) -> String {
        format!("{}:l:{limit}:", self.prefix)
    }

    /// The part of a limit's key after [`Keys::limit_prefix`]: scripts that build a
    /// key themselves (a subject's wrong codes, from the record) find it in the
    /// record.
    pub fn limit_name(&self, limit: &str, key: &[u8]) -> crate::secrets::code::Pseudonym {
        self.names.of(b"limit", &[limit.as_bytes(), key])
    }
}

/// `fmt::Write` into a byte vector.
struct Hex<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Hex<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
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
    crc16(tagged) % 16384
}

/// CRC16/XMODEM, the checksum Redis Cluster slots are made of.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(key: &str) -> u16 {
        super::slot(key.as_bytes())
    }

    fn names() -> Pseudonyms {
        crate::secrets::code::CodeKeys::derive(b"a test secret of thirty-two bytes!").pseudonyms()
    }

    #[test]
    fn names_show_no_number_subject_or_key_and_take_no_tag_from_them() {
        let keys = Keys::new("otpd", 64, names());
        let to = E164::from_digits_unchecked(34_600_123_456);
        for k in [
            keys.dedupe(to, "login", Some("bank")),
            keys.subscriber("12345678Z"),
            keys.phone_owner(to),
            keys.idempotency("bank\n}{evil}"),
            String::from_utf8(
                keys.limit(&Check {
                    limit: "subject",
                    key: b"12345678Z",
                    quota: crate::policy::gcra::Quota::new(1, std::time::Duration::from_secs(1), 1)
                        .unwrap(),
                }),
            )
            .unwrap(),
        ] {
            assert!(
                !k.contains("600123456") && !k.contains("12345678Z") && !k.contains("evil"),
                "{k}"
            );
            assert_eq!(k.matches('{').count(), k.matches('}').count(), "{k}");
        }
        // Another secret, other names.
        let other = Keys::new(
            "otpd",
            64,
            crate::secrets::code::CodeKeys::derive(b"another secret, thirty-two bytes")
                .pseudonyms(),
        );
        assert_ne!(keys.subscriber("12345678Z"), other.subscriber("12345678Z"));
        assert_eq!(
            keys.subscriber("12345678Z"),
            Keys::new("otpd", 64, names()).subscriber("12345678Z")
        );
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
        let keys = Keys::new("otpd", 64, names());
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
        let keys = Keys::new("otpd", 64, names());
        let slots: std::collections::HashSet<u16> =
            (0..64).map(|p| slot(&keys.escalations(p))).collect();
        assert_eq!(slots.len(), 64);
    }
}
