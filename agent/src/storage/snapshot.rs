//! Consistent copies of the database while the agent runs: SQLite's online backup API
//! copies every page under one read transaction, so the copy is the database as of one
//! commit, and the writer (WAL mode) is not held up. Used by `fuota-agent backup` and
//! before every schema migration.

use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{Storage, StorageError};

/// Copies the database open on `source` into a new file at `destination` (which must not
/// exist): written as `<destination>.partial`, synced, then renamed, so a cut leaves no
/// half-written copy under the final name.
pub(crate) fn copy_connection(source: &Connection, destination: &Path) -> Result<(), StorageError> {
    if destination.exists() {
        return Err(StorageError::SnapshotExists(destination.to_path_buf()));
    }
    let partial = partial_path(destination);
    let _ = std::fs::remove_file(&partial);
    let result = (|| {
        let mut target = Connection::open(&partial).map_err(|source| StorageError::Open {
            path: partial.clone(),
            source,
        })?;
        {
            let backup = Backup::new(source, &mut target)
                .map_err(StorageError::sql("starting the database copy"))?;
            // -1: every page in one step, under one read transaction.
            match backup
                .step(-1)
                .map_err(StorageError::sql("copying the database"))?
            {
                StepResult::Done => {}
                other => {
                    return Err(StorageError::SnapshotIncomplete(format!("{other:?}")));
                }
            }
        }
        target.close().map_err(|(_, source)| StorageError::Sql {
            context: "closing the database copy".into(),
            source,
        })?;
        let file = std::fs::File::open(&partial).map_err(|source| StorageError::Io {
            action: "syncing the database copy",
            path: partial.clone(),
            source,
        })?;
        file.sync_all().map_err(|source| StorageError::Io {
            action: "syncing the database copy",
            path: partial.clone(),
            source,
        })?;
        std::fs::rename(&partial, destination).map_err(|source| StorageError::Io {
            action: "naming the database copy",
            path: destination.to_path_buf(),
            source,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

impl Storage {
    /// A consistent copy of the database at `database` (open or not by a running agent)
    /// written to `destination`.
    pub fn snapshot(database: &Path, destination: &Path) -> Result<(), StorageError> {
        if !database.exists() {
            return Err(StorageError::Open {
                path: database.to_path_buf(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some("no such file".into()),
                ),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let source = super::connect(database, flags)?;
        copy_connection(&source, destination)
    }
}
