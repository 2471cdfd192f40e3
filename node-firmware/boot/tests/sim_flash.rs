//! The simulated flash keeps the STM32WL's rules and injects the faults it promises:
//! erased 0xFF, page erase, aligned double-words programmed once (all zeros excepted),
//! power cuts before, after and during an operation, torn double-words that fault on
//! read (or read as garbage), counters; and `FlashWindow` keeps accesses in its region.

use std::cell::RefCell;

use fuota_boot::sim::{CutTiming, PowerCut, SimFlash, SimFlashError, TornReads};
use fuota_boot::{BootFlash, FlashWindow, Region, WindowError};
use lorawan_fuota::fec::FlashRegion;
use lorawan_fuota::image::ImageSource;

fn flash() -> SimFlash {
    SimFlash::new(8 * 256, 256)
}

fn read(flash: &mut SimFlash, offset: u32, len: usize) -> Result<Vec<u8>, SimFlashError> {
    let mut buffer = vec![0u8; len];
    BootFlash::read(flash, offset, &mut buffer).map(|()| buffer)
}

#[test]
fn erased_flash_reads_ff_and_programs_once() {
    let mut flash = flash();
    assert_eq!(read(&mut flash, 0, 16).unwrap(), vec![0xFF; 16]);
    flash.program(8, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    assert_eq!(
        read(&mut flash, 4, 12).unwrap(),
        [0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(
        flash.program(8, &[1, 2, 3, 4, 5, 6, 7, 8]),
        Err(SimFlashError::NotErased { offset: 8 })
    );
    // Programming 0xFF still uses the double-word up.
    flash.program(16, &[0xFF; 8]).unwrap();
    assert_eq!(
        flash.program(16, &[1; 8]),
        Err(SimFlashError::NotErased { offset: 16 })
    );
    // All zeros may go over anything.
    flash.program(8, &[0; 8]).unwrap();
    assert_eq!(read(&mut flash, 8, 8).unwrap(), vec![0; 8]);
    assert_eq!(flash.violations().len(), 2);
    flash.erase_page(0).unwrap();
    assert_eq!(read(&mut flash, 0, 256).unwrap(), vec![0xFF; 256]);
    flash.program(8, &[9; 8]).unwrap();
}

#[test]
fn misaligned_and_out_of_bounds_accesses_are_refused() {
    let mut flash = flash();
    assert!(matches!(
        flash.program(4, &[0; 8]),
        Err(SimFlashError::Misaligned { .. })
    ));
    assert!(matches!(
        flash.program(8, &[0; 12]),
        Err(SimFlashError::Misaligned { .. })
    ));
    assert!(matches!(
        flash.erase_page(128),
        Err(SimFlashError::Misaligned { .. })
    ));
    assert!(matches!(
        flash.program(2048, &[0; 8]),
        Err(SimFlashError::OutOfBounds { .. })
    ));
    assert!(matches!(
        read(&mut flash, 2040, 16),
        Err(SimFlashError::OutOfBounds { .. })
    ));
    assert_eq!(flash.violations().len(), 5);
    assert_eq!(flash.operations(), 0, "refused accesses are not operations");
}

#[test]
fn operations_are_counted_per_double_word_and_per_page() {
    let mut flash = flash();
    flash.program(0, &[0; 32]).unwrap();
    flash.erase_page(256).unwrap();
    read(&mut flash, 0, 100).unwrap();
    assert_eq!(flash.operations(), 5);
    let counters = flash.counters();
    assert_eq!(counters.double_words_programmed, 4);
    assert_eq!(counters.bytes_programmed(), 32);
    assert_eq!(counters.program_calls, 1);
    assert_eq!(counters.pages_erased, 1);
    assert_eq!(counters.reads, 1);
    assert_eq!(counters.bytes_read, 100);
    assert_eq!(flash.page_erase_counts()[1], 1);
}

#[test]
fn a_cut_before_an_operation_skips_it_and_everything_after() {
    let mut flash = flash();
    flash.program(0, &[1; 8]).unwrap();
    flash.schedule_power_cut(PowerCut {
        operation: 2,
        timing: CutTiming::Before,
    });
    // Operations 1 and 2: the second double-word of this program is cut.
    assert_eq!(flash.program(8, &[2; 16]), Err(SimFlashError::PowerLost));
    assert!(!flash.is_powered());
    assert_eq!(read(&mut flash, 0, 8), Err(SimFlashError::PowerLost));
    assert_eq!(flash.erase_page(0), Err(SimFlashError::PowerLost));
    flash.power_cycle();
    assert_eq!(
        read(&mut flash, 8, 16).unwrap(),
        [[2; 8], [0xFF; 8]].concat()
    );
    flash.program(16, &[3; 8]).unwrap();
}

#[test]
fn a_cut_after_an_operation_keeps_it() {
    let mut flash = flash();
    flash.cut_power_in(0, CutTiming::After);
    assert_eq!(flash.program(0, &[7; 8]), Err(SimFlashError::PowerLost));
    flash.power_cycle();
    assert_eq!(read(&mut flash, 0, 8).unwrap(), vec![7; 8]);

    flash.cut_power_in(0, CutTiming::After);
    assert_eq!(flash.erase_page(0), Err(SimFlashError::PowerLost));
    flash.power_cycle();
    assert_eq!(read(&mut flash, 0, 8).unwrap(), vec![0xFF; 8]);
}

#[test]
fn a_torn_program_faults_on_read_until_erased() {
    let mut flash = flash();
    flash.cut_power_in(0, CutTiming::Torn);
    assert_eq!(flash.program(8, &[0x12; 8]), Err(SimFlashError::PowerLost));
    flash.power_cycle();
    assert_eq!(flash.torn_double_words(0, 256), 1);
    assert_eq!(
        read(&mut flash, 0, 32),
        Err(SimFlashError::EccDoubleError { offset: 8 })
    );
    assert_eq!(read(&mut flash, 0, 8).unwrap(), vec![0xFF; 8]);
    assert_eq!(read(&mut flash, 16, 8).unwrap(), vec![0xFF; 8]);
    assert_eq!(
        flash.program(8, &[0x12; 8]),
        Err(SimFlashError::NotErased { offset: 8 })
    );
    assert_eq!(flash.counters().torn_reads, 1);

    // With garbage reads, the undefined bits come back: some programmed, never all.
    flash.set_torn_reads(TornReads::Garbage);
    let garbage = read(&mut flash, 8, 8).unwrap();
    assert_ne!(garbage, vec![0xFF; 8]);
    assert!(garbage.iter().all(|&b| b & 0x12 == 0x12), "only 1→0 bits");

    // Zeros repair it; an erase too.
    flash.set_torn_reads(TornReads::EccFault);
    flash.program(8, &[0; 8]).unwrap();
    assert_eq!(read(&mut flash, 8, 8).unwrap(), vec![0; 8]);
    flash.erase_page(0).unwrap();
    assert_eq!(flash.torn_double_words(0, 256), 0);
}

#[test]
fn a_torn_erase_leaves_an_undefined_page() {
    for seed in 0..20 {
        let mut flash = flash().with_seed(seed);
        flash.program(256, &[0x33; 256]).unwrap();
        flash.cut_power_in(0, CutTiming::Torn);
        assert_eq!(flash.erase_page(256), Err(SimFlashError::PowerLost));
        flash.power_cycle();
        assert!(flash.torn_double_words(256, 256) > 0);
        assert!(read(&mut flash, 256, 256).is_err());
        // Neighbouring pages are untouched.
        assert_eq!(read(&mut flash, 0, 256).unwrap(), vec![0xFF; 256]);
        flash.erase_page(256).unwrap();
        assert_eq!(read(&mut flash, 256, 256).unwrap(), vec![0xFF; 256]);
    }
}

#[test]
fn windows_stay_inside_their_region_and_serve_the_fec_decoder_and_verification() {
    let chip = RefCell::new(flash());
    let mut slot = FlashWindow::new(&chip, Region::new(256, 512));
    let mut log = FlashWindow::new(&chip, Region::new(1024, 256));
    assert_eq!(FlashRegion::capacity(&slot), 512);
    assert_eq!(slot.write_granule(), 8);
    FlashRegion::write(&mut slot, 0, &[1; 16]).unwrap();
    FlashRegion::write(&mut log, 248, &[2; 8]).unwrap();
    assert!(matches!(
        FlashRegion::write(&mut log, 256, &[2; 8]),
        Err(WindowError::OutOfRange { .. })
    ));
    let mut buffer = [0u8; 16];
    ImageSource::read(&mut slot, 0, &mut buffer).unwrap();
    assert_eq!(buffer, [1; 16]);
    assert_eq!(ImageSource::size(&slot), 512);
    assert!(ImageSource::read(&mut slot, 500, &mut buffer).is_err());
    assert_eq!(chip.borrow().contents()[256], 1);
    assert_eq!(chip.borrow().contents()[1024 + 248], 2);
    slot.erase_prefix(300).unwrap();
    assert_eq!(chip.borrow().counters().pages_erased, 2);
    assert_eq!(chip.borrow().contents()[256], 0xFF);
    assert!(chip.borrow().violations().is_empty());

    // The chip itself is a FEC region too.
    let mut whole = chip.into_inner();
    FlashRegion::write(&mut whole, 1536, &[5; 8]).unwrap();
    assert_eq!(FlashRegion::capacity(&whole), 2048);
}
