//! Power cuts at sampled operations of a ~95 KB update and of its revert on the real
//! STM32WL55JC layout (2 KB pages, 47-page slots), each followed by a reboot that must
//! end on a valid signed image (the new one once the install is durably under way),
//! plus the largest image the layout allows.

mod common;

use common::{is_trial, jumped_version, signing_key, Device, ImageSpec};
use fuota_boot::sim::CutTiming;
use fuota_boot::{BootDecision, Phase, STM32WL55JC};
use lorawan_fuota::image::ImageVersion;

/// 1.0 of about 90 KB running, 2.0 of about 95 KB downloaded and requested.
fn pending() -> (Device, Vec<u8>, Vec<u8>) {
    let key = signing_key(1);
    let old = ImageSpec::new(1, 0, 90_000, 1)
        .with_header_size(0x200)
        .sign(&key);
    let new = ImageSpec::new(2, 0, 95_000, 2)
        .with_header_size(0x200)
        .sign(&key);
    let mut device = Device::new(STM32WL55JC, &key, &old);
    device.download(&new);
    device.request_update();
    (device, old, new)
}

fn version(major: u8) -> ImageVersion {
    ImageVersion::new(major, 0, 0, u32::from(major))
}

/// Sampled operation indices: the first and last few, every page boundary region
/// sampled by stride, and pseudo-random ones.
fn samples(operations: u64, count: u64) -> Vec<u64> {
    let mut points: Vec<u64> = (0..4).chain(operations - 4..operations).collect();
    let mut x = operations;
    for i in 0..count {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        points.push((i * operations / count + (x >> 40) % 97).min(operations - 1));
    }
    points.sort_unstable();
    points.dedup();
    points
}

/// Cut points sampled per run (each with a timing, a quarter with a second cut during
/// the recovery).
const SAMPLED_CUTS: u64 = 250;

fn run_sampled(mut origin: Device, old: &[u8], new: &[u8], reverting: bool) {
    let mut probe = origin.clone();
    let before = probe.flash.operations();
    probe.boot_to_jump();
    let operations = probe.flash.operations() - before;
    origin.flash.reset_counters();
    for (i, op) in samples(operations, SAMPLED_CUTS).into_iter().enumerate() {
        let timing = CutTiming::ALL[i % 3];
        let mut device = origin.clone();
        device.flash.cut_power_in(op, timing);
        assert!(device.boot().is_err());
        device.flash.power_cycle();
        // A second cut during the recovery, at a point derived from the first.
        if i % 4 == 1 {
            let mut probe = device.clone();
            let start = probe.flash.operations();
            probe.boot_to_jump();
            let recovery_ops = probe.flash.operations() - start;
            if recovery_ops > 0 {
                device
                    .flash
                    .cut_power_in((op * 7919) % recovery_ops, CutTiming::Torn);
                assert!(device.boot().is_err());
                device.flash.power_cycle();
            }
        }
        let started_trial = matches!(device.state().phase, Phase::Trial(t) if t.boots > 0);
        let report = device.boot_to_jump();
        let BootDecision::Jump { trial, .. } = report.decision else {
            unreachable!()
        };
        let expect_new = !reverting && !started_trial;
        if expect_new {
            assert_eq!(
                jumped_version(&report),
                version(2),
                "cut {timing:?} at {op}"
            );
            assert!(trial);
            assert!(device.primary_holds(new));
            // The old image is intact for a revert.
            let mut unconfirmed = device.clone();
            assert_eq!(jumped_version(&unconfirmed.boot_to_jump()), version(1));
            assert!(unconfirmed.primary_holds(old));
        } else {
            assert_eq!(
                jumped_version(&report),
                version(1),
                "cut {timing:?} at {op}"
            );
            assert!(!trial);
            assert!(device.primary_holds(old));
        }
        assert!(device.flash.violations().is_empty());
    }
    println!(
        "{}: {operations} operations, cuts sampled",
        if reverting { "revert" } else { "install" }
    );
}

#[test]
fn a_95_kb_install_survives_sampled_cuts() {
    let (device, old, new) = pending();
    run_sampled(device, &old, &new, false);
}

#[test]
fn a_95_kb_revert_survives_sampled_cuts() {
    let (mut device, old, new) = pending();
    assert!(is_trial(&device.boot_to_jump()));
    run_sampled(device, &old, &new, true);
}

#[test]
fn the_largest_image_the_layout_allows_installs_and_one_byte_more_does_not() {
    let key = signing_key(1);
    let old = ImageSpec::new(1, 0, 1000, 1)
        .with_header_size(0x200)
        .sign(&key);
    let overhead = ImageSpec::new(2, 0, 0, 2)
        .with_header_size(0x200)
        .sign(&key)
        .len();
    let max_body = STM32WL55JC.max_image_len() as usize - overhead;
    // DER signatures vary by a byte or two: find the largest body that fits exactly.
    let mut largest = None;
    for body in (max_body - 4..=max_body + 4).rev() {
        let image = ImageSpec::new(2, 0, body, 2)
            .with_header_size(0x200)
            .sign(&key);
        if image.len() <= STM32WL55JC.max_image_len() as usize {
            largest = Some(image);
            break;
        }
    }
    let largest = largest.expect("an image that fits");
    assert!(largest.len() > STM32WL55JC.max_image_len() as usize - 4);
    let mut device = Device::new(STM32WL55JC, &key, &old);
    device.download(&largest);
    device.request_update();
    assert!(is_trial(&device.boot_to_jump()));
    assert!(device.primary_holds(&largest));
    println!(
        "largest image {} bytes (firmware body {} bytes with a 0x200 header)",
        largest.len(),
        largest.len() - overhead
    );

    let too_large = ImageSpec::new(3, 0, max_body + 8, 3)
        .with_header_size(0x200)
        .sign(&key);
    assert!(too_large.len() > STM32WL55JC.max_image_len() as usize);
    let mut device = Device::new(STM32WL55JC, &key, &old);
    // The download image area cannot even hold it: write what fits, as a node would.
    device.download(&too_large[..STM32WL55JC.download_image().len as usize]);
    device.request_update();
    let report = device.boot_to_jump();
    assert_eq!(jumped_version(&report), version(1));
    assert!(matches!(
        report.update,
        Some(fuota_boot::UpdateResult::Rejected {
            reason: fuota_boot::RejectReason::Truncated,
            ..
        })
    ));
}
