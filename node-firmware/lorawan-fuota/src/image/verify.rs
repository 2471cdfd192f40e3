//! Verifying a signed image: hash, signer key, ECDSA P-256 signature, hardware version.
//!
//! The checks, in order (the first failure is the error returned):
//!
//! 1. structure: header, regions within the available bytes, TLV areas
//!    ([`ImageLayout::read`], then every TLV walked);
//! 2. a SHA256 TLV and an ECDSASIG TLV are present;
//! 3. SHA-256 of header, body and protected TLVs equals the SHA256 TLV;
//! 4. the trusted keys the image may be signed with: those matching its KEYHASH and/or
//!    PUBKEY TLV if present, all of them otherwise; none is [`ImageError::KeyNotTrusted`];
//! 5. the DER signature verifies, over that digest, with one of those keys;
//! 6. if the caller gave the device's hardware version, the image's (from its protected
//!    hardware-version TLV) is present and equal: an authentic image for other hardware
//!    is [`ImageError::WrongHardware`] (TS006 UpImageStatus 2).
//!
//! Images are read through [`ImageSource`] in chunks of [`HASH_CHUNK_LEN`] bytes (or
//! of the caller's buffer, [`verify_source_with_buffer`]), so a device verifies its flash
//! slot without holding the image in RAM.

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256};

use super::error::{ImageError, SourceError};
use super::header::ImageHeader;
use super::key::{TrustedKey, SPKI_P256_LEN};
use super::layout::{flatten, ImageLayout, TlvSummary};
use super::signature::{decode_der_signature, MAX_SIGNATURE_LEN};
use super::source::ImageSource;
use super::tlv::{TlvEntry, TLV_KEYHASH, TLV_SHA256};
use super::version::ImageVersion;

/// How many bytes are read at a time while hashing (a stack buffer).
pub const HASH_CHUNK_LEN: usize = 256;

/// Length of a SHA-256 digest.
const DIGEST_LEN: usize = 32;

/// Options of [`verify`] and [`verify_source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifyOptions {
    device_hardware: Option<u32>,
}

impl VerifyOptions {
    /// No hardware check.
    pub const fn new() -> Self {
        Self {
            device_hardware: None,
        }
    }

    /// Refuse images without a hardware-version TLV or built for hardware other than
    /// `device_hardware` (the TS006 HWVersion of the device).
    pub const fn require_hardware(self, device_hardware: u32) -> Self {
        Self {
            device_hardware: Some(device_hardware),
        }
    }

    /// The device hardware version images must match, if any.
    pub const fn device_hardware(&self) -> Option<u32> {
        self.device_hardware
    }
}

/// An image whose structure, SHA-256, signature TLV presence and (if asked) hardware
/// version were checked, but not its signature: see [`check_integrity_source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedImage {
    layout: ImageLayout,
    digest: [u8; DIGEST_LEN],
    hardware_version: Option<u32>,
}

impl CheckedImage {
    /// The image header.
    pub fn header(&self) -> &ImageHeader {
        &self.layout.header
    }

    /// Where the regions of the image lie.
    pub fn layout(&self) -> &ImageLayout {
        &self.layout
    }

    /// The MCUboot version.
    pub fn version(&self) -> ImageVersion {
        self.layout.header.version
    }

    /// The TS006 firmware version (see [`ImageVersion::to_ts006`]).
    pub fn ts006_version(&self) -> u32 {
        self.layout.header.version.to_ts006()
    }

    /// The hardware version the image is built for, if it carries one.
    pub fn hardware_version(&self) -> Option<u32> {
        self.hardware_version
    }

    /// SHA-256 of header, body and protected TLVs (what `imgtool verify` prints as the
    /// image digest).
    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        &self.digest
    }

    /// Length of the image up to the end of its TLVs.
    pub fn image_len(&self) -> u32 {
        self.layout.total_len()
    }
}

/// An image that passed verification: what the caller may now trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedImage {
    checked: CheckedImage,
    key_index: usize,
}

impl VerifiedImage {
    /// What was checked besides the signature.
    pub fn checked(&self) -> &CheckedImage {
        &self.checked
    }

    /// The image header.
    pub fn header(&self) -> &ImageHeader {
        self.checked.header()
    }

    /// Where the regions of the image lie.
    pub fn layout(&self) -> &ImageLayout {
        self.checked.layout()
    }

    /// The MCUboot version.
    pub fn version(&self) -> ImageVersion {
        self.checked.version()
    }

    /// The TS006 firmware version (see [`ImageVersion::to_ts006`]).
    pub fn ts006_version(&self) -> u32 {
        self.checked.ts006_version()
    }

    /// The hardware version the image is built for, if it carries one.
    pub fn hardware_version(&self) -> Option<u32> {
        self.checked.hardware_version()
    }

    /// SHA-256 of header, body and protected TLVs (what `imgtool verify` prints as the
    /// image digest).
    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        self.checked.digest()
    }

    /// Index, in the keys given, of the key that signed the image.
    pub fn key_index(&self) -> usize {
        self.key_index
    }

    /// Length of the image up to the end of its TLVs.
    pub fn image_len(&self) -> u32 {
        self.checked.image_len()
    }
}

/// Verifies an image held in memory. `image` may extend past the image's TLVs (a whole
/// slot); the extra bytes are ignored. `keys` are the trusted keys.
pub fn verify(
    image: &[u8],
    keys: &[TrustedKey],
    options: &VerifyOptions,
) -> Result<VerifiedImage, ImageError> {
    let mut source = image;
    verify_source(&mut source, keys, options).map_err(flatten)
}

/// Verifies an image read in chunks of [`HASH_CHUNK_LEN`] bytes from `source` (a flash
/// slot, say), with a stack buffer.
pub fn verify_source<S: ImageSource>(
    source: &mut S,
    keys: &[TrustedKey],
    options: &VerifyOptions,
) -> Result<VerifiedImage, SourceError<S::Error>> {
    let mut chunk = [0u8; HASH_CHUNK_LEN];
    verify_source_with_buffer(source, keys, options, &mut chunk)
}

/// Verifies an image read from `source`, hashing it in chunks of `chunk.len()` bytes
/// (a larger buffer means fewer reads; an empty one is treated as one byte long).
pub fn verify_source_with_buffer<S: ImageSource>(
    source: &mut S,
    keys: &[TrustedKey],
    options: &VerifyOptions,
    chunk: &mut [u8],
) -> Result<VerifiedImage, SourceError<S::Error>> {
    let (layout, tlvs, digest, signature) = check_structure_and_hash(source, chunk)?;

    let signer = SignerId::read(source, &tlvs)?;
    if !keys.iter().any(|key| signer.matches(key)) {
        return Err(ImageError::KeyNotTrusted.into());
    }

    let mut der = [0u8; MAX_SIGNATURE_LEN];
    let der = read_value(source, signature, &mut der)?;
    let signature = decode_der_signature(der).ok_or(ImageError::MalformedSignature)?;
    let key_index = keys
        .iter()
        .position(|key| {
            signer.matches(key)
                && key
                    .verifying_key()
                    .verify_prehash(&digest, &signature)
                    .is_ok()
        })
        .ok_or(ImageError::BadSignature)?;

    check_hardware(options, &tlvs)?;
    Ok(VerifiedImage {
        checked: CheckedImage {
            layout,
            digest,
            hardware_version: tlvs.hardware_version,
        },
        key_index,
    })
}

/// Checks everything [`verify_source`] does except the signer and the signature:
/// structure (steps 1 and 2: a SHA256 and an ECDSASIG TLV are present), the SHA-256
/// (step 3) and the hardware version (step 6).
///
/// For a device whose bootloader verifies the signature before it installs anything:
/// the application refuses a corrupt, truncated or foreign image before it asks for the
/// update, without linking ECDSA (about 18 KB of code on a Cortex-M4); an image whose
/// signature is forged is refused by the bootloader after the reset instead.
pub fn check_integrity_source<S: ImageSource>(
    source: &mut S,
    options: &VerifyOptions,
) -> Result<CheckedImage, SourceError<S::Error>> {
    let mut chunk = [0u8; HASH_CHUNK_LEN];
    let (layout, tlvs, digest, _signature) = check_structure_and_hash(source, &mut chunk)?;
    check_hardware(options, &tlvs)?;
    Ok(CheckedImage {
        layout,
        digest,
        hardware_version: tlvs.hardware_version,
    })
}

/// Steps 1 to 3: the layout, the TLVs, the SHA-256 of the hashed region checked against
/// the SHA256 TLV; and where the signature TLV is.
#[allow(clippy::type_complexity)]
fn check_structure_and_hash<S: ImageSource>(
    source: &mut S,
    chunk: &mut [u8],
) -> Result<(ImageLayout, TlvSummary, [u8; DIGEST_LEN], TlvEntry), SourceError<S::Error>> {
    let layout = ImageLayout::read(source)?;
    let tlvs = TlvSummary::scan(source, &layout)?;
    let sha256 = tlvs.sha256.ok_or(ImageError::MissingHash)?;
    let signature = tlvs.signature.ok_or(ImageError::MissingSignature)?;

    let digest = hash_region(source, layout.hashed_len(), chunk)?;
    let mut expected = [0u8; DIGEST_LEN];
    read_value(source, sha256, &mut expected)?;
    if digest != expected {
        return Err(ImageError::HashMismatch.into());
    }
    Ok((layout, tlvs, digest, signature))
}

/// Step 6: the image's hardware version against the device's, if the caller gave one.
fn check_hardware(options: &VerifyOptions, tlvs: &TlvSummary) -> Result<(), ImageError> {
    if let Some(device) = options.device_hardware {
        match tlvs.hardware_version {
            None => return Err(ImageError::MissingHardwareVersion { device }),
            Some(image) if image != device => {
                return Err(ImageError::WrongHardware { image, device })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// SHA-256 of the first `len` bytes of the source, read `chunk.len()` bytes at a time.
fn hash_region<S: ImageSource>(
    source: &mut S,
    len: u32,
    chunk: &mut [u8],
) -> Result<[u8; DIGEST_LEN], SourceError<S::Error>> {
    let mut one_byte = [0u8; 1];
    let chunk = if chunk.is_empty() {
        &mut one_byte[..]
    } else {
        chunk
    };
    let mut hasher = Sha256::new();
    let mut offset = 0u32;
    while offset < len {
        let left = usize::try_from(len - offset).unwrap_or(usize::MAX);
        let n = left.min(chunk.len());
        let buf = chunk.get_mut(..n).unwrap_or_default();
        source.read(offset, buf).map_err(SourceError::Read)?;
        hasher.update(&*buf);
        // buf.len() <= len - offset, so this neither truncates nor overflows.
        offset = offset.saturating_add(u32::try_from(buf.len()).unwrap_or(u32::MAX));
    }
    Ok(hasher.finalize().into())
}

/// Reads a TLV's value into `buf`, which must be able to hold it; returns the filled
/// part. A value longer than `buf` is a [`ImageError::BadTlvLength`].
fn read_value<'b, S: ImageSource>(
    source: &mut S,
    entry: TlvEntry,
    buf: &'b mut [u8],
) -> Result<&'b [u8], SourceError<S::Error>> {
    let bad_length = ImageError::BadTlvLength {
        kind: entry.kind,
        len: entry.len,
    };
    let fixed_len = matches!(entry.kind, TLV_SHA256 | TLV_KEYHASH);
    if entry.len == 0 || (fixed_len && usize::from(entry.len) != buf.len()) {
        return Err(bad_length.into());
    }
    let value = buf.get_mut(..usize::from(entry.len)).ok_or(bad_length)?;
    source
        .read(entry.value_offset, value)
        .map_err(SourceError::Read)?;
    Ok(value)
}

/// The signer as the image names it: its KEYHASH and PUBKEY TLVs, when present.
#[derive(Debug, Clone, Copy)]
struct SignerId {
    key_hash: Option<[u8; DIGEST_LEN]>,
    public_key: Option<[u8; SPKI_P256_LEN]>,
}

impl SignerId {
    /// Reads the key TLVs. A PUBKEY that is not a P-256 DER key (91 bytes) can match
    /// no trusted key: [`ImageError::KeyNotTrusted`].
    fn read<S: ImageSource>(
        source: &mut S,
        tlvs: &TlvSummary,
    ) -> Result<Self, SourceError<S::Error>> {
        let mut id = SignerId {
            key_hash: None,
            public_key: None,
        };
        if let Some(entry) = tlvs.key_hash {
            let mut hash = [0u8; DIGEST_LEN];
            read_value(source, entry, &mut hash)?;
            id.key_hash = Some(hash);
        }
        if let Some(entry) = tlvs.public_key {
            if usize::from(entry.len) != SPKI_P256_LEN {
                return Err(ImageError::KeyNotTrusted.into());
            }
            let mut der = [0u8; SPKI_P256_LEN];
            read_value(source, entry, &mut der)?;
            id.public_key = Some(der);
        }
        Ok(id)
    }

    /// True if `key` matches every key TLV present (any key if there is none).
    fn matches(&self, key: &TrustedKey) -> bool {
        self.key_hash.is_none_or(|hash| &hash == key.key_hash())
            && self.public_key.is_none_or(|der| &der == key.spki_der())
    }
}
