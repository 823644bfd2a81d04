//! The `file` channel: appends each message as one JSON line to an outbox file.
//!
//! It is otpd's local development and demo channel, and the only place where a
//! plaintext code may ever appear, so the file is created readable by its owner only.
//! A dedicated writer thread owns the file: submits from many delivery workers are
//! batched into one `write` + `flush`, and the async runtime never blocks on disk.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Serialize;
use slot::Slot;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::channel::{Channel, ChannelError, Message, SubmitReceipt};
use crate::push::{Notification, Outcome, Pusher};

/// How many lines the writer takes in one batch at most.
const MAX_BATCH: usize = 512;
/// Free space on the outbox's file system for a batch of lines, before a channel
/// whose writes failed is tried again.
const ROOM: u64 = 64 * 1024;

/// Whether the file system holding `path` has [`ROOM`] free for otpd's user.
fn has_room(path: &Path) -> bool {
    rustix::fs::statvfs(path)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize) >= ROOM)
        .unwrap_or(false)
}

/// Submits waiting for the writer; beyond this, submitters wait (backpressure).
const QUEUE_DEPTH: usize = 4096;

type Ack = oneshot::Sender<io::Result<u64>>;

/// One outbox line. Field order is the order a reader sees.
#[derive(Serialize)]
struct OutboxLine<'a> {
    verification_id: &'a str,
    send: u8,
    channel: &'a str,
    to: &'a str,
    locale: &'a str,
    purpose: &'a str,
    text: &'a str,
    expires_at_ms: i64,
    written_at_ms: i64,
}

/// The outbox channel. Cheap to share behind an `Arc`.
pub struct FileChannel {
    path: PathBuf,
    /// The last write failed (a full disk): the channel says it is down until its
    /// file system has room again, so that sends wait for it as for a carrier whose
    /// link is down rather than spend their attempts. A write that goes through
    /// clears it.
    failing: std::sync::atomic::AtomicBool,
    lines: Slot<mpsc::Sender<(Zeroizing<Vec<u8>>, Ack)>>,
    writer: Slot<JoinHandle<()>>,
}

impl FileChannel {
    /// Open (creating if needed, mode 0600 on Unix) the outbox at `path` for appending
    /// and start its writer thread.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = open_outbox(&path)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = std::thread::Builder::new()
            .name("otpd-outbox".into())
            .spawn(move || write_lines(file, rx))?;
        Ok(Self {
            path,
            failing: std::sync::atomic::AtomicBool::new(false),
            lines: Slot::new(tx),
            writer: Slot::new(writer),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `line` as one JSON line; returns where it starts in the file.
    async fn append(&self, line: &impl Serialize) -> Result<u64, ChannelError> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(256));
        serde_json::to_writer(&mut *bytes, line).map_err(|e| ChannelError::Rejected {
            reason: format!("cannot encode outbox line: {e}"),
        })?;
        bytes.push(b'\n');

        let sender = self.lines.get().ok_or(ChannelError::Closed)?;
        let (ack, answer) = oneshot::channel();
        sender
            .send((bytes, ack))
            .await
            .map_err(|_| ChannelError::Closed)?;
        let written = answer.await;
        self.failing.store(
            matches!(written, Ok(Err(_))),
            std::sync::atomic::Ordering::Relaxed,
        );
        match written {
            Ok(Ok(position)) => Ok(position),
            Ok(Err(e)) => Err(ChannelError::Temporary {
                reason: format!("cannot write outbox {}: {e}", self.path.display()),
                retry_after: None,
            }),
            Err(_) => Err(ChannelError::Closed),
        }
    }
}

/// One push, as the outbox shows it.
#[derive(Serialize)]
struct PushLine<'a> {
    verification_id: &'a str,
    channel: &'static str,
    platform: &'static str,
    token: &'a str,
    app: &'a str,
    title: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    match_code: Option<&'a str>,
    /// An approval request: what the app shows and signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalLine<'a>>,
    /// What the app sends to acknowledge the push.
    #[serde(skip_serializing_if = "Option::is_none")]
    ack_token: Option<&'a str>,
    expires_at_ms: i64,
    written_at_ms: i64,
}

#[derive(Serialize)]
struct ApprovalLine<'a> {
    challenge: &'a str,
    requester: &'a str,
    purpose: &'a str,
}

/// Pushes for one platform written to the outbox instead of a provider: the demo and
/// development stand-in for APNs, FCM or HMS.
pub struct FilePusher {
    file: std::sync::Arc<FileChannel>,
    platform: &'static str,
}

impl FilePusher {
    /// `platform` names the provider it stands in for (`apns`, `fcm`, `hms`).
    pub fn new(file: std::sync::Arc<FileChannel>, platform: &'static str) -> Self {
        Self { file, platform }
    }
}

#[async_trait]
impl Pusher for FilePusher {
    fn name(&self) -> &str {
        "file"
    }

    async fn push(&self, push: &Notification<'_>, app: &str) -> Outcome {
        let line = PushLine {
            verification_id: push.verification_id,
            channel: "push",
            platform: self.platform,
            token: push.token,
            app,
            title: push.title,
            text: push.body,
            match_code: push.match_code,
            approval: push.approval.map(|a| ApprovalLine {
                challenge: a.challenge,
                requester: a.requester,
                purpose: a.purpose,
            }),
            ack_token: push.ack_token,
            expires_at_ms: push.expires_at.saturating_mul(1000),
            written_at_ms: now_ms(),
        };
        match self.file.append(&line).await {
            Ok(position) => Outcome::Accepted {
                id: Some(format!("outbox:{position}")),
            },
            Err(ChannelError::Temporary { reason, .. }) => Outcome::Retry {
                reason,
                after: None,
            },
            Err(e) => Outcome::Fail {
                reason: e.to_string(),
            },
        }
    }
}

fn open_outbox(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The writer thread: drain what is queued, write it in one go, then answer each
/// submitter with its line's position (the byte offset where the line starts).
fn write_lines(file: File, mut rx: mpsc::Receiver<(Zeroizing<Vec<u8>>, Ack)>) {
    let mut offset = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let mut batch: Vec<(Zeroizing<Vec<u8>>, Ack)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let start = offset;
        let mut positions = Vec::with_capacity(batch.len());
        let mut result = Ok(());
        for (line, _) in &batch {
            positions.push(offset);
            if result.is_ok() {
                result = out.write_all(line);
                offset += line.len() as u64;
            }
        }
        if result.is_ok() {
            result = out.flush();
        }
        if result.is_err() {
            // A full disk: every line of the batch is refused (its senders try
            // again), so none may stay half written or buffered to go out later.
            let (file, _unwritten) = out.into_parts();
            let _ = file.set_len(start);
            out = BufWriter::with_capacity(64 * 1024, file);
            offset = start;
        }
        for ((_, ack), position) in batch.drain(..).zip(positions) {
            let answer = match &result {
                Ok(()) => Ok(position),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            // The submitter may have given up (shutdown); nothing to tell it then.
            let _ = ack.send(answer);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[async_trait]
impl Channel for FileChannel {
    fn name(&self) -> &str {
        "file"
    }

    fn healthy(&self) -> bool {
        !self.failing.load(std::sync::atomic::Ordering::Relaxed) || has_room(&self.path)
    }

    async fn submit(&self, message: &Message) -> Result<SubmitReceipt, ChannelError> {
        let line = OutboxLine {
            verification_id: &message.verification_id,
            send: message.send,
            channel: message.kind.as_str(),
            to: &message.to,
            locale: message.locale,
            purpose: &message.purpose,
            text: message.text.expose(),
            expires_at_ms: message.expires_at_ms,
            written_at_ms: now_ms(),
        };
        let position = self.append(&line).await?;
        Ok(SubmitReceipt {
            reference: format!("outbox:{position}"),
        })
    }

    async fn shutdown(&self) {
        // Dropping the sender ends the writer loop once the queue is drained.
        drop(self.lines.take());
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

/// A value that can be taken out once through a shared reference.
mod slot {
    use std::sync::Mutex;

    pub struct Slot<T>(Mutex<Option<T>>);

    impl<T: Clone> Slot<T> {
        pub fn get(&self) -> Option<T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    impl<T> Slot<T> {
        pub fn new(value: T) -> Self {
            Self(Mutex::new(Some(value)))
        }

        pub fn take(&self) -> Option<T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{ChannelKind, MessageText};

    fn message(id: &str, text: &str) -> Message {
        Message {
            verification_id: id.into(),
            send: 1,
            to: "+34600123456".into(),
            kind: ChannelKind::Sms,
            locale: "es",
            purpose: "login".into(),
            text: MessageText::new(text.into()),
            expires_at_ms: 1_700_000_000_000,
        }
    }

    #[tokio::test]
    async fn appends_one_json_line_per_message_and_flushes_before_answering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let channel = FileChannel::open(&path).unwrap();
        let first = channel
            .submit(&message("vf_1", "code 123456"))
            .await
            .unwrap();
        let second = channel
            .submit(&message("vf_2", "código 654321"))
            .await
            .unwrap();
        assert_eq!(first.reference, "outbox:0");
        assert_ne!(first.reference, second.reference);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["verification_id"], "vf_1");
        assert_eq!(lines[1]["text"], "código 654321");
        assert_eq!(lines[1]["channel"], "sms");
        assert_eq!(lines[1]["to"], "+34600123456");
        channel.shutdown().await;
    }

    #[tokio::test]
    async fn many_concurrent_submits_each_get_a_distinct_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let channel = std::sync::Arc::new(FileChannel::open(&path).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let channel = channel.clone();
            tasks.push(tokio::spawn(async move {
                channel
                    .submit(&message(&format!("vf_{i}"), "x"))
                    .await
                    .unwrap()
                    .reference
            }));
        }
        let mut refs = std::collections::HashSet::new();
        for t in tasks {
            assert!(refs.insert(t.await.unwrap()));
        }
        channel.shutdown().await;
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 200);
    }

    #[tokio::test]
    async fn reopening_appends_instead_of_truncating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        for round in 0..2 {
            let channel = FileChannel::open(&path).unwrap();
            channel
                .submit(&message(&format!("vf_{round}"), "x"))
                .await
                .unwrap();
            channel.shutdown().await;
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[tokio::test]
    async fn submit_after_shutdown_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let channel = FileChannel::open(dir.path().join("o.jsonl")).unwrap();
        channel.shutdown().await;
        let err = channel.submit(&message("vf_1", "x")).await.unwrap_err();
        assert!(matches!(err, ChannelError::Closed));
    }

    #[cfg(unix)]
    #[test]
    fn outbox_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.jsonl");
        let _channel = FileChannel::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o} lets others read codes");
    }

    #[test]
    fn opening_an_unwritable_path_fails_with_io_error() {
        let err = FileChannel::open("/nonexistent-dir/for/otpd/outbox.jsonl").err();
        assert!(err.is_some());
    }
}
