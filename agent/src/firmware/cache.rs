//! The firmware cache: signed images kept on the gateway's disk, named by the SHA-256 of
//! their content, with their metadata in SQLite.
//!
//! * **Nothing unverified enters.** An MCUboot image is parsed and its signature checked
//!   against the trust store; an opaque image needs a detached signature over its SHA-256
//!   from a trusted key. A refused image leaves no trace but the error.
//! * **Nothing half-written.** The file is written under a temporary name, synced,
//!   renamed to `<sha256>.img` and the directory synced, and only then is the row
//!   committed. A crash before the commit leaves at most an orphan file, which
//!   [`FirmwareCache::collect_garbage`] removes; a crash after it leaves a complete image.
//! * **Idempotent.** Importing an image that is already cached changes nothing (and
//!   repairs its file if it went missing or was damaged on disk).
//! * **Checked on the way out.** [`FirmwareCache::load`] re-hashes the file and re-verifies
//!   the signature with the current trust store, so a damaged file, or an image whose key
//!   has since been withdrawn, is never sent to a device.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use lorawan_fuota::image::{verify, ImageError, VerifyOptions};
use sha2::{Digest, Sha256};

use super::hex;
use super::trust::TrustStore;
use crate::clock::WallTime;
use crate::storage::{FirmwareImageKind, FirmwareImageRecord, Storage, StorageError};

/// Largest image the cache takes (the STM32WL's whole flash is 256 KiB; this leaves room
/// for bigger devices while refusing a wrong file early).
pub const MAX_IMAGE_SIZE: usize = 4 * 1024 * 1024;

/// Longest name kept for an image.
const MAX_NAME_LEN: usize = 200;

/// Suffix of files being written.
const PARTIAL_SUFFIX: &str = ".partial";

/// Suffix of cached image files.
const IMAGE_SUFFIX: &str = ".img";

/// Why an image was not imported (or not loaded).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file to import could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadInput {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The image is empty.
    #[error("the image is empty")]
    Empty,
    /// The image is larger than the cache takes.
    #[error("the image is {len} bytes; the cache takes images up to {MAX_IMAGE_SIZE} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// No key is trusted, so no image can be.
    #[error(
        "no trusted keys are configured: add the signers' public keys to [firmware] trusted_keys"
    )]
    NoTrustedKeys,
    /// The MCUboot image is malformed or its signature does not verify.
    #[error("refused MCUboot image: {0}")]
    InvalidImage(ImageError),
    /// Bytes other than erased-flash padding follow the image's TLVs.
    #[error(
        "{trailing} bytes follow the image's end at offset {image_len} and are not 0xff padding: \
         not a single MCUboot image"
    )]
    TrailingData {
        /// Where the image ends.
        image_len: u32,
        /// How many bytes follow.
        trailing: usize,
    },
    /// The detached signature of an opaque image does not verify with any trusted key.
    #[error(
        "the detached signature does not verify with any trusted key (expected a DER or 64-byte \
         raw ECDSA P-256 signature over the SHA-256 of the image, e.g. from \
         `openssl dgst -sha256 -sign key.pem -out image.sig image`)"
    )]
    UntrustedSignature,
    /// The cache has no image with this id.
    #[error("no cached image {0}")]
    NotCached(String),
    /// A cached file no longer matches its SHA-256.
    #[error(
        "cached image {sha256} is damaged on disk (its content no longer matches its SHA-256); \
         import it again"
    )]
    Damaged {
        /// The image.
        sha256: String,
    },
    /// A cached image no longer verifies (its key was removed from the trust store).
    #[error("cached image {sha256} is no longer trusted: {reason}")]
    NoLongerTrusted {
        /// The image.
        sha256: String,
        /// Why.
        reason: String,
    },
    /// A file operation in the cache directory failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// The image is new and now cached.
    Imported(FirmwareImageRecord),
    /// The image was already cached; nothing changed.
    AlreadyCached(FirmwareImageRecord),
}

impl ImportOutcome {
    /// The cached image's metadata.
    pub fn record(&self) -> &FirmwareImageRecord {
        match self {
            ImportOutcome::Imported(record) | ImportOutcome::AlreadyCached(record) => record,
        }
    }
}

/// An opaque image to import.
#[derive(Debug, Clone, Copy)]
pub struct OpaqueImage<'a> {
    /// The bytes, sent to devices as they are.
    pub bytes: &'a [u8],
    /// DER (or raw `r || s`) ECDSA P-256 signature over the SHA-256 of `bytes`.
    pub signature: &'a [u8],
    /// The name to show.
    pub name: &'a str,
    /// The TS006 firmware version it installs, if known.
    pub ts006_version: Option<u32>,
    /// The hardware version it is for, if known.
    pub hardware_version: Option<u32>,
}

/// A cached image read back and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Its metadata.
    pub record: FirmwareImageRecord,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The cache directory and the keys images must be signed with.
#[derive(Debug, Clone)]
pub struct FirmwareCache {
    directory: PathBuf,
    trust: TrustStore,
}

impl FirmwareCache {
    /// The cache in `directory` (created if missing, mode 0750), trusting `trust`.
    /// Leftover temporary files of an interrupted import are removed.
    pub fn open(directory: &Path, trust: TrustStore) -> Result<Self, CacheError> {
        create_private_directory(directory)?;
        let cache = FirmwareCache {
            directory: directory.to_path_buf(),
            trust,
        };
        for path in cache.files_with_suffix(PARTIAL_SUFFIX)? {
            remove_file(&path)?;
        }
        Ok(cache)
    }

    /// The cache directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The trust store.
    pub fn trust_store(&self) -> &TrustStore {
        &self.trust
    }

    /// Replaces the trust store (a configuration reload): later imports, and every read
    /// of a cached image for a campaign, check against the new keys.
    pub fn set_trust_store(&mut self, trust: TrustStore) {
        self.trust = trust;
    }

    /// Reads and imports the MCUboot image at `path`, named by its file name.
    pub fn import_mcuboot_file(
        &self,
        storage: &mut Storage,
        path: &Path,
        at: WallTime,
    ) -> Result<ImportOutcome, CacheError> {
        let bytes = read_input(path)?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        self.import_mcuboot(storage, &bytes, &name, at)
    }

    /// Imports an MCUboot image: verified against the trust store, then cached.
    /// Trailing 0xff padding (`imgtool --pad`) is dropped; other trailing bytes are an
    /// error.
    pub fn import_mcuboot(
        &self,
        storage: &mut Storage,
        bytes: &[u8],
        name: &str,
        at: WallTime,
    ) -> Result<ImportOutcome, CacheError> {
        check_size(bytes)?;
        if self.trust.is_empty() {
            return Err(CacheError::NoTrustedKeys);
        }
        let verified = verify(bytes, self.trust.keys(), &VerifyOptions::new())
            .map_err(CacheError::InvalidImage)?;
        let image_len = verified.image_len();
        // `verify` checked that the image fits in `bytes`.
        let (image, trailing) = bytes.split_at(image_len as usize);
        if trailing.iter().any(|&byte| byte != 0xff) {
            return Err(CacheError::TrailingData {
                image_len,
                trailing: trailing.len(),
            });
        }
        let signer = &self.trust.keys()[verified.key_index()];
        let record = FirmwareImageRecord {
            sha256: hex(&Sha256::digest(image)),
            kind: FirmwareImageKind::Mcuboot,
            size: image.len() as u64,
            name: clean_name(name),
            version: Some(verified.version().to_string()),
            ts006_version: Some(verified.ts006_version()),
            hardware_version: verified.hardware_version(),
            image_digest: Some(hex(verified.digest())),
            signature: None,
            signer_key_hash: hex(signer.key_hash()),
            imported_at: at,
        };
        self.store(storage, image, record)
    }

    /// Imports an opaque image after checking its detached signature.
    pub fn import_opaque(
        &self,
        storage: &mut Storage,
        image: OpaqueImage<'_>,
        at: WallTime,
    ) -> Result<ImportOutcome, CacheError> {
        check_size(image.bytes)?;
        if self.trust.is_empty() {
            return Err(CacheError::NoTrustedKeys);
        }
        let digest: [u8; 32] = Sha256::digest(image.bytes).into();
        let key_index = self
            .trust
            .verify_detached(&digest, image.signature)
            .ok_or(CacheError::UntrustedSignature)?;
        let record = FirmwareImageRecord {
            sha256: hex(&digest),
            kind: FirmwareImageKind::Opaque,
            size: image.bytes.len() as u64,
            name: clean_name(image.name),
            version: None,
            ts006_version: image.ts006_version,
            hardware_version: image.hardware_version,
            image_digest: None,
            signature: Some(image.signature.to_vec()),
            signer_key_hash: hex(self.trust.keys()[key_index].key_hash()),
            imported_at: at,
        };
        self.store(storage, image.bytes, record)
    }

    /// Writes the file (unless an intact one is there) and commits the row.
    fn store(
        &self,
        storage: &mut Storage,
        image: &[u8],
        record: FirmwareImageRecord,
    ) -> Result<ImportOutcome, CacheError> {
        let path = self.image_path(&record.sha256);
        if !self.file_is_intact(&path, &record.sha256)? {
            write_atomically(&path, image)?;
        }
        if let Some(existing) = storage.firmware_image(&record.sha256)? {
            return Ok(ImportOutcome::AlreadyCached(existing));
        }
        let inserted = storage.write(|tx| tx.insert_firmware_image(&record))?;
        if inserted {
            Ok(ImportOutcome::Imported(record))
        } else {
            // Another connection inserted it between the check and the write.
            let existing = storage
                .firmware_image(&record.sha256)?
                .ok_or_else(|| CacheError::NotCached(record.sha256.clone()))?;
            Ok(ImportOutcome::AlreadyCached(existing))
        }
    }

    /// Reads a cached image, checking its content hash and, for an MCUboot image, its
    /// signature with the current trust store (for an opaque one, the stored detached
    /// signature).
    pub fn load(&self, storage: &Storage, sha256: &str) -> Result<LoadedImage, CacheError> {
        let record = storage
            .firmware_image(sha256)?
            .ok_or_else(|| CacheError::NotCached(sha256.to_string()))?;
        let path = self.image_path(&record.sha256);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(CacheError::Damaged {
                    sha256: record.sha256,
                })
            }
            Err(source) => {
                return Err(CacheError::Io {
                    action: "reading cached image",
                    path,
                    source,
                })
            }
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if hex(&digest) != record.sha256 {
            return Err(CacheError::Damaged {
                sha256: record.sha256,
            });
        }
        let trusted = match record.kind {
            FirmwareImageKind::Mcuboot => verify(&bytes, self.trust.keys(), &VerifyOptions::new())
                .map(|_| ())
                .map_err(|error| error.to_string()),
            FirmwareImageKind::Opaque => record
                .signature
                .as_deref()
                .and_then(|signature| self.trust.verify_detached(&digest, signature))
                .map(|_| ())
                .ok_or_else(|| "its signature does not verify with any trusted key".to_string()),
        };
        if let Err(reason) = trusted {
            return Err(CacheError::NoLongerTrusted {
                sha256: record.sha256,
                reason,
            });
        }
        Ok(LoadedImage { record, bytes })
    }

    /// Removes an image: the row first (with its event), then the file. Returns `false`
    /// if it was not cached.
    pub fn remove(
        &self,
        storage: &mut Storage,
        sha256: &str,
        at: WallTime,
    ) -> Result<bool, CacheError> {
        let removed = storage.write(|tx| tx.remove_firmware_image(sha256, at))?;
        if removed {
            let path = self.image_path(sha256);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CacheError::Io {
                        action: "removing cached image",
                        path,
                        source,
                    })
                }
            }
        }
        Ok(removed)
    }

    /// Removes image files that have no row (left by a crash between writing the file
    /// and committing, or by a removal cut short). Returns how many were removed.
    pub fn collect_garbage(&self, storage: &Storage) -> Result<usize, CacheError> {
        let mut removed = 0;
        for path in self.files_with_suffix(IMAGE_SUFFIX)? {
            let Some(sha256) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(IMAGE_SUFFIX))
            else {
                continue;
            };
            if storage.firmware_image(sha256)?.is_none() {
                remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Where the image with this SHA-256 lives.
    pub fn image_path(&self, sha256: &str) -> PathBuf {
        self.directory.join(format!("{sha256}{IMAGE_SUFFIX}"))
    }

    fn file_is_intact(&self, path: &Path, sha256: &str) -> Result<bool, CacheError> {
        match fs::read(path) {
            Ok(bytes) => Ok(hex(&Sha256::digest(&bytes)) == sha256),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(CacheError::Io {
                action: "reading cached image",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn files_with_suffix(&self, suffix: &str) -> Result<Vec<PathBuf>, CacheError> {
        let entries = fs::read_dir(&self.directory).map_err(|source| CacheError::Io {
            action: "listing cache directory",
            path: self.directory.clone(),
            source,
        })?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| CacheError::Io {
                action: "listing cache directory",
                path: self.directory.clone(),
                source,
            })?;
            let path = entry.path();
            let matches = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(suffix));
            if matches {
                paths.push(path);
            }
        }
        paths.sort();
        Ok(paths)
    }
}

fn check_size(bytes: &[u8]) -> Result<(), CacheError> {
    if bytes.is_empty() {
        return Err(CacheError::Empty);
    }
    if bytes.len() > MAX_IMAGE_SIZE {
        return Err(CacheError::TooLarge { len: bytes.len() });
    }
    Ok(())
}

fn read_input(path: &Path) -> Result<Vec<u8>, CacheError> {
    let metadata = fs::metadata(path).map_err(|source| CacheError::ReadInput {
        path: path.to_path_buf(),
        source,
    })?;
    // Refuse before reading a huge file (a disk image given by mistake).
    if metadata.len() > MAX_IMAGE_SIZE as u64 {
        return Err(CacheError::TooLarge {
            len: usize::try_from(metadata.len()).unwrap_or(usize::MAX),
        });
    }
    fs::read(path).map_err(|source| CacheError::ReadInput {
        path: path.to_path_buf(),
        source,
    })
}

/// A name for people: control characters replaced, length bounded.
fn clean_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_NAME_LEN)
        .collect();
    if cleaned.trim().is_empty() {
        "unnamed".to_string()
    } else {
        cleaned
    }
}

fn create_private_directory(directory: &Path) -> Result<(), CacheError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(directory)
        .map_err(|source| CacheError::Io {
            action: "creating cache directory",
            path: directory.to_path_buf(),
            source,
        })
}

fn remove_file(path: &Path) -> Result<(), CacheError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CacheError::Io {
            action: "removing",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `bytes` to `path` so that `path` either does not exist or holds all of them:
/// temporary file, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| CacheError::Io {
            action,
            path,
            source,
        }
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(PARTIAL_SUFFIX);
    let partial = PathBuf::from(partial);
    let mut file = File::create(&partial).map_err(io("creating", &partial))?;
    file.write_all(bytes).map_err(io("writing", &partial))?;
    file.sync_all().map_err(io("syncing", &partial))?;
    drop(file);
    fs::rename(&partial, path).map_err(io("renaming into place", path))?;
    if let Some(directory) = path.parent() {
        File::open(directory)
            .and_then(|directory| directory.sync_all())
            .map_err(io("syncing directory", directory))?;
    }
    Ok(())
}
