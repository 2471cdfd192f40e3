//! `fuota-agent backup` and `restore`: everything needed to replace a failed gateway's
//! agent, in one directory.
//!
//! A backup directory holds `agent.db` (a consistent copy of the database taken online:
//! devices, keys, sessions, frame and nonce counters, campaigns, events, outbox),
//! `images/` (every cached image the copy refers to) and `manifest.json` (versions and
//! the SHA-256 of every file). It is written as `<dir>.partial` and renamed when
//! complete, so an interrupted backup never looks like a good one. The directory holds
//! keys: it is created mode 0700.
//!
//! Restore checks every file against the manifest before touching anything, refuses
//! while an agent answers on the API socket, keeps the database it replaces (renamed
//! `agent.db.replaced-<unix time>`), and writes each file under a temporary name first.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::WallTime;
use crate::firmware::{hex, FirmwareCache, TrustStore};
use crate::storage::{migrations, Storage, StorageError};

/// Format version of `manifest.json`.
pub const MANIFEST_FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const DATABASE: &str = "agent.db";
const IMAGES: &str = "images";

/// Why a backup or restore failed; nothing was changed unless it says so.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The backup's destination exists.
    #[error("{} exists already: choose a new directory for the backup", .0.display())]
    DestinationExists(PathBuf),
    /// The directory is not a backup, or not one this build understands.
    #[error("{} is not a usable backup: {reason}", path.display())]
    NotABackup {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file does not match the manifest.
    #[error("{} does not match the backup's manifest ({reason}): the backup is damaged", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// An image the database refers to is missing from the cache.
    #[error("cached image {0} is missing from the image cache; the backup would be incomplete")]
    MissingImage(String),
    /// The agent is running.
    #[error(
        "an agent answers on {}: stop it first (systemctl stop fuota-agent), then restore", .0.display()
    )]
    AgentRunning(PathBuf),
    /// A database exists where the restore would write.
    #[error(
        "a database exists at {}: pass --force to replace it (it is kept, renamed)", .0.display()
    )]
    DatabaseExists(PathBuf),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io {
        action,
        path,
        source,
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The agent version that wrote it.
    pub agent_version: String,
    /// The database's schema version.
    pub schema_version: u32,
    /// When it was written, Unix ms.
    pub created_at_ms: i64,
    /// SHA-256 of `agent.db`.
    pub database_sha256: String,
    /// The images, by SHA-256 (their content address), with their sizes.
    pub images: Vec<ImageEntry>,
}

/// One image of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// SHA-256 of the file (and its name in the cache).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

fn file_sha256(path: &Path) -> Result<(String, u64), BackupError> {
    let bytes = fs::read(path).map_err(io("reading", path))?;
    Ok((hex(&Sha256::digest(&bytes)), bytes.len() as u64))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut file = fs::File::create(path).map_err(io("writing", path))?;
    file.write_all(bytes).map_err(io("writing", path))?;
    file.sync_all().map_err(io("syncing", path))
}

fn image_cache(directory: &Path) -> Result<FirmwareCache, BackupError> {
    // Paths only: no image is verified here (the trust store is the agent's business).
    FirmwareCache::open(directory, TrustStore::new(Vec::new())).map_err(|error| BackupError::Io {
        action: "opening the image cache",
        path: directory.to_path_buf(),
        source: std::io::Error::other(error.to_string()),
    })
}

/// Writes a backup of the database at `database` and the images of `cache_directory`
/// into the new directory `output`.
pub fn create(
    database: &Path,
    cache_directory: &Path,
    output: &Path,
    now_ms: i64,
) -> Result<Manifest, BackupError> {
    if output.exists() {
        return Err(BackupError::DestinationExists(output.to_path_buf()));
    }
    let mut partial = output.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io("removing the interrupted backup", &partial))?;
    }
    let result = write_backup(database, cache_directory, &partial, now_ms);
    match result {
        Ok(manifest) => {
            fs::rename(&partial, output).map_err(io("naming the backup", output))?;
            Ok(manifest)
        }
        Err(error) => {
            let _ = fs::remove_dir_all(&partial);
            Err(error)
        }
    }
}

fn write_backup(
    database: &Path,
    cache_directory: &Path,
    directory: &Path,
    now_ms: i64,
) -> Result<Manifest, BackupError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(directory.join(IMAGES))
        .map_err(io("creating", directory))?;
    let copy = directory.join(DATABASE);
    Storage::snapshot(database, &copy)?;
    let reader = Storage::open_reader(&copy)?;
    let schema_version = reader.schema_version()?;
    let cache = image_cache(cache_directory)?;
    let mut images = Vec::new();
    for record in reader.firmware_images()? {
        let source = cache.image_path(&record.sha256);
        if !source.exists() {
            return Err(BackupError::MissingImage(record.sha256));
        }
        let bytes = fs::read(&source).map_err(io("reading", &source))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        if sha256 != record.sha256 {
            return Err(BackupError::Damaged {
                path: source,
                reason: format!("its content hashes to {sha256}"),
            });
        }
        let target = directory.join(IMAGES).join(format!("{sha256}.img"));
        write_synced(&target, &bytes)?;
        images.push(ImageEntry {
            sha256,
            size: bytes.len() as u64,
        });
    }
    drop(reader);
    let (database_sha256, _) = file_sha256(&copy)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        schema_version,
        created_at_ms: now_ms,
        database_sha256,
        images,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|error| BackupError::Io {
        action: "encoding",
        path: directory.join(MANIFEST),
        source: std::io::Error::other(error),
    })?;
    write_synced(&directory.join(MANIFEST), &text)?;
    Ok(manifest)
}

fn give_to_directory_owner(path: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let owner = fs::metadata(parent).map_err(io("examining", parent))?;
    let file = fs::metadata(path).map_err(io("examining", path))?;
    if file.uid() != owner.uid() || file.gid() != owner.gid() {
        std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()))
            .map_err(io("giving to the directory's owner", path))?;
    }
    Ok(())
}

/// Reads and checks a backup: the manifest, then every file against it.
pub fn verify(input: &Path) -> Result<Manifest, BackupError> {
    let not_a_backup = |reason: String| BackupError::NotABackup {
        path: input.to_path_buf(),
        reason,
    };
    let text = fs::read(input.join(MANIFEST))
        .map_err(|error| not_a_backup(format!("{MANIFEST}: {error}")))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|error| not_a_backup(format!("{MANIFEST}: {error}")))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(not_a_backup(format!(
            "manifest format {} (this agent reads {MANIFEST_FORMAT})",
            manifest.format
        )));
    }
    if manifest.schema_version > migrations::SCHEMA_VERSION {
        return Err(not_a_backup(format!(
            "its database has schema {} and this agent knows up to {}: restore it with agent {} or newer",
            manifest.schema_version,
            migrations::SCHEMA_VERSION,
            manifest.agent_version
        )));
    }
    let database = input.join(DATABASE);
    let (sha256, _) = file_sha256(&database)?;
    if sha256 != manifest.database_sha256 {
        return Err(BackupError::Damaged {
            path: database,
            reason: format!(
                "SHA-256 {sha256}, the manifest says {}",
                manifest.database_sha256
            ),
        });
    }
    for image in &manifest.images {
        let path = input.join(IMAGES).join(format!("{}.img", image.sha256));
        let (sha256, size) = file_sha256(&path)?;
        if sha256 != image.sha256 || size != image.size {
            return Err(BackupError::Damaged {
                path,
                reason: format!("{size} bytes with SHA-256 {sha256}"),
            });
        }
    }
    Ok(manifest)
}

/// Restores the backup in `input` into `database` and `cache_directory`. Refused while
/// an agent answers on `api_socket`, and over an existing database unless `force`
/// (which keeps that database, renamed). Returns the manifest and where the replaced
/// database went.
pub fn restore(
    input: &Path,
    database: &Path,
    cache_directory: &Path,
    api_socket: &Path,
    force: bool,
    now_ms: i64,
) -> Result<(Manifest, Option<PathBuf>), BackupError> {
    let manifest = verify(input)?;
    if std::os::unix::net::UnixStream::connect(api_socket).is_ok() {
        return Err(BackupError::AgentRunning(api_socket.to_path_buf()));
    }
    if database.exists() && !force {
        return Err(BackupError::DatabaseExists(database.to_path_buf()));
    }
    // Images first: harmless extra files if the database step fails.
    let cache = image_cache(cache_directory)?;
    for image in &manifest.images {
        let source = input.join(IMAGES).join(format!("{}.img", image.sha256));
        let target = cache.image_path(&image.sha256);
        let mut temporary = target.as_os_str().to_owned();
        temporary.push(".partial");
        let temporary = PathBuf::from(temporary);
        let bytes = fs::read(&source).map_err(io("reading", &source))?;
        write_synced(&temporary, &bytes)?;
        fs::rename(&temporary, &target).map_err(io("placing", &target))?;
    }
    // The database: copied beside its final name, then the old one (and its WAL) moved
    // aside, then the copy renamed into place.
    if let Some(parent) = database.parent() {
        fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let mut staged = database.as_os_str().to_owned();
    staged.push(".restoring");
    let staged = PathBuf::from(staged);
    let _ = fs::remove_file(&staged);
    let bytes = fs::read(input.join(DATABASE)).map_err(io("reading", &input.join(DATABASE)))?;
    write_synced(&staged, &bytes)?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o640))
        .map_err(io("setting the mode of", &staged))?;
    let mut replaced = None;
    if database.exists() {
        let mut aside = database.as_os_str().to_owned();
        aside.push(format!(".replaced-{}", now_ms / 1000));
        let aside = PathBuf::from(aside);
        for suffix in ["-wal", "-shm"] {
            let mut from = database.as_os_str().to_owned();
            from.push(suffix);
            let from = PathBuf::from(from);
            if from.exists() {
                let mut to = aside.as_os_str().to_owned();
                to.push(suffix);
                fs::rename(&from, PathBuf::from(to)).map_err(io("moving aside", &from))?;
            }
        }
        fs::rename(database, &aside).map_err(io("moving aside", database))?;
        replaced = Some(aside);
    }
    fs::rename(&staged, database).map_err(io("placing", database))?;
    // Run as root for a service user: the files belong to whoever owns their directory.
    give_to_directory_owner(database)?;
    for image in &manifest.images {
        give_to_directory_owner(&cache.image_path(&image.sha256))?;
    }
    // Opening it migrates an older schema (and keeps the pre-migration copy). The
    // restored history keeps its event ids; what this database writes from now on is
    // published under a new epoch, so it never reuses an id the replaced gateway may
    // have published after the backup was taken.
    let mut storage = Storage::open(database)?;
    storage.start_new_event_epoch(WallTime::from_unix_micros(now_ms.saturating_mul(1000)))?;
    storage.shutdown()?;
    Ok((manifest, replaced))
}
