//! Flash regions the FEC decoder writes through.
//!
//! The decoder's output slot and its log area are NOR-flash-like regions: erased bytes
//! read 0xFF, programming happens in aligned granules (8-byte double-words on the
//! STM32WL) that cannot be programmed twice without an erase. The decoder only ever
//! programs erased granules, each once, and never erases: erasing belongs to whoever
//! prepares the slot before a session starts.

use core::fmt;

/// A region of NOR-like flash: readable anywhere, programmable once per granule.
pub trait FlashRegion {
    /// The error the underlying driver reports.
    type Error: fmt::Debug;

    /// Programming granule in bytes: a power of two from 1 to 8 (8 on the STM32WL).
    fn write_granule(&self) -> usize;

    /// Size of the region in bytes.
    fn capacity(&self) -> usize;

    /// Reads `buffer.len()` bytes at `offset`.
    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), Self::Error>;

    /// Programs `data` at `offset`; both are multiples of the write granule and every
    /// target granule is erased and programmed only this once.
    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Self::Error>;
}

/// Why a [`SliceFlash`] refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceFlashError {
    /// The access goes past the end of the region.
    OutOfBounds {
        /// Offset of the access.
        offset: usize,
        /// Its length.
        length: usize,
    },
    /// Offset or length is not a multiple of the write granule.
    Misaligned {
        /// Offset of the write.
        offset: usize,
        /// Its length.
        length: usize,
    },
    /// The target was not erased (a second program of the same granule).
    NotErased {
        /// Offset of the first non-erased byte.
        offset: usize,
    },
}

/// A flash region backed by a byte slice, with the real programming rules: aligned
/// granules, erased (0xFF) targets only. Hosts use it for the agent's simulator and for
/// benchmarks; tests use a stricter checker that also catches re-programming 0xFF.
#[derive(Debug)]
pub struct SliceFlash<'a> {
    bytes: &'a mut [u8],
    granule: usize,
}

impl<'a> SliceFlash<'a> {
    /// A region over `bytes` with the given write granule (a power of two, 1..=8; other
    /// values are rounded to the nearest such, so misuse cannot panic).
    pub fn new(bytes: &'a mut [u8], granule: usize) -> Self {
        let granule = granule.clamp(1, 8).next_power_of_two();
        SliceFlash { bytes, granule }
    }

    /// Erases the whole region (every byte 0xFF).
    pub fn erase_all(&mut self) {
        self.bytes.fill(0xFF);
    }

    /// The region's content.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes
    }
}

impl FlashRegion for SliceFlash<'_> {
    type Error = SliceFlashError;

    fn write_granule(&self) -> usize {
        self.granule
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), Self::Error> {
        let source = offset
            .checked_add(buffer.len())
            .and_then(|end| self.bytes.get(offset..end))
            .ok_or(SliceFlashError::OutOfBounds {
                offset,
                length: buffer.len(),
            })?;
        buffer.copy_from_slice(source);
        Ok(())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Self::Error> {
        if !offset.is_multiple_of(self.granule) || !data.len().is_multiple_of(self.granule) {
            return Err(SliceFlashError::Misaligned {
                offset,
                length: data.len(),
            });
        }
        let target = offset
            .checked_add(data.len())
            .and_then(|end| self.bytes.get_mut(offset..end))
            .ok_or(SliceFlashError::OutOfBounds {
                offset,
                length: data.len(),
            })?;
        if let Some(position) = target.iter().position(|&b| b != 0xFF) {
            return Err(SliceFlashError::NotErased {
                offset: offset + position,
            });
        }
        target.copy_from_slice(data);
        Ok(())
    }
}
