//! The agent's one source of truth: SQLite in WAL mode, with numbered migrations.
//!
//! It owns the schema ([`migrations`]), the device registry ([`devices`]), device
//! sessions and DevNonces ([`sessions`]), the event log ([`events`]), the FCntDown
//! reservations ([`frame_counters`]), the firmware cache's metadata
//! ([`firmware_images`]), FUOTA campaigns ([`campaigns`]) and the upstream outbox, the
//! events not yet delivered to the MQTT broker ([`outbox`]).
//!
//! # Writing
//!
//! Every state change goes through [`Storage::write`], which runs a closure on a
//! [`WriteTx`] inside one `BEGIN IMMEDIATE` transaction and commits it. The state-changing
//! methods of [`WriteTx`] append the event that reports them to the `events` table in that
//! same transaction, so the event log can never disagree with the state; free-form events
//! (an uplink, a TX_ACK error) are appended with [`WriteTx::append_event`].
//!
//! # Durability
//!
//! The database runs with `journal_mode=WAL` and `synchronous=NORMAL`: a commit survives
//! the agent being killed (`kill -9`) at any instant, because the WAL is written before the
//! commit returns, but the last commits before a *power loss* may be rolled back, as
//! the WAL is only synced at checkpoints. That is acceptable for everything except frame
//! counters: [`frame_counters`] syncs each FCntDown reservation (`synchronous=FULL` for
//! that one commit), and reserves [`FCNT_DOWN_RESERVATION`] values at a time, so a
//! downlink counter is never reused, without an fsync per frame.

pub mod campaigns;
pub mod devices;
pub mod events;
pub mod firmware_images;
pub mod frame_counters;
pub mod image_downloads;
pub mod migrations;
pub mod outbox;
pub mod sessions;
mod snapshot;
pub mod upstream_commands;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

pub use devices::{Device, DeviceClass, MacVersion};
pub use events::{Event, EventKind, NewEvent};
pub use firmware_images::{FirmwareImageKind, FirmwareImageRecord};
pub use frame_counters::FCNT_DOWN_RESERVATION;
pub use sessions::{DevNonceUse, DeviceSession, SessionCounters};

use crate::identifiers::DevEui;
use frame_counters::FCntDownWindow;

/// How long a write waits for another connection's lock (a backup, `sqlite3` shell)
/// before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything that can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An SQLite error, with what we were doing.
    #[error("{context}: {source}")]
    Sql {
        /// What the storage layer was doing.
        context: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database file could not be opened.
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer agent (or is not ours).
    #[error("database schema version {found} is not supported by this agent (it knows versions up to {supported}); was it written by a newer fuota-agent?")]
    UnknownSchemaVersion {
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: u32,
    },
    /// WAL mode could not be enabled (e.g. a file system without shared memory).
    #[error("database {} could not be switched to WAL mode (journal mode is {mode:?})", path.display())]
    NoWal {
        /// The file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// A device that must exist does not.
    #[error("device {0} is not registered")]
    UnknownDevice(DevEui),
    /// A device that must not exist yet does.
    #[error("device {0} is already registered")]
    DeviceExists(DevEui),
    /// A device has no session (never joined, no ABP session).
    #[error("device {0} has no session")]
    NoSession(DevEui),
    /// Every 32-bit FCntDown of the session has been used: the device must rejoin.
    #[error("device {0} has used every FCntDown of its session; it must rejoin")]
    FCntDownExhausted(DevEui),
    /// A stored value this build cannot interpret (a corrupted or hand-edited row).
    #[error("invalid value in column {column}: {reason}")]
    InvalidStoredValue {
        /// `table.column`
        column: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A database copy would overwrite a file.
    #[error("{} exists already: a copy never overwrites a file", .0.display())]
    SnapshotExists(PathBuf),
    /// SQLite's backup did not finish in one step.
    #[error("the database copy did not complete ({0}); try again")]
    SnapshotIncomplete(String),
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An event payload could not be encoded as JSON.
    #[error("encoding an event payload: {0}")]
    EventPayload(#[from] serde_json::Error),
}

impl StorageError {
    /// `map_err` adapter: an SQLite error with a static context.
    pub(crate) fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
        move |source| StorageError::Sql {
            context: context.to_string(),
            source,
        }
    }

    /// `map_err` adapter: an SQLite error with a formatted context.
    pub(crate) fn sql_owned(context: String) -> impl FnOnce(rusqlite::Error) -> StorageError {
        move |source| StorageError::Sql { context, source }
    }
}

/// The open database. One per agent; not shared between threads (move it to a dedicated
/// thread or task when the core becomes concurrent).
#[derive(Debug)]
pub struct Storage {
    connection: Connection,
    path: PathBuf,
    /// In-memory FCntDown windows: values below `reserved_until` are durably reserved.
    fcnt_down_windows: HashMap<DevEui, FCntDownWindow>,
}

/// A write transaction. Its state-changing methods append their own event; dropping it
/// without [`Storage::write`] returning `Ok` rolls everything back.
pub struct WriteTx<'c> {
    transaction: rusqlite::Transaction<'c>,
    /// Devices whose session changed: their in-memory FCntDown window is dropped on
    /// commit and reloaded from the new row.
    sessions_replaced: Vec<DevEui>,
}

/// A connection to the database at `path` with `flags`, waiting up to
/// [`BUSY_TIMEOUT`] for other connections' locks.
pub(crate) fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StorageError> {
    let connection =
        Connection::open_with_flags(path, flags).map_err(|source| StorageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(StorageError::sql("setting the busy timeout"))?;
    Ok(connection)
}

/// A further connection to the database at `path`, which the agent's writer has opened
/// and migrated already: its schema must be this build's.
pub(crate) fn connect_migrated(path: &Path, flags: OpenFlags) -> Result<Connection, StorageError> {
    let connection = connect(path, flags)?;
    let found = migrations::schema_version(&connection)?;
    if found != migrations::SCHEMA_VERSION {
        return Err(StorageError::UnknownSchemaVersion {
            found: i64::from(found),
            supported: migrations::SCHEMA_VERSION,
        });
    }
    Ok(connection)
}

/// Where the database is copied before its schema goes from `version` to this build's:
/// `agent.db.schema-3.bak` next to it.
pub fn pre_migration_copy_path(database: &Path, version: u32) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(format!(".schema-{version}.bak"));
    PathBuf::from(name)
}

impl Storage {
    /// Opens (creating if needed) the database at `path`, enables WAL, and migrates the
    /// schema to this build's version, after copying an older database to
    /// [`pre_migration_copy_path`].
    pub fn open(path: &Path) -> Result<Storage, StorageError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut connection = connect(path, flags)?;
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(StorageError::sql("enabling WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::NoWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        connection
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(StorageError::sql(
                "setting synchronous=NORMAL and foreign keys",
            ))?;
        let found = migrations::schema_version(&connection)?;
        if found > 0 && found < migrations::SCHEMA_VERSION {
            // An upgraded agent: keep the database as it was before changing its
            // schema, even mid-campaign; a failed migration or a downgrade starts
            // from it.
            let copy = pre_migration_copy_path(path, found);
            if !copy.exists() {
                snapshot::copy_connection(&connection, &copy)?;
                tracing::info!(
                    from = found,
                    to = migrations::SCHEMA_VERSION,
                    copy = %copy.display(),
                    "migrating the database schema; the database before is kept"
                );
            }
        }
        migrations::migrate(&mut connection)?;
        Ok(Storage {
            connection,
            path: path.to_path_buf(),
            fcnt_down_windows: HashMap::new(),
        })
    }

    /// Opens a read-only connection to the database at `path`, which the agent's
    /// writer has opened and migrated already (the local API reads through one while
    /// the core loop writes: WAL lets both proceed). Its schema must be this build's.
    pub fn open_reader(path: &Path) -> Result<Storage, StorageError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = connect_migrated(path, flags)?;
        Ok(Storage {
            connection,
            path: path.to_path_buf(),
            fcnt_down_windows: HashMap::new(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StorageError> {
        migrations::schema_version(&self.connection)
    }

    /// Runs `change` in one immediate transaction and commits it if it returns `Ok`;
    /// an `Err` rolls the whole transaction back (state and events alike).
    pub fn write<T>(
        &mut self,
        change: impl FnOnce(&mut WriteTx<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StorageError::sql("beginning a write transaction"))?;
        let mut write = WriteTx {
            transaction,
            sessions_replaced: Vec::new(),
        };
        let value = change(&mut write)?;
        let WriteTx {
            transaction,
            sessions_replaced,
        } = write;
        transaction
            .commit()
            .map_err(StorageError::sql("committing a write transaction"))?;
        for dev_eui in sessions_replaced {
            self.fcnt_down_windows.remove(&dev_eui);
        }
        Ok(value)
    }

    /// Appends one event in its own transaction (for events that report no state
    /// change of ours, e.g. an uplink that is only logged).
    pub fn append_event(&mut self, event: &NewEvent) -> Result<i64, StorageError> {
        self.write(|tx| tx.append_event(event))
    }

    /// Starts a new epoch for the ids of published events (see [`outbox`]): done after a
    /// restore, so the events written from now on never share an id with those the
    /// gateway the backup came from published. Returns the epoch.
    pub fn start_new_event_epoch(
        &mut self,
        now: crate::clock::WallTime,
    ) -> Result<String, StorageError> {
        outbox::start_new_epoch(&self.connection, now)
    }

    /// Clean shutdown: gives back the unused part of every FCntDown reservation, so a
    /// restart after a clean stop does not skip counters. Not calling it (a crash) is
    /// safe: the next start skips to the reserved marks.
    pub fn shutdown(mut self) -> Result<(), StorageError> {
        self.release_fcnt_down_reservations()
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl WriteTx<'_> {
    pub(crate) fn connection(&self) -> &Connection {
        &self.transaction
    }
}
