//! Where each region of an image lies, with every bound checked, and the TLVs found.
//!
//! [`ImageLayout::read`] reads the header and both TLV info headers from an
//! [`ImageSource`]; [`Image::parse`] does the same for an image in memory and walks all
//! its TLVs, giving access to the body and TLVs without verifying anything.

use super::error::{ImageError, ImageRegion, SourceError};
use super::header::{ImageHeader, IMAGE_HEADER_LEN};
use super::source::ImageSource;
use super::tlv::{
    decode_hardware_version, TlvCursor, TlvEntry, TlvIter, TLV_ECDSA_SIG, TLV_HARDWARE_VERSION,
    TLV_HEADER_LEN, TLV_INFO_MAGIC, TLV_KEYHASH, TLV_PROTECTED_INFO_MAGIC, TLV_PUBKEY, TLV_SHA256,
};
use super::verify::{verify_source, VerifiedImage, VerifyOptions};
use super::TrustedKey;

/// One TLV area: `len` bytes from `offset`, the 4-byte info header included. An absent
/// protected area has `len` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlvArea {
    /// Offset of the area (of its info header) in the image.
    pub offset: u32,
    /// Length of the area, info header included (`tlv_tot`); 0 if absent.
    pub len: u16,
}

impl TlvArea {
    /// Offset just past the area.
    pub fn end(&self) -> u32 {
        // Cannot overflow: checked against the source size when the layout was read.
        self.offset.saturating_add(u32::from(self.len))
    }

    /// Offset of the first TLV (just after the info header), or `end()` if absent.
    fn first_tlv(&self) -> u32 {
        if self.len == 0 {
            self.offset
        } else {
            self.offset.saturating_add(TLV_HEADER_LEN)
        }
    }
}

/// Where the regions of an image lie. Everything up to `unprotected.offset` is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLayout {
    /// The image header.
    pub header: ImageHeader,
    /// The protected TLV area (right after the body).
    pub protected: TlvArea,
    /// The unprotected TLV area (right after the protected one).
    pub unprotected: TlvArea,
}

impl ImageLayout {
    /// Reads the header and the TLV info headers, checking that every region fits in
    /// `source.size()` and that the info headers agree with the header.
    pub fn read<S: ImageSource>(source: &mut S) -> Result<Self, SourceError<S::Error>> {
        let available = source.size();
        let mut raw = [0u8; IMAGE_HEADER_LEN];
        check_fits(ImageRegion::Header, 0, IMAGE_HEADER_LEN as u64, available)?;
        source.read(0, &mut raw).map_err(SourceError::Read)?;
        let header = ImageHeader::parse(&raw)?;

        let hdr_size = u64::from(header.hdr_size);
        check_fits(ImageRegion::Header, 0, hdr_size, available)?;
        let body_end = check_fits(
            ImageRegion::Body,
            hdr_size,
            u64::from(header.img_size),
            available,
        )?;

        let protected = if header.protect_tlv_size == 0 {
            TlvArea {
                offset: body_end,
                len: 0,
            }
        } else {
            let area = read_area(
                source,
                ImageRegion::ProtectedTlvs,
                body_end,
                TLV_PROTECTED_INFO_MAGIC,
            )?;
            if area.len != header.protect_tlv_size {
                return Err(ImageError::ProtectedSizeMismatch {
                    header: header.protect_tlv_size,
                    tlv_tot: area.len,
                }
                .into());
            }
            area
        };
        let unprotected = read_area(
            source,
            ImageRegion::UnprotectedTlvs,
            protected.end(),
            TLV_INFO_MAGIC,
        )?;
        Ok(Self {
            header,
            protected,
            unprotected,
        })
    }

    /// Length of the hashed region: header, body and protected TLVs.
    pub fn hashed_len(&self) -> u32 {
        self.unprotected.offset
    }

    /// Length of the whole image, up to the end of the unprotected TLVs.
    pub fn total_len(&self) -> u32 {
        self.unprotected.end()
    }

    /// Offset of the body.
    pub fn body_offset(&self) -> u32 {
        u32::from(self.header.hdr_size)
    }
}

/// Checks that `len` bytes at `offset` fit in `available`; returns the end offset.
fn check_fits(
    region: ImageRegion,
    offset: u64,
    len: u64,
    available: u32,
) -> Result<u32, ImageError> {
    let end = offset.saturating_add(len);
    u32::try_from(end)
        .ok()
        .filter(|&end| end <= available)
        .ok_or(ImageError::Truncated {
            region,
            needed: end,
            available,
        })
}

/// Reads and checks the info header of the TLV area at `offset`.
fn read_area<S: ImageSource>(
    source: &mut S,
    region: ImageRegion,
    offset: u32,
    magic: u16,
) -> Result<TlvArea, SourceError<S::Error>> {
    let available = source.size();
    check_fits(
        region,
        u64::from(offset),
        u64::from(TLV_HEADER_LEN),
        available,
    )?;
    let mut info = [0u8; TLV_HEADER_LEN as usize];
    source.read(offset, &mut info).map_err(SourceError::Read)?;
    let [m0, m1, t0, t1] = info;
    let found = u16::from_le_bytes([m0, m1]);
    let tlv_tot = u16::from_le_bytes([t0, t1]);
    if found != magic {
        return Err(ImageError::BadTlvInfoMagic { region, found }.into());
    }
    if u32::from(tlv_tot) < TLV_HEADER_LEN {
        return Err(ImageError::BadTlvTotal { region, tlv_tot }.into());
    }
    check_fits(region, u64::from(offset), u64::from(tlv_tot), available)?;
    Ok(TlvArea {
        offset,
        len: tlv_tot,
    })
}

/// The TLVs verification needs, found by walking both areas once.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TlvSummary {
    /// Hardware version from the protected [`TLV_HARDWARE_VERSION`] TLV.
    pub hardware_version: Option<u32>,
    /// The SHA256 TLV.
    pub sha256: Option<TlvEntry>,
    /// The KEYHASH TLV.
    pub key_hash: Option<TlvEntry>,
    /// The PUBKEY TLV.
    pub public_key: Option<TlvEntry>,
    /// The ECDSASIG TLV.
    pub signature: Option<TlvEntry>,
}

impl TlvSummary {
    /// Walks both TLV areas: every TLV must fit its area; the protected area may hold
    /// anything (it is signed) but at most one hardware version TLV, of 4 bytes; the
    /// unprotected area may hold only SHA256, KEYHASH, PUBKEY and ECDSASIG, once each.
    pub fn scan<S: ImageSource>(
        source: &mut S,
        layout: &ImageLayout,
    ) -> Result<Self, SourceError<S::Error>> {
        let mut summary = Self::default();

        let area = layout.protected;
        let mut cursor = TlvCursor::new(ImageRegion::ProtectedTlvs, area.first_tlv(), area.end());
        while let Some(entry) = cursor.next_entry(source)? {
            if entry.kind == TLV_HARDWARE_VERSION {
                if summary.hardware_version.is_some() {
                    return Err(ImageError::DuplicateTlv { kind: entry.kind }.into());
                }
                let mut value = [0u8; 4];
                let value =
                    value
                        .get_mut(..usize::from(entry.len))
                        .ok_or(ImageError::BadTlvLength {
                            kind: entry.kind,
                            len: entry.len,
                        })?;
                source
                    .read(entry.value_offset, value)
                    .map_err(SourceError::Read)?;
                summary.hardware_version = Some(decode_hardware_version(value)?);
            }
        }

        let area = layout.unprotected;
        let mut cursor = TlvCursor::new(ImageRegion::UnprotectedTlvs, area.first_tlv(), area.end());
        while let Some(entry) = cursor.next_entry(source)? {
            let slot = match entry.kind {
                TLV_SHA256 => &mut summary.sha256,
                TLV_KEYHASH => &mut summary.key_hash,
                TLV_PUBKEY => &mut summary.public_key,
                TLV_ECDSA_SIG => &mut summary.signature,
                kind => return Err(ImageError::UnprotectedTlv { kind }.into()),
            };
            if slot.is_some() {
                return Err(ImageError::DuplicateTlv { kind: entry.kind }.into());
            }
            *slot = Some(entry);
        }
        Ok(summary)
    }
}

/// An image in memory whose structure has been checked (header, regions, TLVs), but
/// not its hash or signature: use [`Image::verify`] before trusting anything in it.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    bytes: &'a [u8],
    layout: ImageLayout,
    hardware_version: Option<u32>,
}

impl<'a> Image<'a> {
    /// Parses an image. `bytes` may extend past the image (slot padding); the extra
    /// bytes are ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        let mut source = bytes;
        let checked = ImageLayout::read(&mut source)
            .and_then(|layout| Ok((layout, TlvSummary::scan(&mut source, &layout)?)));
        let (layout, summary) = checked.map_err(flatten)?;
        let image = bytes
            .get(..layout.total_len() as usize)
            .ok_or(ImageError::Truncated {
                region: ImageRegion::UnprotectedTlvs,
                needed: u64::from(layout.total_len()),
                available: source.size(),
            })?;
        Ok(Self {
            bytes: image,
            layout,
            hardware_version: summary.hardware_version,
        })
    }

    /// The image header.
    pub fn header(&self) -> &ImageHeader {
        &self.layout.header
    }

    /// Where the regions lie.
    pub fn layout(&self) -> &ImageLayout {
        &self.layout
    }

    /// The whole image, header to the end of the unprotected TLVs.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The firmware body.
    pub fn body(&self) -> &'a [u8] {
        let start = self.layout.body_offset() as usize;
        let end = self.layout.protected.offset as usize;
        self.bytes.get(start..end).unwrap_or_default()
    }

    /// The hashed region: header, body and protected TLVs.
    pub fn hashed_region(&self) -> &'a [u8] {
        let end = self.layout.hashed_len() as usize;
        self.bytes.get(..end).unwrap_or_default()
    }

    /// The TLVs of the protected area (none if it is absent).
    pub fn protected_tlvs(&self) -> TlvIter<'a> {
        let area = self.layout.protected;
        TlvIter::new(
            self.bytes,
            ImageRegion::ProtectedTlvs,
            area.first_tlv(),
            area.end(),
        )
    }

    /// The TLVs of the unprotected area.
    pub fn unprotected_tlvs(&self) -> TlvIter<'a> {
        let area = self.layout.unprotected;
        TlvIter::new(
            self.bytes,
            ImageRegion::UnprotectedTlvs,
            area.first_tlv(),
            area.end(),
        )
    }

    /// The hardware version from the protected [`TLV_HARDWARE_VERSION`] TLV, if any
    /// (unverified until [`Image::verify`] succeeds).
    pub fn hardware_version(&self) -> Option<u32> {
        self.hardware_version
    }

    /// Verifies the image: see [`verify`](super::verify()).
    pub fn verify(
        &self,
        keys: &[TrustedKey],
        options: &VerifyOptions,
    ) -> Result<VerifiedImage, ImageError> {
        let mut source = self.bytes;
        verify_source(&mut source, keys, options).map_err(flatten)
    }
}

/// For a slice source, a read error is an image error too.
pub(crate) fn flatten(error: SourceError<ImageError>) -> ImageError {
    match error {
        SourceError::Image(error) | SourceError::Read(error) => error,
    }
}
