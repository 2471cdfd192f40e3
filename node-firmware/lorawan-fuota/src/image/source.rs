//! Reading an image in chunks, so a device can verify the image in its flash slot
//! without holding it in RAM.

use super::error::{ImageError, ImageRegion};

/// Something an image can be read from: a flash slot, a file, a byte slice.
///
/// Verification only reads inside `0..size()`, in small chunks, front to back for the
/// hash, with a few short reads of TLV headers and values.
pub trait ImageSource {
    /// The error a read can fail with.
    type Error;

    /// How many bytes can be read (for a flash slot: the slot size). The image and its
    /// TLVs must end within this; bytes after them (slot padding, trailer) are ignored.
    fn size(&self) -> u32;

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`.
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error>;
}

/// A byte slice is an image source. A read outside the slice (which verification never
/// does) fails with [`ImageError::Truncated`].
impl ImageSource for &[u8] {
    type Error = ImageError;

    fn size(&self) -> u32 {
        u32::try_from(self.len()).unwrap_or(u32::MAX)
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), ImageError> {
        let start = offset as usize;
        let bytes = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(ImageError::Truncated {
                region: ImageRegion::Header,
                needed: u64::from(offset) + buf.len() as u64,
                available: self.size(),
            })?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}
