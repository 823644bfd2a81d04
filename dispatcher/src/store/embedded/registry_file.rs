//! The subscriber registry on disk, in redb: one table, subject → the subscriber's
//! fields (the same fields the Redis store keeps, see
//! [`crate::store::redis::subscriber`]).
//!
//! Unlike verifications, subscribers live for years, change rarely and are many
//! (a country's citizens), so they want a B-tree updated in place rather than a log:
//! redb is one file, ACID, and each write is its own durable transaction. Reads
//! never come here — the registry is held in memory and this file is read once, at
//! start.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::frame;
use crate::domain::subscriber::Subscriber;
use crate::store::StoreError;
use crate::store::redis::subscriber;

const SUBSCRIBERS: TableDefinition<&str, &[u8]> = TableDefinition::new("subscribers");

pub struct RegistryFile {
    db: Database,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("the registry file: {e}"))
}

impl RegistryFile {
    /// Open (or create) the file and read every subscriber in it.
    pub fn open(path: &Path) -> Result<(RegistryFile, Vec<Subscriber>), StoreError> {
        let db = Database::create(path).map_err(unavailable)?;
        let file = RegistryFile { db };
        // The table exists from the first start on, so that reading it never fails
        // for want of it.
        let tx = file.db.begin_write().map_err(unavailable)?;
        tx.open_table(SUBSCRIBERS).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;

        let tx = file.db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(SUBSCRIBERS).map_err(unavailable)?;
        let mut all = Vec::new();
        for row in table.iter().map_err(unavailable)? {
            let (subject, value) = row.map_err(unavailable)?;
            let fields = frame::read_fields(value.value())
                .map_err(|e| StoreError::Corrupt(format!("subscriber {}: {e}", subject.value())))?;
            if let Some(s) = subscriber::decode(subject.value(), &fields)? {
                all.push(s);
            }
        }
        Ok((file, all))
    }

    /// Write `subscriber` (replacing what the file had for its subject), durably.
    pub fn put(&self, s: &Subscriber) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(256);
        frame::put_fields(&mut value, &subscriber::encode(s));
        let tx = self.db.begin_write().map_err(unavailable)?;
        {
            let mut table = tx.open_table(SUBSCRIBERS).map_err(unavailable)?;
            table
                .insert(&*s.subject, value.as_slice())
                .map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)
    }

    /// Remove `subject`, durably.
    pub fn delete(&self, subject: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(unavailable)?;
        {
            let mut table = tx.open_table(SUBSCRIBERS).map_err(unavailable)?;
            table.remove(subject).map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)
    }
}
