//! What can be wrong with a signed image, and failures of the storage it is read from.

use core::fmt;

/// A region of an image, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageRegion {
    /// The image header (and its padding up to `hdr_size`).
    Header,
    /// The firmware body (`img_size` bytes after the header).
    Body,
    /// The protected TLV area (covered by the hash and the signature).
    ProtectedTlvs,
    /// The unprotected TLV area (hash, key and signature TLVs).
    UnprotectedTlvs,
}

impl fmt::Display for ImageRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageRegion::Header => "header",
            ImageRegion::Body => "body",
            ImageRegion::ProtectedTlvs => "protected TLV area",
            ImageRegion::UnprotectedTlvs => "unprotected TLV area",
        })
    }
}

/// Why an image was refused.
///
/// Structural errors come first in the order of checks (header, regions, TLVs), then
/// the cryptographic ones (hash, key, signature), then the hardware check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// A region ends past the end of the available bytes.
    Truncated {
        /// The region that does not fit.
        region: ImageRegion,
        /// The offset at which that region ends.
        needed: u64,
        /// How many bytes are available (slice length or slot size).
        available: u32,
    },
    /// The magic number is MCUboot's, byte-swapped: a big-endian image
    /// (`imgtool sign --endian big`), which is not supported.
    BigEndian,
    /// The first four bytes are not the image magic `0x96f3b83d` (little-endian).
    BadMagic(u32),
    /// `hdr_size` is smaller than the 32-byte header itself.
    HeaderTooSmall(u16),
    /// The header sets flags this verifier cannot honour (encrypted or compressed
    /// images); the value is the offending flag bits.
    UnsupportedFlags(u32),
    /// A TLV info header has the wrong magic.
    BadTlvInfoMagic {
        /// The area whose info header is wrong.
        region: ImageRegion,
        /// The magic found there.
        found: u16,
    },
    /// A TLV info header's `tlv_tot` is smaller than the info header itself.
    BadTlvTotal {
        /// The area whose info header is wrong.
        region: ImageRegion,
        /// The `tlv_tot` found there.
        tlv_tot: u16,
    },
    /// The header's `protect_tlv_size` differs from the protected area's `tlv_tot`.
    ProtectedSizeMismatch {
        /// `protect_tlv_size` from the image header.
        header: u16,
        /// `tlv_tot` from the protected TLV info header.
        tlv_tot: u16,
    },
    /// A TLV (its 4-byte header or its value) runs past the end of its area.
    TlvOverflow {
        /// The area the TLV is in.
        region: ImageRegion,
        /// Offset of the TLV's header in the image.
        offset: u32,
    },
    /// A TLV has a length its kind does not allow.
    BadTlvLength {
        /// The TLV kind.
        kind: u16,
        /// Its length.
        len: u16,
    },
    /// A TLV that may appear once appears twice.
    DuplicateTlv {
        /// The TLV kind.
        kind: u16,
    },
    /// The unprotected area holds a TLV that is neither a hash, a key nor a signature:
    /// anything else must be protected by the signature.
    UnprotectedTlv {
        /// The TLV kind.
        kind: u16,
    },
    /// There is no SHA256 TLV.
    MissingHash,
    /// There is no ECDSA signature TLV.
    MissingSignature,
    /// The SHA-256 of header, body and protected TLVs differs from the SHA256 TLV.
    HashMismatch,
    /// The image's KEYHASH or PUBKEY TLV names no trusted key.
    KeyNotTrusted,
    /// The signature TLV is not a valid DER-encoded ECDSA P-256 signature.
    MalformedSignature,
    /// The signature does not verify with any trusted key.
    BadSignature,
    /// The caller requires a hardware version but the image carries none.
    MissingHardwareVersion {
        /// The device's hardware version.
        device: u32,
    },
    /// The image is authentic but built for other hardware.
    WrongHardware {
        /// The hardware version carried by the image.
        image: u32,
        /// The device's hardware version.
        device: u32,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ImageError::Truncated {
                region,
                needed,
                available,
            } => write!(
                f,
                "image truncated: the {region} ends at byte {needed} but only {available} bytes are available"
            ),
            ImageError::BigEndian => f.write_str("big-endian image, not supported"),
            ImageError::BadMagic(found) => {
                write!(f, "not an MCUboot image: magic {found:#010x}, expected {:#010x}", super::IMAGE_MAGIC)
            }
            ImageError::HeaderTooSmall(size) => {
                write!(f, "header size {size} is smaller than the 32-byte image header")
            }
            ImageError::UnsupportedFlags(flags) => {
                write!(f, "unsupported image flags {flags:#x} (encrypted or compressed image)")
            }
            ImageError::BadTlvInfoMagic { region, found } => {
                write!(f, "bad TLV info magic {found:#06x} in the {region}")
            }
            ImageError::BadTlvTotal { region, tlv_tot } => {
                write!(f, "TLV total length {tlv_tot} in the {region} is smaller than its info header")
            }
            ImageError::ProtectedSizeMismatch { header, tlv_tot } => write!(
                f,
                "protected TLV size {header} in the header differs from the protected area's total {tlv_tot}"
            ),
            ImageError::TlvOverflow { region, offset } => {
                write!(f, "TLV at offset {offset} runs past the end of the {region}")
            }
            ImageError::BadTlvLength { kind, len } => {
                write!(f, "TLV {kind:#06x} has invalid length {len}")
            }
            ImageError::DuplicateTlv { kind } => write!(f, "TLV {kind:#06x} appears more than once"),
            ImageError::UnprotectedTlv { kind } => {
                write!(f, "TLV {kind:#06x} is not allowed in the unprotected area")
            }
            ImageError::MissingHash => f.write_str("image has no SHA256 TLV"),
            ImageError::MissingSignature => f.write_str("image has no ECDSA P-256 signature TLV"),
            ImageError::HashMismatch => f.write_str("image hash does not match its SHA256 TLV"),
            ImageError::KeyNotTrusted => f.write_str("image was signed with a key that is not trusted"),
            ImageError::MalformedSignature => f.write_str("signature TLV is not a DER ECDSA P-256 signature"),
            ImageError::BadSignature => f.write_str("signature does not verify with any trusted key"),
            ImageError::MissingHardwareVersion { device } => write!(
                f,
                "image carries no hardware version (device hardware is {device:#010x})"
            ),
            ImageError::WrongHardware { image, device } => write!(
                f,
                "image is for hardware {image:#010x}, device hardware is {device:#010x}"
            ),
        }
    }
}

impl core::error::Error for ImageError {}

/// An error while checking an image read through an [`ImageSource`](super::ImageSource):
/// either the image is bad, or reading it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceError<E> {
    /// The image itself is bad.
    Image(ImageError),
    /// The source failed to read (a flash error, say).
    Read(E),
}

impl<E> From<ImageError> for SourceError<E> {
    fn from(error: ImageError) -> Self {
        SourceError::Image(error)
    }
}

impl<E: fmt::Display> fmt::Display for SourceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Image(error) => error.fmt(f),
            SourceError::Read(error) => write!(f, "reading the image failed: {error}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for SourceError<E> {}
