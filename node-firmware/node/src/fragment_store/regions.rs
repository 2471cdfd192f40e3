//! The flash regions as the FEC decoder sees them.
//!
//! - `ResumableSlot` wraps the download slot so that programming bytes that are
//!   already there is a no-op: this is what lets a resumed session re-feed the decoder
//!   with the fragments already in the slot (the decoder writes them again) without a
//!   page ever being erased or a granule programmed twice. A granule that holds other
//!   data is a [`RegionError::Conflict`], and the write is refused before anything is
//!   programmed.
//! - `LogRegion` passes the log through, with the same error type (the decoder wants
//!   one error type for both regions).

use core::fmt;

use lorawan_fuota::fec::FlashRegion;

/// A flash failure seen through the decoder's regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionError<E> {
    /// The flash driver failed.
    Flash(E),
    /// The slot already holds different data where the decoder writes: the slot content
    /// does not belong to this session (or was corrupted).
    Conflict {
        /// Offset of the first conflicting granule in the slot.
        offset: usize,
    },
}

impl<E: fmt::Debug> fmt::Display for RegionError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::Flash(error) => write!(f, "flash error: {error:?}"),
            RegionError::Conflict { offset } => write!(
                f,
                "download slot holds other data at offset {offset}: refusing to program it"
            ),
        }
    }
}

/// The download slot, where re-programming identical bytes is a no-op.
#[derive(Debug)]
pub(crate) struct ResumableSlot<S> {
    inner: S,
}

/// Largest granule the decoder uses (the STM32WL double-word).
const MAX_GRANULE: usize = 8;

impl<S: FlashRegion> ResumableSlot<S> {
    pub fn new(inner: S) -> Self {
        ResumableSlot { inner }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    /// What must happen to the granule at `offset` so it holds `wanted`.
    fn classify(&mut self, offset: usize, wanted: &[u8]) -> Result<Granule, RegionError<S::Error>> {
        let mut existing = [0u8; MAX_GRANULE];
        let existing = existing
            .get_mut(..wanted.len())
            .ok_or(RegionError::Conflict { offset })?;
        self.inner
            .read(offset, existing)
            .map_err(RegionError::Flash)?;
        if existing == wanted {
            Ok(Granule::AlreadyThere)
        } else if existing.iter().all(|&b| b == 0xFF) {
            Ok(Granule::Erased)
        } else {
            Err(RegionError::Conflict { offset })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granule {
    AlreadyThere,
    Erased,
}

impl<S: FlashRegion> FlashRegion for ResumableSlot<S> {
    type Error = RegionError<S::Error>;

    fn write_granule(&self) -> usize {
        self.inner.write_granule()
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.read(offset, buffer).map_err(RegionError::Flash)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Self::Error> {
        let granule = self.inner.write_granule();
        if granule == 0
            || granule > MAX_GRANULE
            || !offset.is_multiple_of(granule)
            || !data.len().is_multiple_of(granule)
        {
            // Not a write the decoder makes: let the driver judge it.
            return self.inner.write(offset, data).map_err(RegionError::Flash);
        }
        // First pass: refuse before programming anything.
        for (index, chunk) in data.chunks(granule).enumerate() {
            self.classify(offset + index * granule, chunk)?;
        }
        // Second pass: program the erased runs.
        let mut run_start: Option<usize> = None;
        for (index, chunk) in data.chunks(granule).enumerate() {
            let at = index * granule;
            match self.classify(offset + at, chunk)? {
                Granule::Erased => {
                    run_start.get_or_insert(at);
                }
                Granule::AlreadyThere => {
                    if let Some(start) = run_start.take() {
                        self.program(offset, data, start, at)?;
                    }
                }
            }
        }
        if let Some(start) = run_start {
            self.program(offset, data, start, data.len())?;
        }
        Ok(())
    }
}

impl<S: FlashRegion> ResumableSlot<S> {
    fn program(
        &mut self,
        offset: usize,
        data: &[u8],
        start: usize,
        end: usize,
    ) -> Result<(), RegionError<S::Error>> {
        let bytes = data.get(start..end).ok_or(RegionError::Conflict {
            offset: offset + start,
        })?;
        self.inner
            .write(offset + start, bytes)
            .map_err(RegionError::Flash)
    }
}

/// The FEC log, with the slot's error type.
#[derive(Debug)]
pub(crate) struct LogRegion<L> {
    inner: L,
}

impl<L> LogRegion<L> {
    pub fn new(inner: L) -> Self {
        LogRegion { inner }
    }

    pub fn into_inner(self) -> L {
        self.inner
    }
}

impl<L: FlashRegion> FlashRegion for LogRegion<L> {
    type Error = RegionError<L::Error>;

    fn write_granule(&self) -> usize {
        self.inner.write_granule()
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.read(offset, buffer).map_err(RegionError::Flash)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Self::Error> {
        self.inner.write(offset, data).map_err(RegionError::Flash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lorawan_fuota::fec::SliceFlash;

    #[test]
    fn identical_bytes_are_skipped_erased_ones_programmed_others_refused() {
        let mut bytes = [0xFFu8; 32];
        let mut slot = ResumableSlot::new(SliceFlash::new(&mut bytes, 8));
        slot.write(0, &[1; 16]).unwrap();
        // Same bytes again, plus one erased granule: no double programming.
        let mut again = [1u8; 24];
        again[16..].fill(2);
        slot.write(0, &again).unwrap();
        // A different value over programmed bytes: refused, nothing written.
        let mut conflicting = [3u8; 16];
        conflicting[..8].fill(0xFF);
        assert_eq!(
            slot.write(24, &[4; 8]).and(slot.write(0, &conflicting)),
            Err(RegionError::Conflict { offset: 0 })
        );
        let flash = slot.into_inner();
        assert_eq!(&flash.as_bytes()[..16], &[1; 16]);
        assert_eq!(&flash.as_bytes()[16..24], &[2; 8]);
        assert_eq!(&flash.as_bytes()[24..], &[4; 8]);
    }
}
