//! The 32-byte MCUboot image header.
//!
//! ```text
//! 0  magic            u32  0x96f3b83d
//! 4  load_addr        u32
//! 8  hdr_size         u16  header length including padding; the body starts here
//! 10 protect_tlv_size u16  protected TLV area length (info header included), 0 if none
//! 12 img_size         u32  body length
//! 16 flags            u32
//! 20 version          u8 major, u8 minor, u16 revision, u32 build
//! 28 pad              u32
//! ```
//!
//! Little-endian only: a header whose magic reads byte-swapped is a big-endian image
//! and is refused with [`ImageError::BigEndian`].

use super::error::ImageError;
use super::version::ImageVersion;

/// MCUboot's image magic number.
pub const IMAGE_MAGIC: u32 = 0x96f3_b83d;

/// Length of the fixed image header; `hdr_size` may be larger (padding).
pub const IMAGE_HEADER_LEN: usize = 32;

/// Header flag: the body is encrypted with AES-128.
pub const FLAG_ENCRYPTED_AES128: u32 = 0x0000_0004;
/// Header flag: the body is encrypted with AES-256.
pub const FLAG_ENCRYPTED_AES256: u32 = 0x0000_0008;
/// Header flag: the body is LZMA1-compressed.
pub const FLAG_COMPRESSED_LZMA1: u32 = 0x0000_0200;
/// Header flag: the body is LZMA2-compressed.
pub const FLAG_COMPRESSED_LZMA2: u32 = 0x0000_0400;
/// Header flag: ARM Thumb filter applied before compression.
pub const FLAG_COMPRESSED_ARM_THUMB: u32 = 0x0000_0800;

/// Flags this verifier refuses: it checks the stored bytes, which for encrypted or
/// compressed images are not the bytes that were signed.
pub const UNSUPPORTED_FLAGS: u32 = FLAG_ENCRYPTED_AES128
    | FLAG_ENCRYPTED_AES256
    | FLAG_COMPRESSED_LZMA1
    | FLAG_COMPRESSED_LZMA2
    | FLAG_COMPRESSED_ARM_THUMB;

/// A parsed image header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Load address (RAM-load images), or ROM-fixed address; 0 otherwise.
    pub load_addr: u32,
    /// Header length including padding: offset of the body.
    pub hdr_size: u16,
    /// Length of the protected TLV area, its info header included; 0 if there is none.
    pub protect_tlv_size: u16,
    /// Length of the body.
    pub img_size: u32,
    /// Image flags.
    pub flags: u32,
    /// Image version.
    pub version: ImageVersion,
}

impl ImageHeader {
    /// Parses the first [`IMAGE_HEADER_LEN`] bytes of `bytes` (more may follow).
    ///
    /// Checks the magic (refusing big-endian images), that `hdr_size` covers the
    /// header, and that no unsupported flag is set.
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        let Some(raw) = bytes.first_chunk::<IMAGE_HEADER_LEN>() else {
            return Err(ImageError::Truncated {
                region: super::ImageRegion::Header,
                needed: IMAGE_HEADER_LEN as u64,
                available: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            });
        };
        let [m0, m1, m2, m3, a0, a1, a2, a3, h0, h1, p0, p1, s0, s1, s2, s3, f0, f1, f2, f3, major, minor, r0, r1, b0, b1, b2, b3, _, _, _, _] =
            *raw;
        let magic = [m0, m1, m2, m3];
        if u32::from_le_bytes(magic) != IMAGE_MAGIC {
            if u32::from_be_bytes(magic) == IMAGE_MAGIC {
                return Err(ImageError::BigEndian);
            }
            return Err(ImageError::BadMagic(u32::from_le_bytes(magic)));
        }
        let header = ImageHeader {
            load_addr: u32::from_le_bytes([a0, a1, a2, a3]),
            hdr_size: u16::from_le_bytes([h0, h1]),
            protect_tlv_size: u16::from_le_bytes([p0, p1]),
            img_size: u32::from_le_bytes([s0, s1, s2, s3]),
            flags: u32::from_le_bytes([f0, f1, f2, f3]),
            version: ImageVersion::new(
                major,
                minor,
                u16::from_le_bytes([r0, r1]),
                u32::from_le_bytes([b0, b1, b2, b3]),
            ),
        };
        if usize::from(header.hdr_size) < IMAGE_HEADER_LEN {
            return Err(ImageError::HeaderTooSmall(header.hdr_size));
        }
        if header.flags & UNSUPPORTED_FLAGS != 0 {
            return Err(ImageError::UnsupportedFlags(
                header.flags & UNSUPPORTED_FLAGS,
            ));
        }
        Ok(header)
    }
}
