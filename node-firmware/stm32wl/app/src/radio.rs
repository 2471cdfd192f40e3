//! Glue between lora-phy's SX126x driver and the STM32WL's on-chip sub-GHz radio.
//!
//! The STM32WL's radio is an SX126x die wired to internal signals instead of pins:
//!
//! | SX126x signal | STM32WL                                                            |
//! |---------------|--------------------------------------------------------------------|
//! | NRESET        | `RCC_CSR.RFRST` (reset while set; `RFRSTF` set until out of reset) |
//! | BUSY          | `PWR_SR2.RFBUSYS`                                                  |
//! | NSS           | `PWR_SUBGHZSPICR.NSS` (the SPI is the internal `SUBGHZSPI`)        |
//! | DIO1..3 IRQ   | the `SUBGHZ_RADIO` interrupt (EXTI line 44)                        |
//!
//! [`Stm32wlInterfaceVariant`] implements lora-phy's `InterfaceVariant` over those registers
//! and a board-specific [`RfSwitch`]; [`SubghzSpiDevice`] is the `SpiDevice` that frames each
//! SPI transaction with NSS. Bind [`SubghzRadioIrqHandler`] to `SUBGHZ_RADIO`.
use core::sync::atomic::{AtomicBool, Ordering};

use embassy_futures::yield_now;
use embassy_stm32::interrupt::{self, InterruptExt};
use embassy_stm32::mode::Async;
use embassy_stm32::pac;
use embassy_stm32::spi::{self, mode::Master, Spi};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Instant, Timer};
use embedded_hal_async::spi::{ErrorType, Operation, SpiDevice};
use lora_phy::mod_params::RadioError;
use lora_phy::mod_traits::InterfaceVariant;
use lora_phy::DelayNs;

/// Longest the radio may stay busy (TCXO start-up plus calibration take a few ms).
const BUSY_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest the radio may take to leave reset.
const RESET_TIMEOUT: Duration = Duration::from_millis(10);
/// BUSY rises up to 600 ns after NSS goes high (SX126x T_SW): wait this many CPU cycles
/// (>= 1.3 µs at the STM32WL's 48 MHz maximum) before trusting a "not busy" reading.
const BUSY_SETTLE_CYCLES: u32 = 64;
/// NSS must stay low for at least 20 µs to wake the radio from Sleep (RM0453).
const WAKE_NSS_LOW_TIME: Duration = Duration::from_micros(20);
/// SX126x `SetSleep` opcode: after it, the next transaction must wake the radio.
const OPCODE_SET_SLEEP: u8 = 0x84;

/// Set by the interrupt handler, awaited by [`Stm32wlInterfaceVariant::await_irq`].
static RADIO_IRQ: Signal<CriticalSectionRawMutex, ()> = Signal::new();
/// The radio is asleep after reset and after `SetSleep` until a transaction wakes it.
static RADIO_MAY_BE_ASLEEP: AtomicBool = AtomicBool::new(true);

/// `SUBGHZ_RADIO` interrupt handler: masks the line and wakes [`Stm32wlInterfaceVariant`].
pub struct SubghzRadioIrqHandler;

impl interrupt::typelevel::Handler<interrupt::typelevel::SUBGHZ_RADIO> for SubghzRadioIrqHandler {
    unsafe fn on_interrupt() {
        // The line stays asserted until lora-phy clears the IRQ status over SPI, which cannot
        // happen here: mask it until the next `await_irq`.
        interrupt::SUBGHZ_RADIO.disable();
        RADIO_IRQ.signal(());
    }
}

/// Which way the board's RF front end is switched.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RfPath {
    Off,
    Receive,
    Transmit,
}

/// The board's RF front-end switch (see `board.rs`).
pub trait RfSwitch {
    fn select(&mut self, path: RfPath);
}

/// lora-phy `InterfaceVariant` for the STM32WL's on-chip radio.
pub struct Stm32wlInterfaceVariant<S: RfSwitch> {
    rf_switch: S,
}

impl<S: RfSwitch> Stm32wlInterfaceVariant<S> {
    pub fn new(
        _irq: impl interrupt::typelevel::Binding<
            interrupt::typelevel::SUBGHZ_RADIO,
            SubghzRadioIrqHandler,
        >,
        mut rf_switch: S,
    ) -> Self {
        interrupt::SUBGHZ_RADIO.disable();
        // Unmask EXTI line 44 (radio IRQ) for CPU1 so the radio can wake this core from Stop,
        // as ST's HAL_SUBGHZ_Init does. Line 44 is bit 12 of the second mask register.
        pac::EXTI
            .cpu(0)
            .imr(1)
            .modify(|w| w.set_line(44 - 32, true));
        set_nss(false);
        rf_switch.select(RfPath::Off);
        Self { rf_switch }
    }
}

impl<S: RfSwitch> InterfaceVariant for Stm32wlInterfaceVariant<S> {
    async fn reset(&mut self, delay: &mut impl DelayNs) -> Result<(), RadioError> {
        pac::RCC.csr().modify(|w| w.set_rfrst(true));
        delay.delay_us(100).await;
        pac::RCC.csr().modify(|w| w.set_rfrst(false));
        let deadline = Instant::now() + RESET_TIMEOUT;
        while pac::RCC.csr().read().rfrstf() {
            if Instant::now() >= deadline {
                return Err(RadioError::Reset);
            }
            delay.delay_us(100).await;
        }
        RADIO_MAY_BE_ASLEEP.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn wait_on_busy(&mut self) -> Result<(), RadioError> {
        cortex_m::asm::delay(BUSY_SETTLE_CYCLES);
        let deadline = Instant::now() + BUSY_TIMEOUT;
        while pac::PWR.sr2().read().rfbusys() {
            if Instant::now() >= deadline {
                return Err(RadioError::Busy);
            }
            yield_now().await;
        }
        Ok(())
    }

    async fn await_irq(&mut self) -> Result<(), RadioError> {
        // Forget a signal left by an earlier, abandoned wait; a still-asserted line fires
        // again as soon as it is unmasked. A spurious wake-up is harmless: lora-phy reads
        // the IRQ status, finds nothing and waits again.
        RADIO_IRQ.reset();
        // SAFETY: the handler only masks its own line and signals a critical-section
        // `Signal`; no critical section relies on this interrupt staying masked.
        unsafe { interrupt::SUBGHZ_RADIO.enable() };
        RADIO_IRQ.wait().await;
        Ok(())
    }

    async fn enable_rf_switch_rx(&mut self) -> Result<(), RadioError> {
        self.rf_switch.select(RfPath::Receive);
        Ok(())
    }

    async fn enable_rf_switch_tx(&mut self) -> Result<(), RadioError> {
        self.rf_switch.select(RfPath::Transmit);
        Ok(())
    }

    async fn disable_rf_switch(&mut self) -> Result<(), RadioError> {
        self.rf_switch.select(RfPath::Off);
        Ok(())
    }
}

/// `SpiDevice` for the radio: the `SUBGHZSPI` bus framed by the `PWR_SUBGHZSPICR.NSS` bit.
pub struct SubghzSpiDevice<'d> {
    bus: Spi<'d, Async, Master>,
}

impl<'d> SubghzSpiDevice<'d> {
    /// Takes the bus made by `Spi::new_subghz`.
    pub fn new(bus: Spi<'d, Async, Master>) -> Self {
        set_nss(false);
        Self { bus }
    }

    /// Runs the operations with the bus's blocking transfers: at the bus's 16 MHz the
    /// longest (a 256-byte frame) takes 130 µs, shorter than setting up DMA is worth,
    /// and the DMA transfer code would cost 1.3 KB of the application's slot.
    async fn run(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), spi::Error> {
        for operation in operations {
            match operation {
                Operation::Read(words) => self.bus.blocking_read(words)?,
                Operation::Write(words) => self.bus.blocking_write(words)?,
                Operation::Transfer(read, write) => self.bus.blocking_transfer(read, write)?,
                Operation::TransferInPlace(words) => self.bus.blocking_transfer_in_place(words)?,
                Operation::DelayNs(ns) => {
                    Timer::after_micros(u64::from(ns.div_ceil(1000))).await;
                }
            }
        }
        Ok(())
    }
}

impl ErrorType for SubghzSpiDevice<'_> {
    type Error = spi::Error;
}

impl SpiDevice for SubghzSpiDevice<'_> {
    async fn transaction(
        &mut self,
        operations: &mut [Operation<'_, u8>],
    ) -> Result<(), spi::Error> {
        let puts_radio_to_sleep = matches!(
            operations.first(),
            Some(Operation::Write([OPCODE_SET_SLEEP, ..]))
        );
        let chip_select = ChipSelect::assert();
        if RADIO_MAY_BE_ASLEEP.load(Ordering::Relaxed) {
            // One tick more: a timer started mid-tick may expire up to a tick early.
            Timer::after_ticks(WAKE_NSS_LOW_TIME.as_ticks() + 1).await;
            RADIO_MAY_BE_ASLEEP.store(false, Ordering::Relaxed);
        }
        let result = self.run(operations).await;
        drop(chip_select);
        if puts_radio_to_sleep && result.is_ok() {
            RADIO_MAY_BE_ASLEEP.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// NSS held low while alive. Released on drop, so that a transaction abandoned mid-way (its
/// future dropped by a `select`) does not leave the radio selected.
struct ChipSelect;

impl ChipSelect {
    fn assert() -> Self {
        set_nss(true);
        Self
    }
}

impl Drop for ChipSelect {
    fn drop(&mut self) {
        set_nss(false);
    }
}

/// Drives the radio's chip select: `selected` pulls NSS low.
fn set_nss(selected: bool) {
    pac::PWR.subghzspicr().modify(|w| w.set_nss(!selected));
}
