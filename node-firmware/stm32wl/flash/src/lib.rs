//! The STM32WL55's internal flash as [`fuota_boot::BootFlash`], reads of its OTP area,
//! and the independent watchdog, on bare registers (no HAL): what the bootloader and the
//! application share.
//!
//! # ECC double errors
//!
//! Every flash double-word carries 8 ECC bits. Reading one whose programming or erase
//! was cut by a power loss can raise an ECC double error: the FLASH sets `ECCR.ECCD` and
//! raises a non-maskable interrupt. Each binary's NMI handler calls [`on_nmi`], which
//! clears `ECCD` and records the fault; [`Stm32wlFlash::read`] checks that record after
//! every read and returns [`FlashError::EccDoubleError`], which the boot logic treats as
//! unreadable data (an invalid image, a damaged state record), never as a reason to stop.
//!
//! # Programming
//!
//! RM0453 §3.3.7-3.3.8: unlock (KEYR), wait until no operation is under way (BSY,
//! CFGBSY), clear the error flags, set PG and write the double-word as two words (or set
//! PER/PNB/STRT for a page erase), wait, check the error flags.
#![no_std]

use core::sync::atomic::{AtomicBool, Ordering};

use fuota_boot::layout::{STM32WL_FLASH_BASE, STM32WL_FLASH_SIZE, STM32WL_PAGE_SIZE};
use fuota_boot::{BootFlash, Watchdog};
use stm32_metapac::iwdg::vals::{Key, Pr};
use stm32_metapac::{FLASH, IWDG};

/// Set by [`on_nmi`] when an ECC double error was caught.
static ECC_DOUBLE_ERROR: AtomicBool = AtomicBool::new(false);

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// Outside the flash, or not aligned to a double-word (program) or page (erase).
    Range {
        /// Offset of the access.
        offset: u32,
        /// Its length.
        len: u32,
    },
    /// A double-word read raised an ECC double error (torn by a power cut).
    EccDoubleError {
        /// Flash offset of the faulting double-word, as ECCR reported it.
        offset: u32,
    },
    /// The FLASH refused a program or erase: the SR error bits.
    Operation {
        /// FLASH_SR at the end of the operation.
        status: u32,
    },
}

/// The NMI's share of the flash driver: call it first thing in the NMI handler. Returns
/// true if the NMI was an ECC double error (cleared and recorded); anything else is a
/// fault the caller handles (a reset).
pub fn on_nmi() -> bool {
    let eccr = FLASH.eccr().read();
    if !eccr.eccd() {
        return false;
    }
    // ECCD is cleared by writing 1.
    FLASH.eccr().modify(|w| w.set_eccd(true));
    ECC_DOUBLE_ERROR.store(true, Ordering::SeqCst);
    true
}

/// SR bits that mean a program or erase failed.
const SR_ERRORS: u32 = (1 << 1) // OPERR
    | (1 << 3) // PROGERR
    | (1 << 4) // WRPERR
    | (1 << 5) // PGAERR
    | (1 << 6) // SIZERR
    | (1 << 7) // PGSERR
    | (1 << 8) // MISSERR
    | (1 << 9); // FASTERR

const KEY1: u32 = 0x4567_0123;
const KEY2: u32 = 0xCDEF_89AB;

/// The internal flash. One instance per binary.
#[derive(Debug)]
pub struct Stm32wlFlash {
    _private: (),
}

impl Stm32wlFlash {
    /// The flash driver. The caller makes sure only one exists.
    pub fn new() -> Self {
        Stm32wlFlash { _private: () }
    }

    fn wait_idle(&self) {
        while FLASH.sr().read().bsy() || FLASH.sr().read().cfgbsy() {}
    }

    fn unlock(&self) {
        if FLASH.cr().read().lock() {
            FLASH.keyr().write_value(KEY1);
            FLASH.keyr().write_value(KEY2);
        }
    }

    fn clear_errors(&self) {
        // Error flags and EOP are cleared by writing 1.
        FLASH
            .sr()
            .write_value(stm32_metapac::flash::regs::Sr(SR_ERRORS | 1));
    }

    fn finish(&self) -> Result<(), FlashError> {
        self.wait_idle();
        let status = FLASH.sr().read().0;
        FLASH.cr().modify(|w| {
            w.set_pg(false);
            w.set_per(false);
        });
        FLASH.cr().modify(|w| w.set_lock(true));
        if status & SR_ERRORS != 0 {
            self.clear_errors();
            return Err(FlashError::Operation { status });
        }
        Ok(())
    }

    fn check_range(offset: u32, len: u32, align: u32) -> Result<(), FlashError> {
        let end = offset.checked_add(len);
        match end {
            Some(end)
                if end <= STM32WL_FLASH_SIZE
                    && offset.is_multiple_of(align)
                    && len.is_multiple_of(align) =>
            {
                Ok(())
            }
            _ => Err(FlashError::Range { offset, len }),
        }
    }
}

impl Default for Stm32wlFlash {
    fn default() -> Self {
        Self::new()
    }
}

impl BootFlash for Stm32wlFlash {
    type Error = FlashError;

    fn page_size(&self) -> u32 {
        STM32WL_PAGE_SIZE
    }

    fn write_size(&self) -> u32 {
        8
    }

    fn capacity(&self) -> u32 {
        STM32WL_FLASH_SIZE
    }

    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> Result<(), FlashError> {
        let len = u32::try_from(buffer.len()).map_err(|_| FlashError::Range {
            offset,
            len: u32::MAX,
        })?;
        Self::check_range(offset, len, 1)?;
        read_mapped(STM32WL_FLASH_BASE + offset, buffer)
    }

    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        let len = u32::try_from(data.len()).map_err(|_| FlashError::Range {
            offset,
            len: u32::MAX,
        })?;
        Self::check_range(offset, len, 8)?;
        for (i, chunk) in data.chunks_exact(8).enumerate() {
            let address = STM32WL_FLASH_BASE + offset + 8 * i as u32;
            let low = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let high = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            self.wait_idle();
            self.unlock();
            self.clear_errors();
            FLASH.cr().modify(|w| w.set_pg(true));
            // SAFETY: an aligned double-word inside the flash, programmed as RM0453
            // §3.3.7 says: two word writes, low address first.
            unsafe {
                core::ptr::write_volatile(address as *mut u32, low);
                core::ptr::write_volatile((address + 4) as *mut u32, high);
            }
            self.finish()?;
        }
        Ok(())
    }

    fn erase_page(&mut self, offset: u32) -> Result<(), FlashError> {
        Self::check_range(offset, STM32WL_PAGE_SIZE, STM32WL_PAGE_SIZE)?;
        let page = (offset / STM32WL_PAGE_SIZE) as u8;
        self.wait_idle();
        self.unlock();
        self.clear_errors();
        FLASH.cr().modify(|w| {
            w.set_per(true);
            w.set_pnb(page);
        });
        FLASH.cr().modify(|w| w.set_strt(true));
        self.finish()
    }
}

/// Reads memory-mapped flash at `address` into `buffer`; an ECC double error on the way
/// (a cut write) is [`FlashError::EccDoubleError`].
fn read_mapped(address: u32, buffer: &mut [u8]) -> Result<(), FlashError> {
    ECC_DOUBLE_ERROR.store(false, Ordering::SeqCst);
    let base = address as *const u8;
    for (i, byte) in buffer.iter_mut().enumerate() {
        // SAFETY: the callers keep the access inside the memory-mapped flash or OTP.
        *byte = unsafe { core::ptr::read_volatile(base.add(i)) };
    }
    // The NMI of a faulting read is taken before the next instruction completes.
    cortex_m::asm::dsb();
    if ECC_DOUBLE_ERROR.swap(false, Ordering::SeqCst) {
        let address = FLASH.eccr().read().addr_ecc();
        return Err(FlashError::EccDoubleError {
            offset: address * 8,
        });
    }
    Ok(())
}

/// Start of the one-time-programmable area (RM0453 §3.3.1: 1 KB, double-words that can
/// be programmed once and never erased).
pub const OTP_BASE: u32 = 0x1FFF_7000;
/// Size of the OTP area.
pub const OTP_SIZE: u32 = 1024;

/// Reads the OTP area from `offset` into `buffer`, with the ECC check of flash reads (a
/// cut OTP write reads as [`FlashError::EccDoubleError`]).
pub fn read_otp(offset: u32, buffer: &mut [u8]) -> Result<(), FlashError> {
    let len = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
    match offset.checked_add(len) {
        Some(end) if end <= OTP_SIZE => read_mapped(OTP_BASE + offset, buffer),
        _ => Err(FlashError::Range { offset, len }),
    }
}

/// The independent watchdog (LSI, about 32 kHz): once started it cannot be stopped, and
/// it resets the chip unless refreshed within its period.
#[derive(Debug)]
pub struct IndependentWatchdog {
    /// Reload value at prescaler /256 (125 Hz): 4095 ≈ 32.8 s.
    reload: u16,
}

impl IndependentWatchdog {
    /// The longest period the IWDG offers (about 32 s): the application refreshes it
    /// from its main loop.
    pub const fn longest() -> Self {
        IndependentWatchdog { reload: 0x0FFF }
    }

    /// Refreshes the watchdog.
    pub fn refresh() {
        IWDG.kr().write(|w| w.set_key(Key::RESET));
    }
}

impl Watchdog for IndependentWatchdog {
    fn start(&mut self) {
        IWDG.kr().write(|w| w.set_key(Key::START));
        IWDG.kr().write(|w| w.set_key(Key::ENABLE));
        IWDG.pr().write(|w| w.set_pr(Pr::DIVIDE_BY256));
        IWDG.rlr().write(|w| w.set_rl(self.reload));
        while IWDG.sr().read().pvu() || IWDG.sr().read().rvu() {}
        Self::refresh();
    }
}
