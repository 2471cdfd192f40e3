//! The FUOTA bootloader for the STM32WL55 (CM4 core), linked at 0x0800_0000 in the
//! layout's 32 KB bootloader partition (memory.x is generated from
//! `fuota_boot::STM32WL55JC`).
//!
//! At every reset: `fuota_boot::boot` (finish or start a swap, trial, revert, verify the
//! image about to run with the built-in key), then start the independent watchdog and
//! jump: VTOR to the image's vector table, MSP and PC from it. A flash read that raises
//! an ECC double error (a double-word torn by a power cut) comes back through the NMI
//! handler as a read error, which the boot logic treats as invalid data. A failed
//! program or erase resets the chip: the next boot redoes the interrupted step.
//!
//! No clocks are configured (MSI 4 MHz after reset) and no interrupts are enabled: the
//! application sets up its own. Building with your own key: see `build.rs`.
#![no_std]
#![no_main]

use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception};
use fuota_boot::{boot, BootConfig, BootDecision, STM32WL55JC};
use fuota_stm32wl_flash::{on_nmi, IndependentWatchdog, Stm32wlFlash};
use lorawan_fuota::image::TrustedKey;

include!(concat!(env!("OUT_DIR"), "/boot_key.rs"));

#[entry]
fn main() -> ! {
    let Ok(key) = TrustedKey::from_sec1_bytes(&BOOT_KEY_SEC1) else {
        // build.rs checked the key's encoding; a point off the curve lands here.
        halt();
    };
    let keys = [key];
    let config = BootConfig::new(STM32WL55JC, &keys);
    let mut flash = Stm32wlFlash::new();
    let mut watchdog = IndependentWatchdog::longest();
    match boot(&mut flash, &config, &mut watchdog) {
        Ok(report) => match report.decision {
            // The watchdog is running.
            BootDecision::Jump { image, .. } => jump(image.vector_table),
            // No valid image and nothing to install or revert: wait for a debugger or
            // a new image programmed by the factory tool.
            BootDecision::Halt(_) => halt(),
        },
        Err(_) => SCB::sys_reset(),
    }
}

/// Hands the core to the image whose vector table is at `vector_table`.
fn jump(vector_table: u32) -> ! {
    // SAFETY: `boot` verified the image (signature over header, body and TLVs) and
    // `vector_table` is its vector table inside the primary slot; nothing of the
    // bootloader runs after this.
    unsafe {
        let scb = &*SCB::PTR;
        scb.vtor.write(vector_table);
        cortex_m::asm::dsb();
        cortex_m::asm::isb();
        cortex_m::asm::bootload(vector_table as *const u32)
    }
}

fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

/// ECC double errors become read errors (see fuota-stm32wl-flash); any other NMI resets.
#[exception]
unsafe fn NonMaskableInt() {
    if !on_nmi() {
        SCB::sys_reset();
    }
}

#[exception]
unsafe fn HardFault(_frame: &cortex_m_rt::ExceptionFrame) -> ! {
    SCB::sys_reset()
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    SCB::sys_reset()
}
