//! Garbage is data, not a panic: boot state pages filled with random bytes, random
//! valid-looking snapshots and records, or torn double-words never make the bootloader
//! panic, program a double-word twice, or start anything but a verified image.

mod common;

use common::{signing_key, small_layout, trusted, Device, ImageSpec};
use fuota_boot::sim::{CutTiming, TornReads};
use fuota_boot::{read_boot_state, BootDecision, BootFlash};
use lorawan_fuota::image::{verify, VerifyOptions};
use proptest::prelude::*;

fn device() -> (Device, Vec<u8>, Vec<u8>) {
    let key = signing_key(1);
    let old = ImageSpec::new(1, 0, 700, 1).sign(&key);
    let new = ImageSpec::new(1, 1, 900, 2).sign(&key);
    let mut device = Device::new(small_layout(), &key, &old);
    device.download(&new);
    (device, old, new)
}

/// Boots, and if it jumps, checks that the primary slot verifies.
fn boot_and_check(device: &mut Device) {
    if let Ok(report) = device.boot() {
        if let BootDecision::Jump { image, .. } = report.decision {
            let start = device.layout.primary.start as usize;
            let primary = &device.flash.contents()[start..device.layout.primary.end() as usize];
            let verified = verify(primary, &[trusted(&signing_key(1))], &VerifyOptions::new())
                .expect("a jump goes to a verified image");
            assert_eq!(verified.digest(), &image.digest);
        }
    }
    assert!(
        device.flash.violations().is_empty(),
        "{:?}",
        device.flash.violations()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_boot_state_pages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 512)) {
        let (mut device, _, _) = device();
        let start = device.layout.boot_state.start;
        device.flash.load(start, &bytes);
        let _ = read_boot_state(&mut device.flash, &device.layout);
        boot_and_check(&mut device);
        boot_and_check(&mut device);
    }

    /// Real snapshots and records, with random bytes spliced in: the bootloader acts on
    /// whatever state they decode to, and still only programs erased double-words.
    #[test]
    fn spliced_boot_state_pages_never_corrupt_the_flash(
        cut in 0u64..300,
        timing in 0usize..3,
        splices in proptest::collection::vec((0usize..512, any::<u8>()), 0..6),
        garbage_reads in any::<bool>(),
    ) {
        let (mut device, _, _) = device();
        if garbage_reads {
            device.flash.set_torn_reads(TornReads::Garbage);
        }
        device.request_update();
        device.flash.cut_power_in(cut, CutTiming::ALL[timing]);
        let _ = device.boot();
        device.flash.power_cycle();
        let start = device.layout.boot_state.start as usize;
        let mut pages = device.flash.contents()[start..start + 512].to_vec();
        for (at, byte) in splices {
            pages[at] = byte;
        }
        // Splicing bypasses the flash's rules, like a cosmic ray would.
        device.flash.load(start as u32, &pages);
        boot_and_check(&mut device);
        boot_and_check(&mut device);
        prop_assert_eq!(device.flash.page_size(), device.layout.page_size);
    }
}
