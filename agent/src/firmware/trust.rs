//! The trust store: the public keys firmware must be signed with before the agent caches
//! it or sends it to a device.
//!
//! Each key is a file holding a P-256 public key, in PEM (`-----BEGIN PUBLIC KEY-----`, as
//! `imgtool getpub --encoding pem` or `openssl ec -pubout` write it) or DER
//! SubjectPublicKeyInfo. Keys are named by their file name in messages and by their
//! MCUboot key hash in storage.

use std::path::{Path, PathBuf};

use lorawan_fuota::image::TrustedKey;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

/// A trusted key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustStoreError {
    /// The file could not be read.
    #[error("cannot read trusted key {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a P-256 public key.
    #[error(
        "trusted key {} is not a P-256 public key in PEM (\"-----BEGIN PUBLIC KEY-----\") or DER{hint}",
        path.display()
    )]
    NotAPublicKey {
        /// The file.
        path: PathBuf,
        /// A hint when the mistake is recognisable.
        hint: &'static str,
    },
    /// The same key is listed twice.
    #[error("trusted key {} is the same key as {}", path.display(), first.display())]
    Duplicate {
        /// The second file.
        path: PathBuf,
        /// The first file with that key.
        first: PathBuf,
    },
}

/// One trusted key and where it came from.
#[derive(Debug, Clone)]
pub struct TrustStoreEntry {
    /// The key.
    pub key: TrustedKey,
    /// A name for messages (the file name).
    pub name: String,
}

/// The keys images must be signed with.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    entries: Vec<TrustStoreEntry>,
    keys: Vec<TrustedKey>,
}

impl TrustStore {
    /// A store of the given keys.
    pub fn new(entries: Vec<TrustStoreEntry>) -> Self {
        let keys = entries.iter().map(|entry| entry.key.clone()).collect();
        TrustStore { entries, keys }
    }

    /// Loads every key file; any unreadable or invalid file is an error (a trust store
    /// that silently lost a key would refuse every image signed with it).
    pub fn load(paths: &[PathBuf]) -> Result<Self, TrustStoreError> {
        let mut entries: Vec<TrustStoreEntry> = Vec::new();
        let mut sources: Vec<&Path> = Vec::new();
        for path in paths {
            let key = read_public_key(path)?;
            if let Some(index) = entries
                .iter()
                .position(|entry| entry.key.key_hash() == key.key_hash())
            {
                return Err(TrustStoreError::Duplicate {
                    path: path.clone(),
                    first: sources[index].to_path_buf(),
                });
            }
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            entries.push(TrustStoreEntry { key, name });
            sources.push(path);
        }
        Ok(Self::new(entries))
    }

    /// The keys, in the order given (verification reports an index into this).
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The entries.
    pub fn entries(&self) -> &[TrustStoreEntry] {
        &self.entries
    }

    /// True when no key is trusted (every image is then refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The index of the key whose DER ECDSA (or raw 64-byte `r || s`) `signature` over
    /// `digest` verifies, if any.
    pub fn verify_detached(&self, digest: &[u8; 32], signature: &[u8]) -> Option<usize> {
        let signature = Signature::from_der(signature)
            .or_else(|_| Signature::from_slice(signature))
            .ok()?;
        self.keys.iter().position(|key| {
            key.verifying_key()
                .verify_prehash(digest, &signature)
                .is_ok()
        })
    }
}

/// Reads a P-256 public key from a PEM or DER file.
pub fn read_public_key(path: &Path) -> Result<TrustedKey, TrustStoreError> {
    let bytes = std::fs::read(path).map_err(|source| TrustStoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_public_key(&bytes).ok_or_else(|| {
        let text = String::from_utf8_lossy(&bytes);
        let hint = if text.contains("PRIVATE KEY") {
            ": this is a private key; give the agent only the public key \
             (imgtool getpub --encoding pem -k key.pem)"
        } else {
            ""
        };
        TrustStoreError::NotAPublicKey {
            path: path.to_path_buf(),
            hint,
        }
    })
}

/// A P-256 public key from PEM or DER SubjectPublicKeyInfo bytes.
pub fn parse_public_key(bytes: &[u8]) -> Option<TrustedKey> {
    let verifying_key = match std::str::from_utf8(bytes) {
        Ok(text) if text.contains("-----BEGIN") => VerifyingKey::from_public_key_pem(text).ok()?,
        _ => VerifyingKey::from_public_key_der(bytes).ok()?,
    };
    TrustedKey::from_sec1_bytes(verifying_key.to_sec1_point(false).as_bytes()).ok()
}
