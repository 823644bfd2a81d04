//! The journal of verifications: every change of a verification is appended as its
//! whole new record, so that a restart (after `kill -9` too) finds every accepted
//! code, the sends not yet made among them.
//!
//! Why a log of our own rather than an embedded database: a verification lives ten
//! minutes and is read back once, at start. What it needs from disk is an append,
//! in order, grouped with the appends of the other requests in flight — and a way
//! to forget it without a compaction pass. So the journal is a run of segment files
//! that rotate every minute (or 64 MiB); a segment is deleted as a whole once every
//! record in it has outlived its retention, since every version of a verification
//! shares one retention end. Disk use follows the write rate times a verification's
//! life, like memory does; nothing is ever rewritten.
//!
//! Writes are grouped: [`Journal::append`] copies the frame into a buffer under a
//! short lock (the caller holds its shard's lock, so the journal's order of one
//! verification's versions is the order they were made in), and one writer thread
//! writes whatever gathered with one `write` (and one `fdatasync` with
//! [`Sync::Fsync`]) and wakes the callers it made durable — each by its own
//! one-shot channel: waking every waiter on each write to let it look whether its
//! turn had come cost more than the writes themselves under load. A failed write (a full
//! disk) is cut back to the last whole frame and retried with backoff, keeping its
//! records; meanwhile the journal refuses new verifications ([`Journal::accepting`])
//! and callers waiting on it are answered with an error after
//! [`Journal::new`]'s `wait_limit`.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use super::frame::{self, FrameError, Record};
use crate::domain::clock::UnixMillis;
use crate::store::StoreError;
use crate::store::redis::record::Fields;

/// A segment is closed after this long, so that whole segments fall due together.
const SEGMENT_AGE: Duration = Duration::from_secs(60);
/// Or after this many bytes.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The longest wait between tries to write a batch the disk refused.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A write starts at least this long after the one before, while fewer than
/// [`GATHER_ENOUGH`] callers wait: under load a write (and its `fdatasync`) then
/// carries a millisecond's records rather than the few that came during the last
/// flush. Measured on `national-peak-sms`-like load at 8 000 verifications a
/// second, this cut the writer's CPU by more than half (each `fdatasync` is two or
/// three waits on the device and as many wake-ups). A lone request after a quiet
/// spell waits for nothing: the last write is long past.
const GATHER: Duration = Duration::from_millis(1);
/// Callers waiting at once that make a write go without the rest of [`GATHER`].
const GATHER_ENOUGH: usize = 32;
/// Room written ahead in a segment (zeros) with `fsync`: at least this much...
const AHEAD_MIN: u64 = 256 << 10;
/// ...and at most this much, an eighth of what the segment holds in between.
const AHEAD_MAX: u64 = 8 << 20;

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Written to the operating system: survives otpd being killed, not a power cut.
    Write,
    /// And flushed to the device (`fdatasync`): survives a power cut too.
    Fsync,
}

/// A record appended but perhaps not yet written: wait on it with [`Journal::wait`].
#[derive(Debug)]
#[must_use = "a change is durable only once its ticket is waited on"]
pub struct Ticket(oneshot::Receiver<()>);

/// The journal could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a restart found: each live verification's last record.
pub struct Replayed {
    pub records: Vec<([u8; 16], Fields)>,
    /// Clients' events and their done marks still in retention, in the order
    /// written (the event journal's records).
    pub events: Vec<Record>,
    /// Frames that could not be read (a torn tail after a crash is normal; damage
    /// elsewhere is logged).
    pub damaged: usize,
}

pub struct Journal {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// False while the disk refuses writes.
    accepting: AtomicBool,
    last_error: Mutex<String>,
    /// Segments whose every record's retention ends before this may go.
    retire_before: AtomicI64,
    wait_limit: Duration,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// Who waits for the records in `buf`, in order.
    waiters: Vec<oneshot::Sender<()>>,
    /// The latest retention end among the records in `buf`.
    retain: i64,
    closing: bool,
    /// The writer is waiting for records (so an append must wake it; while it
    /// writes, appends gather without a system call).
    idle: bool,
    /// The writer holds back records nobody waits for, until its linger is over:
    /// only an append with a waiter wakes it.
    lingering: bool,
    /// The writer gathers records someone waits for: only an append that brings
    /// their number to [`GATHER_ENOUGH`] wakes it.
    gathering: bool,
}

impl Journal {
    /// Open the journal in `dir` (created if absent), read back what it holds at
    /// `now`, and start its writer. A caller waits at most `wait_limit` for a write.
    ///
    /// Records nobody waits for ([`Journal::append_lazily`]) are written at most
    /// every `linger`, gathered: a journal of such records alone (the clients'
    /// events) then costs its writer a wake-up per `linger` instead of one per
    /// append — at the national peak the difference between ~20 000 context
    /// switches a second and ~100. A record someone waits for is written at once.
    pub fn open(
        dir: &Path,
        sync: Sync,
        now: UnixMillis,
        wait_limit: Duration,
        linger: Duration,
    ) -> Result<(Journal, Replayed), JournalError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let (segments, replayed, next) = replay(dir, now)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            accepting: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
            retire_before: AtomicI64::new(now.0),
            wait_limit,
        });
        let mut writer = Writer {
            dir: dir.to_owned(),
            sync,
            closed: segments,
            active: None,
            next,
            shared: shared.clone(),
            linger,
        };
        writer.retire();
        let thread = std::thread::Builder::new()
            .name("otpd-journal".into())
            .spawn(move || writer.run())
            .map_err(io(dir))?;
        Ok((
            Journal {
                shared,
                writer: Some(thread),
            },
            replayed,
        ))
    }

    /// Append a verification's new record. Cheap (a copy under a short lock): call
    /// it where the change was made, so that the journal keeps their order.
    pub fn append(
        &self,
        id: &[u8; 16],
        retain_until: UnixMillis,
        fields: &[(&str, Vec<u8>)],
    ) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let mut p = self.shared.pending.lock();
        frame::put_verification(&mut p.buf, id, retain_until, fields);
        p.retain = p.retain.max(retain_until.0);
        p.waiters.push(tx);
        if p.idle || p.lingering || (p.gathering && p.waiters.len() >= GATHER_ENOUGH) {
            self.shared.wake.notify_one();
        }
        Ticket(rx)
    }

    /// Append the frame `put` writes, whose retention ends at `retain_until`,
    /// without waiting for it: written with the next batch.
    pub fn append_lazily(&self, retain_until: UnixMillis, put: impl FnOnce(&mut Vec<u8>)) {
        let mut p = self.shared.pending.lock();
        put(&mut p.buf);
        p.retain = p.retain.max(retain_until.0);
        if p.idle {
            self.shared.wake.notify_one();
        }
    }

    /// Append that verification `id` was given up (its issue failed after all).
    pub fn give_up(&self, id: &[u8; 16]) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let mut p = self.shared.pending.lock();
        frame::put_given_up(&mut p.buf, id);
        p.waiters.push(tx);
        if p.idle || p.lingering || (p.gathering && p.waiters.len() >= GATHER_ENOUGH) {
            self.shared.wake.notify_one();
        }
        Ticket(rx)
    }

    /// Wait until `ticket`'s record is written; an error once the disk has refused
    /// it for longer than the wait limit (it stays queued and is written when the
    /// disk takes it).
    pub async fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        match tokio::time::timeout(self.shared.wait_limit, ticket.0).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Unavailable("the journal writer stopped".into())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the journal could not be written: {}",
                self.shared.last_error.lock()
            ))),
        }
    }

    /// Whether new verifications may be taken: false while the disk refuses writes.
    pub fn accepting(&self) -> bool {
        self.shared.accepting.load(Ordering::Acquire)
    }

    /// Why the disk refused the last write, when it is refusing.
    pub fn refusal(&self) -> Option<String> {
        (!self.accepting()).then(|| self.shared.last_error.lock().clone())
    }

    /// Segments whose records' retention ended before `now` may be deleted.
    pub fn retire_before(&self, now: UnixMillis) {
        self.shared
            .retire_before
            .fetch_max(now.0, Ordering::Relaxed);
    }
}

impl Shared {
    /// Hold the writer while `keep` holds, until `span` has passed since `since`,
    /// with the flag `raised` picks set meanwhile (it tells appends whether to wake
    /// the writer). A closing journal is never held.
    fn hold(
        &self,
        p: &mut parking_lot::MutexGuard<'_, Pending>,
        since: Instant,
        span: Duration,
        raised: fn(&mut Pending) -> &mut bool,
        keep: impl Fn(&Pending) -> bool,
    ) {
        while keep(p) && !p.closing {
            let Some(left) = span.checked_sub(since.elapsed()).filter(|l| !l.is_zero()) else {
                return;
            };
            *raised(p) = true;
            self.wake.wait_for(p, left);
            *raised(p) = false;
        }
    }
}

impl Drop for Journal {
    /// Write what is pending, then stop the writer.
    fn drop(&mut self) {
        self.shared.pending.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
    }
}

impl Active {
    /// Make sure the file has room up to `end`: with `fsync`, zeros written ahead
    /// (flushed with the batch that needed them), an eighth of the segment so far
    /// within [`AHEAD_MIN`] and [`AHEAD_MAX`]. A disk too full for the room ahead
    /// refuses the batch: the journal stops accepting a little before the disk has
    /// no byte left, never after.
    fn reserve(&mut self, end: u64, sync: Sync) -> std::io::Result<()> {
        if end <= self.allocated || sync == Sync::Write {
            return Ok(());
        }
        let target = end + (self.len / 8).clamp(AHEAD_MIN, AHEAD_MAX);
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut at = self.allocated.max(self.len);
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64);
            self.file.write_all_at(&ZEROS[..n as usize], at)?;
            at += n;
        }
        self.allocated = target;
        Ok(())
    }

    /// Cut the room written ahead off a segment that takes no more records.
    fn trim(&self) {
        if self.allocated > self.len
            && let Err(e) = self.file.set_len(self.len)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not trim a journal segment's room ahead");
        }
    }
}

/// A closed segment and the latest retention end of its records.
struct Segment {
    path: PathBuf,
    retain: i64,
}

struct Active {
    file: File,
    path: PathBuf,
    /// Where the records end.
    len: u64,
    /// The file's size: with `fsync`, zeros written ahead of `len`, so that a batch
    /// overwrites blocks the file already has and its `fdatasync` flushes the data
    /// alone. Appending past the end would also write the inode (the new size and
    /// blocks) on every flush: measured with `dd oflag=dsync` here, 171 µs per 4 KiB
    /// appended against 85 µs overwritten. Replay takes the zeros as the end.
    allocated: u64,
    retain: i64,
    opened: Instant,
}

struct Writer {
    dir: PathBuf,
    sync: Sync,
    closed: VecDeque<Segment>,
    active: Option<Active>,
    next: u64,
    shared: Arc<Shared>,
    /// How long records nobody waits for are held back to be written together.
    linger: Duration,
}

impl Writer {
    fn run(mut self) {
        // What the disk refused last time, written before anything newer.
        let mut carry: Vec<u8> = Vec::new();
        let mut carry_waiters: Vec<oneshot::Sender<()>> = Vec::new();
        let mut carry_retain = i64::MIN;
        let mut backoff = Duration::from_millis(20);
        let mut wrote = Instant::now();
        loop {
            let closing = {
                let mut p = self.shared.pending.lock();
                while p.buf.is_empty() && carry.is_empty() && !p.closing {
                    p.idle = true;
                    self.shared
                        .wake
                        .wait_for(&mut p, SEGMENT_AGE.min(Duration::from_secs(5)));
                    p.idle = false;
                    if p.buf.is_empty() && carry.is_empty() {
                        break; // time to look at rotation and retirement
                    }
                }
                // Records nobody waits for gather until the linger since the last
                // write is over.
                let quiet = carry.is_empty();
                self.shared.hold(
                    &mut p,
                    wrote,
                    self.linger,
                    |p| &mut p.lingering,
                    |p| !p.buf.is_empty() && p.waiters.is_empty() && quiet,
                );
                // Records someone waits for gather until a write is due again.
                self.shared.hold(
                    &mut p,
                    wrote,
                    GATHER,
                    |p| &mut p.gathering,
                    |p| !p.waiters.is_empty() && p.waiters.len() < GATHER_ENOUGH,
                );
                if carry.is_empty() {
                    // Take the buffer whole, leaving this one's allocation behind.
                    std::mem::swap(&mut carry, &mut p.buf);
                } else {
                    carry.append(&mut p.buf);
                }
                carry_waiters.append(&mut p.waiters);
                carry_retain = carry_retain.max(p.retain);
                p.retain = i64::MIN;
                p.closing
            };
            if !carry.is_empty() {
                wrote = Instant::now();
                match self.write(&carry, carry_retain) {
                    Ok(()) => {
                        carry.clear();
                        carry_retain = i64::MIN;
                        backoff = Duration::from_millis(20);
                        if !self.shared.accepting.swap(true, Ordering::AcqRel) {
                            tracing::info!("the journal is written again");
                        }
                        for w in carry_waiters.drain(..) {
                            // A waiter that gave up has dropped its end.
                            let _ = w.send(());
                        }
                    }
                    Err(e) => {
                        *self.shared.last_error.lock() = e.to_string();
                        if self.shared.accepting.swap(false, Ordering::AcqRel) {
                            tracing::error!(error = %e, "the journal cannot be written: refusing new verifications until it can");
                        }
                        if closing {
                            tracing::error!(error = %e, "stopping with journal records unwritten");
                            return;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            if closing && self.shared.pending.lock().buf.is_empty() {
                if let Some(a) = &self.active {
                    a.trim();
                }
                return;
            }
            self.maybe_rotate();
            self.retire();
        }
    }

    /// Write one batch at the end of the active segment, or leave the segment as it
    /// was before the batch.
    fn write(&mut self, batch: &[u8], retain: i64) -> std::io::Result<()> {
        if self.active.is_none() {
            self.active = Some(self.create()?);
        }
        let a = self.active.as_mut().expect("just made");
        let end = a.len + batch.len() as u64;
        let written = a
            .reserve(end, self.sync)
            .and_then(|()| a.file.write_all_at(batch, a.len))
            .and_then(|()| match self.sync {
                Sync::Fsync => a.file.sync_data(),
                Sync::Write => Ok(()),
            });
        if let Err(e) = written {
            // Cut a partly written batch (and the room ahead) back to the last
            // whole frame.
            let _ = a.file.set_len(a.len);
            a.allocated = a.len;
            return Err(e);
        }
        a.len = end;
        a.allocated = a.allocated.max(end);
        a.retain = a.retain.max(retain);
        Ok(())
    }

    fn create(&mut self) -> std::io::Result<Active> {
        let path = self.dir.join(segment_name(self.next));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        if self.sync == Sync::Fsync {
            File::open(&self.dir)?.sync_all()?;
        }
        self.next += 1;
        Ok(Active {
            file,
            path,
            len: 0,
            allocated: 0,
            retain: i64::MIN,
            opened: Instant::now(),
        })
    }

    fn maybe_rotate(&mut self) {
        let due = self
            .active
            .as_ref()
            .is_some_and(|a| a.len >= SEGMENT_BYTES || a.opened.elapsed() >= SEGMENT_AGE);
        if due {
            let a = self.active.take().expect("checked");
            a.trim();
            self.closed.push_back(Segment {
                path: a.path,
                retain: a.retain,
            });
        }
    }

    /// Delete the closed segments whose every record has outlived its retention.
    fn retire(&mut self) {
        let before = self.shared.retire_before.load(Ordering::Relaxed);
        self.closed.retain(|s| {
            if s.retain >= before {
                return true;
            }
            match fs::remove_file(&s.path) {
                Ok(()) => false,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => {
                    tracing::warn!(path = %s.path.display(), error = %e, "could not delete a spent journal segment");
                    true
                }
            }
        });
    }
}

fn segment_name(n: u64) -> String {
    format!("{n:016}.log")
}

/// Read every segment in order: each verification's last record, if its retention
/// has not ended at `now`; the segments (all closed now) and the next number.
fn replay(dir: &Path, now: UnixMillis) -> Result<(VecDeque<Segment>, Replayed, u64), JournalError> {
    let mut numbered: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            numbered.push((n, path));
        }
    }
    numbered.sort();
    let next = numbered.last().map_or(0, |(n, _)| n + 1);
    let mut latest: HashMap<[u8; 16], (i64, Fields)> = HashMap::new();
    let mut segments = VecDeque::new();
    let mut damaged = 0;
    let mut events = Vec::new();
    for (_, path) in numbered {
        let buf = fs::read(&path).map_err(io(&path))?;
        let mut retain = i64::MIN;
        let mut at = 0;
        loop {
            match frame::next_frame(&buf, at) {
                Ok(None) => {
                    if at < buf.len() {
                        // The room a segment was given ahead, left by a stop
                        // that could not trim it: give it back.
                        let _ = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_len(at as u64));
                    }
                    break;
                }
                Ok(Some((payload, next))) => {
                    at = next;
                    match frame::read_record(payload) {
                        Ok(Record::Verification {
                            id,
                            retain_until,
                            fields,
                        }) => {
                            retain = retain.max(retain_until.0);
                            latest.insert(id, (retain_until.0, fields));
                        }
                        Ok(Record::GivenUp { id }) => {
                            latest.remove(&id);
                        }
                        Ok(r @ (Record::Event { .. } | Record::EventsDone { .. })) => {
                            let until = r.retain_until().map_or(i64::MIN, |u| u.0);
                            retain = retain.max(until);
                            if until > now.0 {
                                events.push(r);
                            }
                        }
                        Err(e) => {
                            damaged += 1;
                            tracing::warn!(path = %path.display(), error = %e, "skipped a journal record");
                        }
                    }
                }
                Err(e) => {
                    damaged += 1;
                    if !matches!(e, FrameError::Torn { .. }) {
                        tracing::error!(path = %path.display(), error = %e, "a journal segment is damaged: the rest of it is not read");
                    }
                    // Keep what is whole; the next start reads the same.
                    let _ = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(at as u64));
                    break;
                }
            }
        }
        segments.push_back(Segment { path, retain });
    }
    let records = latest
        .into_iter()
        .filter(|(_, (retain, _))| *retain > now.0)
        .map(|(id, (_, fields))| (id, fields))
        .collect();
    Ok((
        segments,
        Replayed {
            records,
            events,
            damaged,
        },
        next,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMIT: Duration = Duration::from_secs(5);

    fn fields(n: u8) -> Vec<(&'static str, Vec<u8>)> {
        vec![("st", vec![n; 3]), ("to", b"34600000001".to_vec())]
    }

    fn open_fsync(dir: &Path) -> (Journal, Replayed) {
        Journal::open(dir, Sync::Fsync, UnixMillis(0), LIMIT, Duration::ZERO).unwrap()
    }

    fn value(f: &Fields) -> u8 {
        f[b"st".as_slice()][0]
    }

    #[tokio::test]
    async fn the_last_version_of_each_live_record_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, r) = Journal::open(
                dir.path(),
                Sync::Fsync,
                UnixMillis(0),
                LIMIT,
                Duration::ZERO,
            )
            .unwrap();
            assert!(r.records.is_empty());
            let _ = j.append(&[1; 16], UnixMillis(1_000), &fields(1));
            let _ = j.append(&[2; 16], UnixMillis(1_000), &fields(1));
            let _ = j.append(&[1; 16], UnixMillis(1_000), &fields(2));
            let _ = j.append(&[3; 16], UnixMillis(10), &fields(1));
            let _ = j.append(&[4; 16], UnixMillis(1_000), &fields(1));
            let t = j.give_up(&[4; 16]);
            j.wait(t).await.unwrap();
        }
        let (_j, r) = Journal::open(
            dir.path(),
            Sync::Write,
            UnixMillis(500),
            LIMIT,
            Duration::ZERO,
        )
        .unwrap();
        let mut got: Vec<_> = r.records.iter().map(|(id, f)| (id[0], value(f))).collect();
        got.sort();
        // 3's retention ended at 10; 4 was given up.
        assert_eq!(got, vec![(1, 2), (2, 1)]);
        assert_eq!(r.damaged, 0);
    }

    /// A lingering journal holds back what nobody waits for, but not past a record
    /// someone does wait for, nor past its closing.
    #[tokio::test]
    async fn lingering_records_go_with_a_waited_one_or_at_the_close() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let lazily = |j: &Journal, id: u8| {
            j.append_lazily(UnixMillis(1_000), |out| {
                frame::put_verification(out, &[id; 16], UnixMillis(1_000), &fields(id));
            });
        };
        {
            let (j, _) =
                Journal::open(dir.path(), Sync::Write, UnixMillis(0), LIMIT, hour).unwrap();
            lazily(&j, 1);
            // Waited for: written now, and 1 with it, long before the hour is out.
            let t = j.append(&[2; 16], UnixMillis(1_000), &fields(2));
            tokio::time::timeout(LIMIT, j.wait(t))
                .await
                .unwrap()
                .unwrap();
            let (_, r) =
                Journal::open(dir.path(), Sync::Write, UnixMillis(0), LIMIT, hour).unwrap();
            let mut got: Vec<u8> = r.records.iter().map(|(id, _)| id[0]).collect();
            got.sort();
            assert_eq!(got, [1, 2]);
            lazily(&j, 3);
            // Nobody waits for 3: held back (the writer is not even woken).
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (_, r) =
                Journal::open(dir.path(), Sync::Write, UnixMillis(0), LIMIT, hour).unwrap();
            assert_eq!(r.records.len(), 2);
        }
        // Closing wrote 3, held back until then.
        let (_j, r) = Journal::open(dir.path(), Sync::Write, UnixMillis(0), LIMIT, hour).unwrap();
        let mut got: Vec<u8> = r.records.iter().map(|(id, _)| id[0]).collect();
        got.sort();
        assert_eq!(got, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_what_came_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, _) = Journal::open(
                dir.path(),
                Sync::Write,
                UnixMillis(0),
                LIMIT,
                Duration::ZERO,
            )
            .unwrap();
            let t = j.append(&[1; 16], UnixMillis(1_000), &fields(1));
            j.wait(t).await.unwrap();
        }
        // A crash in the middle of the next write.
        let seg = dir.path().join(segment_name(0));
        let mut torn = Vec::new();
        frame::put_verification(&mut torn, &[2; 16], UnixMillis(1_000), &fields(1));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&torn[..torn.len() - 3]).unwrap();
        drop(f);
        let (j, r) = Journal::open(
            dir.path(),
            Sync::Write,
            UnixMillis(0),
            LIMIT,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.damaged, 1);
        let t = j.append(&[3; 16], UnixMillis(1_000), &fields(1));
        j.wait(t).await.unwrap();
        drop(j);
        let (_j, r) = Journal::open(
            dir.path(),
            Sync::Write,
            UnixMillis(0),
            LIMIT,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(
            r.records.len(),
            2,
            "the cut tail no longer hides what follows"
        );
        assert_eq!(r.damaged, 0);
    }

    #[tokio::test]
    async fn with_fsync_a_segment_has_room_ahead_that_replay_reads_as_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let seg = dir.path().join(segment_name(0));
        let mut records = Vec::new();
        {
            let (j, _) = open_fsync(dir.path());
            for n in 1..=3u8 {
                let t = j.append(&[n; 16], UnixMillis(1_000), &fields(n));
                j.wait(t).await.unwrap();
                frame::put_verification(&mut records, &[n; 16], UnixMillis(1_000), &fields(n));
            }
            let size = fs::metadata(&seg).unwrap().len();
            assert!(
                size > records.len() as u64 && size >= AHEAD_MIN,
                "{size} bytes for {} of records",
                records.len()
            );
            // What a kill -9 now would leave: the records, then zeros.
            fs::copy(&seg, crashed.path().join(segment_name(0))).unwrap();
        }
        assert_eq!(
            fs::read(&seg).unwrap(),
            records,
            "a closed journal trims its room ahead"
        );
        let (j, r) = open_fsync(crashed.path());
        assert_eq!((r.records.len(), r.damaged), (3, 0));
        assert_eq!(
            fs::read(crashed.path().join(segment_name(0))).unwrap(),
            records,
            "replay gives the room back"
        );
        let t = j.append(&[4; 16], UnixMillis(1_000), &fields(4));
        j.wait(t).await.unwrap();
        drop(j);
        let (_j, r) = open_fsync(crashed.path());
        assert_eq!((r.records.len(), r.damaged), (4, 0));
    }

    #[tokio::test]
    async fn spent_segments_are_deleted_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, _) = Journal::open(
                dir.path(),
                Sync::Write,
                UnixMillis(0),
                LIMIT,
                Duration::ZERO,
            )
            .unwrap();
            let t = j.append(&[1; 16], UnixMillis(100), &fields(1));
            j.wait(t).await.unwrap();
        }
        {
            let (j, _) = Journal::open(
                dir.path(),
                Sync::Write,
                UnixMillis(0),
                LIMIT,
                Duration::ZERO,
            )
            .unwrap();
            let t = j.append(&[2; 16], UnixMillis(5_000), &fields(1));
            j.wait(t).await.unwrap();
        }
        let count = || fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(count(), 2);
        // At 200 the first segment is spent: it goes when the journal opens.
        let (_j, r) = Journal::open(
            dir.path(),
            Sync::Write,
            UnixMillis(200),
            LIMIT,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(count(), 1);
    }

    #[tokio::test]
    async fn many_writers_are_grouped_and_all_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(
            dir.path(),
            Sync::Fsync,
            UnixMillis(0),
            LIMIT,
            Duration::ZERO,
        )
        .unwrap();
        let j = Arc::new(j);
        let tasks: Vec<_> = (0..200u16)
            .map(|n| {
                let j = j.clone();
                tokio::spawn(async move {
                    let mut id = [0; 16];
                    id[..2].copy_from_slice(&n.to_le_bytes());
                    let t = j.append(&id, UnixMillis(1_000), &fields(1));
                    j.wait(t).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        drop(Arc::into_inner(j).unwrap());
        let (_j, r) = Journal::open(
            dir.path(),
            Sync::Write,
            UnixMillis(0),
            LIMIT,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(r.records.len(), 200);
    }
}
