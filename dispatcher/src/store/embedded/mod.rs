//! The embedded store's data directory: what a single node keeps on local disk so
//! that `kill -9` and a restart lose no subscriber, device key, contrast value or
//! accepted code.
//!
//! ```text
//! <store.path>/
//!   lock            held (flock) while a process has the directory
//!   code-secret     the server secret, when `codes.secret` is not configured
//!   registry.redb   the subscriber registry (see [`registry_file`])
//!   journal/        the verifications, as a log of segments (see [`journal`])
//!   events/         the clients' events, a journal of their own (see [`events`])
//! ```
//!
//! The memory store stays the place every request reads and decides; it tells the
//! journal and the registry file each change as it makes it, and waits for the disk
//! before answering (see [`crate::store::MemoryStore::durable`]).

pub mod events;
pub mod frame;
pub mod journal;
pub mod registry_file;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use self::journal::{Journal, JournalError, Sync};
use self::registry_file::RegistryFile;
use crate::domain::clock::UnixMillis;
use crate::domain::subscriber::Subscriber;
use crate::domain::verification::Verification;
use crate::secrets::id::VerificationId;
use crate::store::StoreError;

/// The server secret's length when otpd makes one.
const SECRET_BYTES: usize = 32;

/// Why the data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is in use by another otpd process")]
    InUse { path: PathBuf },
    #[error("{path}: {why}")]
    Unreadable { path: PathBuf, why: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An open data directory, held by this process.
pub struct DataDir {
    pub journal: Journal,
    pub registry: RegistryFile,
    path: PathBuf,
    /// Held for as long as the directory is open: the lock is released with it.
    _lock: File,
}

/// What the directory held at start.
pub struct Recovered {
    pub verifications: Vec<Verification>,
    pub subscribers: Vec<Subscriber>,
    /// Records that could not be read back (a write torn by a crash is one).
    pub unreadable: usize,
}

impl DataDir {
    /// Open `path` (made if absent), refusing it if another process has it, and
    /// read back what it holds at `now`. Writes count as done per `sync`; a caller
    /// waits at most `wait_limit` for the disk.
    pub fn open(
        path: &Path,
        sync: Sync,
        now: UnixMillis,
        wait_limit: Duration,
    ) -> Result<(DataDir, Recovered), DataDirError> {
        fs::create_dir_all(path).map_err(io(path))?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DataDirError::InUse {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let registry_path = path.join("registry.redb");
        let unreadable = |why: StoreError| DataDirError::Unreadable {
            path: registry_path.clone(),
            why: why.to_string(),
        };
        let (registry, subscribers) = RegistryFile::open(&registry_path).map_err(unreadable)?;
        let (journal, replayed) =
            Journal::open(&path.join("journal"), sync, now, wait_limit, Duration::ZERO)?;
        let mut skipped = replayed.damaged;
        let mut verifications = Vec::with_capacity(replayed.records.len());
        for (id, fields) in replayed.records {
            let id = VerificationId::from_bytes(id);
            match crate::store::redis::record::decode(id, &fields) {
                Ok(v) => verifications.push(v),
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(%id, error = %e, "a journal record could not be read back");
                }
            }
        }
        // Oldest first, so that the newest of one number's verifications is the one
        // found for it.
        verifications.sort_by_key(|v| v.created_at);
        Ok((
            DataDir {
                journal,
                registry,
                path: path.to_owned(),
                _lock: lock,
            },
            Recovered {
                verifications,
                subscribers,
                unreadable: skipped,
            },
        ))
    }

    /// The server secret kept in the directory, made on first use: codes, their
    /// sealed copies and contrast values in the directory are keyed by it, so it
    /// must outlive the process.
    pub fn secret(&self) -> Result<Vec<u8>, DataDirError> {
        let path = self.path.join("code-secret");
        match File::open(&path) {
            Ok(mut f) => {
                let mut hex_text = String::new();
                f.read_to_string(&mut hex_text).map_err(io(&path))?;
                let secret =
                    hex::decode(hex_text.trim()).map_err(|e| DataDirError::Unreadable {
                        path: path.clone(),
                        why: format!("not hexadecimal: {e}"),
                    })?;
                if secret.len() < SECRET_BYTES {
                    return Err(DataDirError::Unreadable {
                        path,
                        why: format!("{} bytes, at least {SECRET_BYTES} expected", secret.len()),
                    });
                }
                Ok(secret)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = vec![0u8; SECRET_BYTES];
                getrandom::fill(&mut secret).map_err(|e| DataDirError::Unreadable {
                    path: path.clone(),
                    why: format!("no randomness: {e}"),
                })?;
                // Written whole under another name, then renamed: a crash leaves
                // either no secret or the whole one.
                let partial = self.path.join("code-secret.new");
                let mut f = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .mode(0o600)
                    .open(&partial)
                    .map_err(io(&partial))?;
                f.write_all(hex::encode(&secret).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io(&partial))?;
                fs::rename(&partial, &path).map_err(io(&path))?;
                File::open(&self.path)
                    .and_then(|d| d.sync_all())
                    .map_err(io(&self.path))?;
                Ok(secret)
            }
            Err(e) => Err(io(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_process_is_refused_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let limit = Duration::from_secs(1);
        let (first, _) = DataDir::open(dir.path(), Sync::Write, UnixMillis(0), limit).unwrap();
        let second = DataDir::open(dir.path(), Sync::Write, UnixMillis(0), limit);
        assert!(matches!(second, Err(DataDirError::InUse { .. })));
        drop(first);
        DataDir::open(dir.path(), Sync::Write, UnixMillis(0), limit).unwrap();
    }

    #[test]
    fn the_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let limit = Duration::from_secs(1);
        let (d, _) = DataDir::open(dir.path(), Sync::Write, UnixMillis(0), limit).unwrap();
        let s = d.secret().unwrap();
        assert_eq!(s.len(), SECRET_BYTES);
        assert_eq!(d.secret().unwrap(), s);
        drop(d);
        let (d, _) = DataDir::open(dir.path(), Sync::Write, UnixMillis(0), limit).unwrap();
        assert_eq!(d.secret().unwrap(), s);
        let mode = fs::metadata(dir.path().join("code-secret"))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o077, 0, "readable by its owner only");
    }
}
