//! TLV kinds, the hardware-version TLV, and walking a TLV area without allocation.
//!
//! A TLV area starts with a 4-byte info header (`magic: u16`, `tlv_tot: u16`, where
//! `tlv_tot` counts the info header too), followed by TLVs, each a 4-byte header
//! (`type: u16`, `len: u16`, little-endian) and `len` bytes of value. imgtool writes
//! standard kinds as `type: u8, pad: u8 = 0`, which is the same bytes as a `u16` below
//! 0x100; custom kinds (0x00a0..=0xfffe) are written as a full `u16`. Kinds are read
//! as `u16` here, as MCUboot does.

use super::error::{ImageError, ImageRegion, SourceError};
use super::source::ImageSource;

/// Magic of the protected TLV area's info header.
pub const TLV_PROTECTED_INFO_MAGIC: u16 = 0x6908;
/// Magic of the unprotected TLV area's info header.
pub const TLV_INFO_MAGIC: u16 = 0x6907;
/// Length of a TLV info header and of a TLV header.
pub const TLV_HEADER_LEN: u32 = 4;

/// SHA-256 of the signer's public key (DER SubjectPublicKeyInfo); 32 bytes, unprotected.
pub const TLV_KEYHASH: u16 = 0x01;
/// The signer's public key as DER SubjectPublicKeyInfo (`--public-key-format full`).
pub const TLV_PUBKEY: u16 = 0x02;
/// SHA-256 of header, body and protected TLVs; 32 bytes, unprotected.
pub const TLV_SHA256: u16 = 0x10;
/// ECDSA signature (P-256 here) of the SHA-256 digest, DER-encoded; unprotected.
pub const TLV_ECDSA_SIG: u16 = 0x22;
/// Security counter (`imgtool sign --security-counter`), u32, protected.
pub const TLV_SEC_CNT: u16 = 0x50;

/// First TLV kind imgtool accepts for `--custom-tlv` (vendor range `0x00a0..=0xfffe`).
pub const TLV_CUSTOM_MIN: u16 = 0x00a0;
/// Last TLV kind imgtool accepts for `--custom-tlv`.
pub const TLV_CUSTOM_MAX: u16 = 0xfffe;

/// The hardware version the image is built for: a protected custom TLV holding the
/// TS006 32-bit hardware version (`HWVersion` of DevVersionAns) in **4 bytes,
/// big-endian**.
///
/// Big-endian because imgtool copies a `0x…` value of `--custom-tlv` byte for byte in
/// the order written (`bytes.fromhex`), so the hardware version 0x00010203 is signed in
/// with `imgtool sign --custom-tlv 0xa0 0x00010203 …` (exactly 8 hex digits). The agent's
/// signer writes it with [`encode_hardware_version`].
pub const TLV_HARDWARE_VERSION: u16 = 0x00a0;

/// The value of a [`TLV_HARDWARE_VERSION`] TLV for a hardware version.
pub const fn encode_hardware_version(hardware_version: u32) -> [u8; 4] {
    hardware_version.to_be_bytes()
}

/// The hardware version held in a [`TLV_HARDWARE_VERSION`] TLV value; anything but
/// exactly 4 bytes is an error.
pub fn decode_hardware_version(value: &[u8]) -> Result<u32, ImageError> {
    let bytes: [u8; 4] = value.try_into().map_err(|_| ImageError::BadTlvLength {
        kind: TLV_HARDWARE_VERSION,
        len: u16::try_from(value.len()).unwrap_or(u16::MAX),
    })?;
    Ok(u32::from_be_bytes(bytes))
}

/// Position of one TLV in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlvEntry {
    /// TLV kind.
    pub kind: u16,
    /// Offset of the value in the image.
    pub value_offset: u32,
    /// Length of the value.
    pub len: u16,
}

/// Walks the TLVs of one area of an image read through an [`ImageSource`], checking
/// that each fits inside the area.
#[derive(Debug, Clone)]
pub(crate) struct TlvCursor {
    region: ImageRegion,
    next: u32,
    end: u32,
}

impl TlvCursor {
    /// A cursor over the TLVs between `first` (just after the info header) and `end`.
    pub fn new(region: ImageRegion, first: u32, end: u32) -> Self {
        Self {
            region,
            next: first,
            end,
        }
    }

    /// The next TLV, `None` at the end of the area. After an error the cursor is at
    /// the end.
    pub fn next_entry<S: ImageSource>(
        &mut self,
        source: &mut S,
    ) -> Result<Option<TlvEntry>, SourceError<S::Error>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let offset = self.next;
        let overflow = ImageError::TlvOverflow {
            region: self.region,
            offset,
        };
        // Fuse: any error leaves the cursor at the end.
        self.next = self.end;

        let value_offset = offset
            .checked_add(TLV_HEADER_LEN)
            .filter(|&v| v <= self.end)
            .ok_or(overflow)?;
        let mut header = [0u8; TLV_HEADER_LEN as usize];
        source
            .read(offset, &mut header)
            .map_err(SourceError::Read)?;
        let [k0, k1, l0, l1] = header;
        let kind = u16::from_le_bytes([k0, k1]);
        let len = u16::from_le_bytes([l0, l1]);
        let value_end = value_offset
            .checked_add(u32::from(len))
            .filter(|&v| v <= self.end)
            .ok_or(overflow)?;

        self.next = value_end;
        Ok(Some(TlvEntry {
            kind,
            value_offset,
            len,
        }))
    }
}

/// One TLV of an image held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// TLV kind.
    pub kind: u16,
    /// TLV value.
    pub value: &'a [u8],
}

/// Iterator over the TLVs of one area of an [`Image`](super::Image). The image was
/// checked when parsed, so iteration cannot fail.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    image: &'a [u8],
    cursor: TlvCursor,
}

impl<'a> TlvIter<'a> {
    /// Iterator over the TLVs of `image` between `first` and `end`.
    pub(crate) fn new(image: &'a [u8], region: ImageRegion, first: u32, end: u32) -> Self {
        Self {
            image,
            cursor: TlvCursor::new(region, first, end),
        }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        let mut source = self.image;
        let entry = self.cursor.next_entry(&mut source).ok()??;
        let start = entry.value_offset as usize;
        let end = start.checked_add(usize::from(entry.len))?;
        let value = self.image.get(start..end)?;
        Some(Tlv {
            kind: entry.kind,
            value,
        })
    }
}
