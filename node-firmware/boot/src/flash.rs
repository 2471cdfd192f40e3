//! The flash the bootloader works on: the [`BootFlash`] trait (read, program
//! double-words, erase pages), and [`FlashWindow`], a region of it seen as an image
//! source (for signature checks) and as a `lorawan_fuota::fec::FlashRegion` (for the FEC
//! decoder writing the download slot).
//!
//! # The rules a `BootFlash` follows (NOR flash, as on the STM32WL)
//!
//! - Erased bytes read 0xFF; erasing works on whole pages.
//! - Programming works on aligned units of [`BootFlash::write_size`] bytes (the 8-byte
//!   double-word); a unit can be programmed once after an erase (the STM32WL also
//!   accepts all zeros over anything, which nothing here relies on).
//! - A read can fail: on the STM32WL, reading a double-word whose programming or erase
//!   was cut by a power loss can raise an ECC double-error fault. Callers treat a failed
//!   read as unreadable data, never as a reason to stop: a torn page is data, not a
//!   panic.
//!
//! Offsets are bytes from the start of the flash (see `layout`).

use core::cell::RefCell;
use core::fmt;

use lorawan_fuota::fec::FlashRegion;
use lorawan_fuota::image::ImageSource;

use crate::layout::Region;

/// A NOR flash: readable anywhere, programmable once per write unit, erasable by page.
pub trait BootFlash {
    /// The error an operation fails with (an ECC fault on read, a programming error, a
    /// power loss in the simulator).
    type Error: fmt::Debug;

    /// Erase unit in bytes.
    fn page_size(&self) -> u32;

    /// Programming unit in bytes (8 on the STM32WL).
    fn write_size(&self) -> u32;

    /// Size of the flash in bytes.
    fn capacity(&self) -> u32;

    /// Reads `buffer.len()` bytes at `offset`.
    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> Result<(), Self::Error>;

    /// Programs `data` at `offset`: both multiples of the write size, every target unit
    /// erased.
    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error>;

    /// Erases the page starting at `offset` (a multiple of the page size).
    fn erase_page(&mut self, offset: u32) -> Result<(), Self::Error>;
}

impl<F: BootFlash + ?Sized> BootFlash for &mut F {
    type Error = F::Error;

    fn page_size(&self) -> u32 {
        (**self).page_size()
    }

    fn write_size(&self) -> u32 {
        (**self).write_size()
    }

    fn capacity(&self) -> u32 {
        (**self).capacity()
    }

    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read(offset, buffer)
    }

    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        (**self).program(offset, data)
    }

    fn erase_page(&mut self, offset: u32) -> Result<(), Self::Error> {
        (**self).erase_page(offset)
    }
}

/// A shared flash: several [`FlashWindow`]s (the download slot and the FEC log, say)
/// can each hold a `&RefCell<F>` to one chip. Each call borrows the cell for its own
/// duration only.
impl<F: BootFlash> BootFlash for &RefCell<F> {
    type Error = F::Error;

    fn page_size(&self) -> u32 {
        self.borrow().page_size()
    }

    fn write_size(&self) -> u32 {
        self.borrow().write_size()
    }

    fn capacity(&self) -> u32 {
        self.borrow().capacity()
    }

    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> Result<(), Self::Error> {
        self.borrow_mut().read(offset, buffer)
    }

    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        self.borrow_mut().program(offset, data)
    }

    fn erase_page(&mut self, offset: u32) -> Result<(), Self::Error> {
        self.borrow_mut().erase_page(offset)
    }
}

/// Why a [`FlashWindow`] access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowError<E> {
    /// The access does not fit inside the window.
    OutOfRange {
        /// Offset in the window.
        offset: u32,
        /// Length of the access.
        len: u32,
    },
    /// The flash failed.
    Flash(E),
}

impl<E: fmt::Debug> fmt::Display for WindowError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowError::OutOfRange { offset, len } => {
                write!(
                    f,
                    "access of {len} bytes at {offset} leaves the flash window"
                )
            }
            WindowError::Flash(error) => write!(f, "flash error: {error:?}"),
        }
    }
}

/// One region of a [`BootFlash`], addressed from 0: the primary slot, the download
/// image area, the FEC log.
///
/// It is an [`ImageSource`] (the signature check reads the image through it in chunks)
/// and a `lorawan_fuota::fec::FlashRegion` (the FEC decoder programs the download image
/// area and the log through it). Hold two windows on one chip with `&RefCell<F>`.
#[derive(Debug)]
pub struct FlashWindow<F> {
    flash: F,
    region: Region,
}

impl<F: BootFlash> FlashWindow<F> {
    /// The window onto `region` of `flash`.
    pub fn new(flash: F, region: Region) -> Self {
        Self { flash, region }
    }

    /// The region, as offsets in the whole flash.
    pub fn region(&self) -> Region {
        self.region
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    /// Offset in the flash of `len` bytes at `offset` in the window, if they fit.
    fn absolute(&self, offset: u32, len: usize) -> Result<u32, WindowError<F::Error>> {
        let len = u32::try_from(len).map_err(|_| WindowError::OutOfRange {
            offset,
            len: u32::MAX,
        })?;
        let start = self.region.start.checked_add(offset);
        match start {
            Some(start) if self.region.contains_range(start, len) => Ok(start),
            _ => Err(WindowError::OutOfRange { offset, len }),
        }
    }

    /// Reads `buffer.len()` bytes at `offset` in the window.
    pub fn read_at(&mut self, offset: u32, buffer: &mut [u8]) -> Result<(), WindowError<F::Error>> {
        let at = self.absolute(offset, buffer.len())?;
        self.flash.read(at, buffer).map_err(WindowError::Flash)
    }

    /// Programs `data` at `offset` in the window.
    pub fn program_at(&mut self, offset: u32, data: &[u8]) -> Result<(), WindowError<F::Error>> {
        let at = self.absolute(offset, data.len())?;
        self.flash.program(at, data).map_err(WindowError::Flash)
    }

    /// Erases the pages covering bytes `0..len` of the window (whole pages; `len` past
    /// the window's end means all of it; 0 erases nothing).
    pub fn erase_prefix(&mut self, len: u32) -> Result<(), WindowError<F::Error>> {
        let page = self.flash.page_size().max(1);
        let len = len.min(self.region.len);
        let mut offset = 0;
        while offset < len {
            let at = self.region.start.saturating_add(offset);
            self.flash.erase_page(at).map_err(WindowError::Flash)?;
            offset = offset.saturating_add(page);
        }
        Ok(())
    }
}

impl<F: BootFlash> ImageSource for FlashWindow<F> {
    type Error = WindowError<F::Error>;

    fn size(&self) -> u32 {
        self.region.len
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.read_at(offset, buf)
    }
}

impl<F: BootFlash> FlashRegion for FlashWindow<F> {
    type Error = WindowError<F::Error>;

    fn write_granule(&self) -> usize {
        self.flash.write_size() as usize
    }

    fn capacity(&self) -> usize {
        self.region.len as usize
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), Self::Error> {
        let offset = u32::try_from(offset).map_err(|_| WindowError::OutOfRange {
            offset: u32::MAX,
            len: 0,
        })?;
        self.read_at(offset, buffer)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Self::Error> {
        let offset = u32::try_from(offset).map_err(|_| WindowError::OutOfRange {
            offset: u32::MAX,
            len: 0,
        })?;
        self.program_at(offset, data)
    }
}
