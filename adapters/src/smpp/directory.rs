//! The message directory: which verification an SMSC's message ids belong to, shared
//! by every node of a deployment.
//!
//! An SMSC sends an account's receipts to whichever of its binds it likes (often the
//! first receiver bound), not to the bind that submitted the message. With several
//! otpd nodes bound to one account, a receipt often reaches a node that has never
//! heard of the message. Each carrier notes what it submitted here; a receipt that
//! matches nothing on its own node is looked up here and applied as if the node had
//! sent the message itself.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::receipt::id_keys;

/// One submitted message: the verification and send it carries, and the SMSC's ids
/// of all its parts (normalised by [`id_keys`]), so that the node that finds it can
/// wait for every part's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noted {
    pub verification_id: String,
    pub send: u8,
    pub ids: Vec<String>,
}

impl Noted {
    /// `verification id \t send \t id,id,…`: verification ids and SMSC ids hold
    /// neither tabs nor commas.
    pub fn encode(&self) -> String {
        format!(
            "{}\t{}\t{}",
            self.verification_id,
            self.send,
            self.ids.join(",")
        )
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut fields = s.splitn(3, '\t');
        let verification_id = fields.next()?.to_string();
        let send = fields.next()?.parse().ok()?;
        let ids: Vec<String> = fields
            .next()?
            .split(',')
            .filter(|i| !i.is_empty())
            .map(str::to_string)
            .collect();
        (!verification_id.is_empty() && !ids.is_empty()).then_some(Self {
            verification_id,
            send,
            ids,
        })
    }
}

/// The keys a receipt's id is looked up under, in order: the id as written
/// (normalised), then, with `other_base`, its readings in the other base.
pub fn lookup_keys(message_id: &str, other_base: bool) -> Vec<String> {
    let mut keys = id_keys(message_id);
    if !other_base {
        keys.truncate(1);
    }
    keys
}

#[derive(Debug, thiserror::Error)]
#[error("message directory unavailable: {0}")]
pub struct DirectoryError(pub String);

/// The seam; see the module doc.
#[async_trait]
pub trait MessageDirectory: Send + Sync + 'static {
    /// Note a submitted message under each of its ids, for `keep` (past which no
    /// receipt is expected). The carrier waits for it before it reports the submit,
    /// so that the note is there before the send is recorded (and its receipt can
    /// come); an implementation batches concurrent notes. A lost note costs only
    /// the receipt of that message if the receipt reaches another node.
    async fn note(
        &self,
        carrier: &str,
        message: Noted,
        keep: Duration,
    ) -> Result<(), DirectoryError>;

    /// The message `message_id` (as a receipt wrote it, any case) of `carrier` is
    /// part of, if some node noted it; with `other_base`, also under the id read
    /// in the other base (after the id as written).
    async fn find(
        &self,
        carrier: &str,
        message_id: &str,
        other_base: bool,
    ) -> Result<Option<Noted>, DirectoryError>;

    /// [`MessageDirectory::find`] for many receipts at once, in order: a carrier
    /// looks up the receipts that matched nothing in batches, one round trip each.
    async fn find_many(
        &self,
        carrier: &str,
        message_ids: &[String],
        other_base: bool,
    ) -> Result<Vec<Option<Noted>>, DirectoryError> {
        let mut found = Vec::with_capacity(message_ids.len());
        for id in message_ids {
            found.push(self.find(carrier, id, other_base).await?);
        }
        Ok(found)
    }
}

/// In memory, for one process with several carriers on one account, and for tests.
#[derive(Default)]
pub struct MemoryDirectory {
    entries: Mutex<HashMap<(String, String), (Noted, Instant)>>,
}

impl MemoryDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl MessageDirectory for MemoryDirectory {
    async fn note(
        &self,
        carrier: &str,
        message: Noted,
        keep: Duration,
    ) -> Result<(), DirectoryError> {
        let until = Instant::now() + keep;
        let mut entries = self.entries.lock();
        let now = Instant::now();
        entries.retain(|_, (_, until)| *until > now);
        for id in &message.ids {
            entries.insert((carrier.to_string(), id.clone()), (message.clone(), until));
        }
        Ok(())
    }

    async fn find(
        &self,
        carrier: &str,
        message_id: &str,
        other_base: bool,
    ) -> Result<Option<Noted>, DirectoryError> {
        let entries = self.entries.lock();
        let now = Instant::now();
        Ok(lookup_keys(message_id, other_base)
            .into_iter()
            .find_map(|k| {
                entries
                    .get(&(carrier.to_string(), k))
                    .filter(|(_, until)| *until > now)
                    .map(|(n, _)| n.clone())
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_reads_back() {
        let n = Noted {
            verification_id: "vf_abc".into(),
            send: 2,
            ids: vec!["1a".into(), "1b".into()],
        };
        assert_eq!(Noted::decode(&n.encode()), Some(n));
        assert_eq!(Noted::decode("vf_abc\t2\t"), None, "no ids");
        assert_eq!(Noted::decode("vf_abc\tx\t1"), None, "bad send");
        assert_eq!(Noted::decode("garbage"), None);
    }

    #[tokio::test]
    async fn found_under_any_part_and_in_the_other_base_when_asked() {
        let d = MemoryDirectory::new();
        let n = Noted {
            verification_id: "vf_1".into(),
            send: 1,
            ids: vec!["ff".into(), "100".into()],
        };
        d.note("movistar", n.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            d.find("movistar", "FF", false).await.unwrap(),
            Some(n.clone())
        );
        assert_eq!(
            d.find("movistar", "0100", false).await.unwrap(),
            Some(n.clone())
        );
        // 255 is ff read in decimal: only when asked.
        assert_eq!(d.find("movistar", "255", false).await.unwrap(), None);
        assert_eq!(d.find("movistar", "255", true).await.unwrap(), Some(n));
        assert_eq!(d.find("vodafone", "ff", true).await.unwrap(), None);
        assert_eq!(d.find("movistar", "77", true).await.unwrap(), None);
    }

    #[tokio::test]
    async fn notes_lapse() {
        let d = MemoryDirectory::new();
        let n = Noted {
            verification_id: "vf_1".into(),
            send: 1,
            ids: vec!["1".into()],
        };
        d.note("c", n, Duration::ZERO).await.unwrap();
        assert_eq!(d.find("c", "1", true).await.unwrap(), None);
    }
}
