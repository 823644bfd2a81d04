//! The audit trail: every event — verifications' changes, and what clients and
//! admins did — appended to a hash-chained file ([`super::chain`]) with signed
//! checkpoints, for a help desk, forensics and citizens' requests for their data.
//!
//! [`Audit::emit`] only queues the event (bounded); one writer thread turns the
//! queue into lines, in batches: one `write` per batch, a checkpoint every
//! `checkpoint_every` records or `checkpoint_interval`, `fdatasync` with each
//! checkpoint. Files rotate every `rotate_every` (and at each start) — each closed
//! with a checkpoint and the next linked to it — and files older than `retention`
//! are deleted. A queue that overflows (a disk far slower than the events) loses
//! the events and says so in the trail itself (`audit.gap`, with how many), and in
//! `otpd_audit_dropped_total`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;

use super::chain::{self, Chain, GENESIS};
use super::{Event, EventSink};
use crate::domain::clock::{Clock, UnixMillis};
use crate::secrets::audit_key::AuditKey;

/// Events waiting for the writer, at most.
const QUEUE: usize = 65_536;

/// How the trail is kept (`[audit]`).
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub dir: PathBuf,
    pub key: AuditKey,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    pub rotate_every: Duration,
    pub retention: Duration,
    /// Who writes: one trail per node.
    pub node: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the audit trail at {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    source: std::io::Error,
}

enum Msg {
    Event(Box<Event>),
    /// Write what came before, seal the file and stop.
    Close,
}

pub struct Audit {
    queue: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Audit {
    /// Open the trail in `settings.dir` (made if absent), going on from its last
    /// file, and start the writer.
    pub fn start(settings: AuditSettings, clock: Arc<dyn Clock>) -> Result<Audit, AuditError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError { path, source }
        };
        fs::create_dir_all(&settings.dir).map_err(err(&settings.dir))?;
        let (seq, head) = last_head(&settings.dir).map_err(err(&settings.dir))?;
        // Starting again is a rotation: the file of the last run is left as it is.
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            chain: Chain::after(seq, head),
            file: None,
            settings,
            clock,
            dropped: dropped.clone(),
            last_checkpoint: Instant::now(),
            sealed: false,
        };
        writer.open().map_err(err(&writer.settings.dir))?;
        let thread = std::thread::Builder::new()
            .name("otpd-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(err(Path::new("the writer thread")))?;
        Ok(Audit {
            queue: tx,
            dropped,
            writer: Mutex::new(Some(thread)),
        })
    }

    /// Write what is queued, seal the file with a checkpoint and stop the writer.
    pub fn close(&self) {
        if let Some(t) = self.writer.lock().take() {
            let _ = self.queue.send(Msg::Close);
            let _ = t.join();
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.close();
    }
}

impl EventSink for Audit {
    fn emit(&self, event: &Event) {
        if self
            .queue
            .try_send(Msg::Event(Box::new(event.clone())))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("otpd_audit_dropped_total").increment(1);
        }
    }

    /// The trail wants every event, including those that cost a read to make.
    fn listening(&self) -> bool {
        true
    }
}

struct Writer {
    chain: Chain,
    file: Option<(File, PathBuf, UnixMillis)>,
    settings: AuditSettings,
    clock: Arc<dyn Clock>,
    dropped: Arc<AtomicU64>,
    last_checkpoint: Instant,
    /// What is about to be written holds a checkpoint.
    sealed: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut reported = 0;
        let mut buf = String::new();
        loop {
            let first = rx.recv_timeout(
                self.settings
                    .checkpoint_interval
                    .min(Duration::from_secs(1)),
            );
            let mut closing = false;
            let mut batch = Vec::new();
            match first {
                Ok(Msg::Event(e)) => batch.push(e),
                Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => closing = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            while !closing && batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(Msg::Event(e)) => batch.push(e),
                    Ok(Msg::Close) => closing = true,
                    Err(_) => break,
                }
            }
            for e in batch {
                buf.push_str(&self.record(&e));
                buf.push('\n');
                if self.chain.unsealed() >= self.settings.checkpoint_every {
                    self.seal_into(&mut buf);
                }
            }
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped > reported {
                let line = self.chain.line(
                    self.clock.now(),
                    "audit.gap",
                    &json!({"lost": dropped - reported}),
                );
                buf.push_str(&line);
                buf.push('\n');
                reported = dropped;
            }
            let due = self.chain.unsealed() > 0
                && self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval;
            if due || closing {
                self.seal_into(&mut buf);
            }
            if !buf.is_empty() {
                self.write(&buf);
                buf.clear();
            }
            if closing {
                return;
            }
            self.maybe_rotate();
        }
    }

    /// An event's line.
    fn record(&mut self, e: &Event) -> String {
        let rest = json!({"client": e.client.as_deref(), "data": e.data});
        self.chain.line(e.at, e.kind.as_str(), &rest)
    }

    fn seal_into(&mut self, buf: &mut String) {
        buf.push_str(&self.chain.checkpoint(self.clock.now(), &self.settings.key));
        buf.push('\n');
        self.last_checkpoint = Instant::now();
        self.sealed = true;
    }

    fn write(&mut self, text: &str) {
        let Some((file, path, _)) = self.file.as_mut() else {
            return;
        };
        // A batch with a checkpoint goes to the device before the next one.
        let sealed = std::mem::take(&mut self.sealed);
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| if sealed { file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            metrics::counter!("otpd_audit_write_errors_total").increment(1);
            tracing::error!(path = %path.display(), error = %e, "cannot write the audit trail");
        }
    }

    /// Start a new file, its first line linked to the last of the one before.
    fn open(&mut self) -> std::io::Result<()> {
        let now = self.clock.now();
        let path = self
            .settings
            .dir
            .join(format!("audit-{:013}.jsonl", now.0.max(0)));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.file = Some((file, path, now));
        let opened = self.chain.line(
            now,
            "audit.opened",
            &json!({"node": self.settings.node, "key": self.settings.key.public()}),
        );
        self.write(&format!("{opened}\n"));
        Ok(())
    }

    /// Close the file with a checkpoint and open the next once it is old enough,
    /// and delete files past their retention.
    fn maybe_rotate(&mut self) {
        let now = self.clock.now();
        let Some((_, _, opened)) = &self.file else {
            return;
        };
        if now.0 - opened.0 < self.settings.rotate_every.as_millis() as i64 {
            return;
        }
        let mut buf = String::new();
        self.seal_into(&mut buf);
        self.write(&buf);
        if let Err(e) = self.open() {
            tracing::error!(error = %e, "cannot start the next audit file");
        }
        retire(&self.settings.dir, now.minus(self.settings.retention));
    }
}

/// The trail's files, oldest first.
pub fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Delete the files whose every line is older than `before` (a file's lines are
/// all older than the next file's start).
fn retire(dir: &Path, before: UnixMillis) {
    let Ok(all) = files(dir) else { return };
    for pair in all.windows(2) {
        let next_start = pair[1].file_name().and_then(|n| n.to_str()).and_then(|n| {
            n.strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .parse::<i64>()
                .ok()
        });
        if next_start.is_some_and(|s| s < before.0)
            && let Err(e) = fs::remove_file(&pair[0])
        {
            tracing::warn!(path = %pair[0].display(), error = %e, "cannot delete an expired audit file");
        }
    }
}

/// The last whole line's sequence and hash in the newest file, to go on from: a
/// line cut by a crash is cut off the file.
fn last_head(dir: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let Some(last) = files(dir)?.pop() else {
        return Ok((0, GENESIS));
    };
    let text = fs::read_to_string(&last)?;
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        OpenOptions::new()
            .write(true)
            .open(&last)?
            .set_len(whole as u64)?;
    }
    let Some(line) = text[..whole].lines().last() else {
        return Ok((0, GENESIS));
    };
    let seq = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0);
    use sha2::Digest;
    Ok((seq, sha2::Sha256::digest(line.as_bytes()).into()))
}

/// Check the trail at `path` (a file, or a directory whose files are checked in
/// order, each linked to the one before) against `public` (the key checkpoints
/// must be signed with; `None`: each file's own).
pub fn verify(path: &Path, public: Option<&str>) -> Result<Vec<(PathBuf, chain::Checked)>, String> {
    let list = if path.is_dir() {
        files(path).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        vec![path.to_owned()]
    };
    let mut out = Vec::new();
    let mut before = None;
    for file in list {
        let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let checked =
            chain::check(&text, public, before).map_err(|b| format!("{}: {b}", file.display()))?;
        before = Some((checked.last_seq, checked.head));
        out.push((file, checked));
    }
    Ok(out)
}

/// The records of the trail at `path` (file or directory) about `subject`, in
/// order: a citizen's history.
pub fn export(path: &Path, subject: &str, out: &mut impl Write) -> Result<usize, String> {
    let list = if path.is_dir() {
        files(path).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        vec![path.to_owned()]
    };
    let mut n = 0;
    for file in list {
        let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["data"]["subject"].as_str() == Some(subject) {
                writeln!(out, "{line}").map_err(|e| e.to_string())?;
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::ManualClock;
    use crate::events::{EventData, EventKind};

    fn settings(dir: &Path, key: &AuditKey) -> AuditSettings {
        AuditSettings {
            dir: dir.to_owned(),
            key: key.clone(),
            checkpoint_every: 3,
            checkpoint_interval: Duration::from_secs(3600),
            rotate_every: Duration::from_secs(86_400),
            retention: Duration::from_secs(86_400 * 30),
            node: "n1".into(),
        }
    }

    fn event(n: u8, subject: &str) -> Event {
        Event {
            kind: EventKind::Approved,
            at: UnixMillis(1_000 + i64::from(n)),
            client: Some("sede".into()),
            data: EventData {
                subject: Some(subject.into()),
                verification_id: Some(format!("vf_{n}")),
                ..EventData::default()
            },
        }
    }

    #[test]
    fn a_trail_written_closed_and_reopened_checks_whole_and_exports_a_subject() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::parse(&AuditKey::generate().unwrap().0).unwrap();
        let clock = Arc::new(ManualClock::new(UnixMillis(1_000)));
        for round in 0..2u8 {
            clock.advance(Duration::from_secs(1));
            let audit = Audit::start(settings(dir.path(), &key), clock.clone()).unwrap();
            for n in 0..7 {
                audit.emit(&event(
                    round * 10 + n,
                    if n % 2 == 0 { "12345678Z" } else { "X1234567L" },
                ));
            }
            audit.close();
        }
        let checked = verify(dir.path(), Some(&key.public())).unwrap();
        assert_eq!(checked.len(), 2);
        assert!(checked.iter().all(|(_, c)| c.unsealed == 0));
        let mut out = Vec::new();
        assert_eq!(export(dir.path(), "12345678Z", &mut out).unwrap(), 8);
        // A changed line is named, with its file.
        let first = &checked[0].0;
        let text = fs::read_to_string(first).unwrap().replace("vf_3", "vf_9");
        fs::write(first, text).unwrap();
        let e = verify(dir.path(), Some(&key.public())).unwrap_err();
        assert!(e.contains("record 6 (line 6)"), "{e}");
    }

    #[test]
    fn files_rotate_on_time_and_go_after_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::parse(&AuditKey::generate().unwrap().0).unwrap();
        let clock = Arc::new(ManualClock::new(UnixMillis(10_000)));
        let s = AuditSettings {
            checkpoint_interval: Duration::from_millis(50),
            rotate_every: Duration::from_secs(1),
            retention: Duration::from_secs(2),
            ..settings(dir.path(), &key)
        };
        let audit = Audit::start(s, clock.clone()).unwrap();
        let names = || -> Vec<String> {
            files(dir.path())
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let wait_for = |want: &[&str]| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while names() != want {
                assert!(Instant::now() < deadline, "{:?}, not {want:?}", names());
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        audit.emit(&event(1, "12345678Z"));
        clock.advance(Duration::from_millis(1_500));
        wait_for(&["audit-0000000010000.jsonl", "audit-0000000011500.jsonl"]);
        clock.advance(Duration::from_secs(3));
        // The first file's records are all older than the retention: it goes.
        wait_for(&["audit-0000000011500.jsonl", "audit-0000000014500.jsonl"]);
        audit.close();
        let checked = verify(dir.path(), Some(&key.public())).unwrap();
        assert!(checked.iter().all(|(_, c)| c.unsealed == 0), "{checked:?}");
    }
}
