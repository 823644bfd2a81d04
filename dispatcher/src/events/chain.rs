//! The audit trail's lines, pure: how a record joins the hash chain, how a
//! checkpoint seals it, and how a file is checked.
//!
//! Each line is one JSON object: `{"seq", "at", "prev", "type", …}`. `prev` is the
//! SHA-256 (hex) of the previous line's bytes, so changing, removing or inserting a
//! line breaks the link of the one after it. Every `checkpoint_every` records (and
//! when a file is closed) a `audit.checkpoint` line signs the chain's head with the
//! configured Ed25519 key: a checkpoint proves everything before it is otpd's, and
//! lines after the last checkpoint are reported as not yet sealed. A file opens with
//! an `audit.opened` line naming the node and the public key; its `prev` links it
//! to the last line of the file before.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::clock::UnixMillis;
use crate::secrets::audit_key::{self, AuditKey};

/// The `prev` of the very first line.
pub const GENESIS: [u8; 32] = [0; 32];

/// What a checkpoint signs: the chain's head at a sequence number.
fn sealed(seq: u64, head: &str) -> Vec<u8> {
    format!("otpd-audit-checkpoint:{seq}:{head}").into_bytes()
}

/// The chain as a writer keeps it.
#[derive(Debug, Clone)]
pub struct Chain {
    seq: u64,
    prev: [u8; 32],
    since_checkpoint: u64,
}

/// One line of the trail, as written.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    at: String,
    prev: String,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    rest: &'a Value,
}

impl Chain {
    /// A chain that goes on after `seq` records whose last line hashed to `prev`.
    pub fn after(seq: u64, prev: [u8; 32]) -> Chain {
        Chain {
            seq,
            prev,
            since_checkpoint: 0,
        }
    }

    /// The next line (without its newline) for a record of `kind` with the fields of
    /// `rest` (an object), and link the chain to it.
    pub fn line(&mut self, at: UnixMillis, kind: &str, rest: &Value) -> String {
        self.seq += 1;
        let text = serde_json::to_string(&Line {
            seq: self.seq,
            at: at.to_rfc3339(),
            prev: hex::encode(self.prev),
            kind,
            rest,
        })
        .expect("plain data serialises");
        self.prev = Sha256::digest(text.as_bytes()).into();
        self.since_checkpoint += 1;
        text
    }

    /// A checkpoint line signing the head so far.
    pub fn checkpoint(&mut self, at: UnixMillis, key: &AuditKey) -> String {
        let head = hex::encode(self.prev);
        let signature = key.sign(&sealed(self.seq + 1, &head));
        let line = self.line(
            at,
            "audit.checkpoint",
            &serde_json::json!({"head": head, "key": key.public(), "signature": signature}),
        );
        self.since_checkpoint = 0;
        line
    }

    /// Records since the last checkpoint.
    pub fn unsealed(&self) -> u64 {
        self.since_checkpoint
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn head(&self) -> [u8; 32] {
        self.prev
    }
}

/// What a check of a file found when it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub records: u64,
    pub checkpoints: u64,
    /// Records after the last checkpoint (written since, or cut off by a crash).
    pub unsealed: u64,
    /// The head and sequence of the last line, to go on into the next file.
    pub last_seq: u64,
    pub head: [u8; 32],
}

/// Where a file stops holding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {seq} (line {line}): {why}")]
pub struct Broken {
    pub line: usize,
    /// The record's sequence number as far as the chain knows it.
    pub seq: u64,
    pub why: String,
}

#[derive(Deserialize)]
struct Head {
    seq: u64,
    prev: String,
    #[serde(rename = "type")]
    kind: String,
    head: Option<String>,
    key: Option<String>,
    signature: Option<String>,
}

/// Check `text`, one file of the trail, line by line. `public` is the key its
/// checkpoints must be signed with; `None`: the key its `audit.opened` line names
/// (which shows the file is whole, not whose it is). `before` is the previous file's
/// last sequence and head, when the check goes on from it.
pub fn check(
    text: &str,
    public: Option<&str>,
    before: Option<(u64, [u8; 32])>,
) -> Result<Checked, Broken> {
    let mut expect_seq = before.map(|(s, _)| s + 1);
    let mut prev: Option<[u8; 32]> = before.map(|(_, h)| h);
    let mut key = public.map(str::to_string);
    let mut out = Checked {
        records: 0,
        checkpoints: 0,
        unsealed: 0,
        last_seq: 0,
        head: GENESIS,
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let seq_guess = expect_seq.unwrap_or(0);
        let broken = |seq: u64, why: String| Broken { line: n, seq, why };
        let head: Head = serde_json::from_str(line)
            .map_err(|e| broken(seq_guess, format!("not a record of the trail: {e}")))?;
        if let Some(want) = expect_seq
            && head.seq != want
        {
            return Err(broken(
                want,
                format!(
                    "sequence {} where {want} should follow: records were removed or inserted",
                    head.seq
                ),
            ));
        }
        if let Some(p) = prev
            && head.prev != hex::encode(p)
        {
            return Err(Broken {
                line: n.saturating_sub(1),
                seq: head.seq.saturating_sub(1),
                why: format!(
                    "it does not hash to what record {} says came before it: it was changed (or the next one was)",
                    head.seq
                ),
            });
        }
        match head.kind.as_str() {
            "audit.opened" if key.is_none() => key = head.key.clone(),
            "audit.checkpoint" => {
                let (Some(h), Some(sig)) = (&head.head, &head.signature) else {
                    return Err(broken(
                        head.seq,
                        "a checkpoint without its head or signature".into(),
                    ));
                };
                if *h != head.prev {
                    return Err(broken(
                        head.seq,
                        "a checkpoint whose head is not the chain's".into(),
                    ));
                }
                let Some(k) = &key else {
                    return Err(broken(
                        head.seq,
                        "a checkpoint before any key is known".into(),
                    ));
                };
                if !audit_key::verify(k, &sealed(head.seq, h), sig) {
                    return Err(broken(
                        head.seq,
                        "a checkpoint whose signature is not the key's".into(),
                    ));
                }
                out.checkpoints += 1;
                out.unsealed = 0;
            }
            _ => out.unsealed += 1,
        }
        out.records += 1;
        out.last_seq = head.seq;
        let hash: [u8; 32] = Sha256::digest(line.as_bytes()).into();
        prev = Some(hash);
        out.head = hash;
        expect_seq = Some(head.seq + 1);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trail(key: &AuditKey, n: u64) -> Vec<String> {
        let mut c = Chain::after(0, GENESIS);
        let mut lines = vec![c.line(
            UnixMillis(0),
            "audit.opened",
            &json!({"node": "n1", "key": key.public()}),
        )];
        for i in 0..n {
            lines.push(c.line(
                UnixMillis(i as i64),
                "verification.sent",
                &json!({"client": "sede", "data": {"verification_id": format!("vf_{i}")}}),
            ));
            if i % 3 == 2 {
                lines.push(c.checkpoint(UnixMillis(i as i64), key));
            }
        }
        lines
    }

    fn key() -> AuditKey {
        AuditKey::parse(&AuditKey::generate().unwrap().0).unwrap()
    }

    #[test]
    fn an_intact_trail_checks_with_its_key() {
        let k = key();
        let lines = trail(&k, 7);
        let c = check(&lines.join("\n"), Some(&k.public()), None).unwrap();
        assert_eq!(c.checkpoints, 2);
        assert_eq!(c.unsealed, 1);
        assert_eq!(c.records, lines.len() as u64);
        // Without the key given, the file's own is used.
        assert!(check(&lines.join("\n"), None, None).is_ok());
    }

    #[test]
    fn a_changed_record_is_named() {
        let k = key();
        let mut lines = trail(&k, 7);
        lines[3] = lines[3].replace("vf_2", "vf_X");
        let e = check(&lines.join("\n"), Some(&k.public()), None).unwrap_err();
        assert_eq!((e.line, e.seq), (4, 4), "{e}");
    }

    #[test]
    fn removed_and_inserted_records_are_named() {
        let k = key();
        let mut lines = trail(&k, 7);
        lines.remove(5);
        let e = check(&lines.join("\n"), Some(&k.public()), None).unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        let mut lines = trail(&k, 7);
        let copy = lines[2].clone();
        lines.insert(3, copy);
        assert!(check(&lines.join("\n"), Some(&k.public()), None).is_err());
    }

    #[test]
    fn a_rewritten_chain_is_caught_by_the_key_it_was_not_signed_with() {
        let real = key();
        let forger = key();
        let forged = trail(&forger, 4).join("\n");
        // Whole by its own key…
        assert!(check(&forged, None, None).is_ok());
        // …but not otpd's.
        let e = check(&forged, Some(&real.public()), None).unwrap_err();
        assert!(e.why.contains("signature"), "{e}");
    }

    #[test]
    fn a_file_goes_on_from_the_one_before() {
        let k = key();
        let first = trail(&k, 2);
        let c1 = check(&first.join("\n"), Some(&k.public()), None).unwrap();
        let mut chain = Chain::after(c1.last_seq, c1.head);
        let next = [chain.line(UnixMillis(9), "audit.opened", &json!({"key": k.public()}))];
        assert!(
            check(
                &next.join("\n"),
                Some(&k.public()),
                Some((c1.last_seq, c1.head))
            )
            .is_ok()
        );
        assert!(
            check(
                &next.join("\n"),
                Some(&k.public()),
                Some((c1.last_seq, GENESIS))
            )
            .is_err()
        );
    }
}
