//! The bootloader's decisions without power cuts: install and confirm, revert of a trial
//! image that hangs or cannot join, refusal of bad images (with the reason the node
//! reports), anti-rollback, the watchdog, and which device state survives a swap.

mod common;

use common::{
    is_trial, jumped_version, pseudo_random, signing_key, small_layout, Device, ImageSpec,
};
use fuota_boot::{
    cancel_update, request_update, BootDecision, BootFlash, Confirmation, Phase, RejectReason,
    RequestError, RevertCause, UpdateResult,
};
use lorawan_fuota::image::ImageVersion;

fn v(major: u8, minor: u8) -> ImageVersion {
    ImageVersion::new(major, minor, 0, u32::from(major))
}

fn ts006(major: u8, minor: u8) -> u32 {
    v(major, minor).to_ts006()
}

/// A device running a 1.0 image of about four small pages.
fn device() -> (Device, Vec<u8>) {
    let key = signing_key(1);
    let old = ImageSpec::new(1, 0, 900, 10).sign(&key);
    (Device::new(small_layout(), &key, &old), old)
}

fn new_image(major: u8, minor: u8, body_len: usize) -> Vec<u8> {
    ImageSpec::new(
        major,
        minor,
        body_len,
        u32::from(major) * 100 + u32::from(minor),
    )
    .sign(&signing_key(1))
}

/// How a trial image behaves once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppBehaviour {
    /// Joins, hears a downlink, confirms.
    Healthy,
    /// Hangs before confirming: the watchdog resets it.
    Hangs,
    /// Retries the join until it gives up and resets, never confirming.
    CannotJoin,
}

/// Runs the application the bootloader jumped into, as the real one would: it confirms
/// itself only after it has joined and heard a downlink.
fn run_app(device: &mut Device, behaviour: AppBehaviour) {
    let joined_and_heard_downlink = match behaviour {
        AppBehaviour::Healthy => true,
        AppBehaviour::Hangs => return,
        AppBehaviour::CannotJoin => (0..8).any(|_attempt| false),
    };
    if joined_and_heard_downlink {
        device.confirm();
    }
}

#[test]
fn update_installs_in_trial_and_stays_once_confirmed() {
    let (mut device, old) = device();
    let report = device.boot_to_jump();
    assert_eq!(jumped_version(&report), v(1, 0));
    assert!(!is_trial(&report));

    let new = new_image(1, 1, 1050);
    device.download(&new);
    device.request_update();
    let report = device.boot_to_jump();
    assert_eq!(jumped_version(&report), v(1, 1));
    assert!(is_trial(&report));
    assert!(device.primary_holds(&new));
    // The old image is kept, one page lower than the new one came from.
    let backup = device.layout.download.start as usize;
    assert_eq!(
        &device.flash.contents()[backup..backup + old.len()],
        &old[..]
    );

    run_app(&mut device, AppBehaviour::Healthy);
    let report = device.boot_to_jump();
    assert_eq!(jumped_version(&report), v(1, 1));
    assert!(!is_trial(&report));
    assert_eq!(report.state.phase, Phase::Idle);
    assert_eq!(
        report.state.last_update,
        Some(UpdateResult::Installed {
            version: ts006(1, 1)
        })
    );
    assert_eq!(report.state.security_counter, ts006(1, 1));
    assert_eq!(device.confirm(), Confirmation::AlreadyConfirmed);
    assert!(device.flash.violations().is_empty());
}

#[test]
fn trial_images_that_never_confirm_are_reverted() {
    for behaviour in [AppBehaviour::Hangs, AppBehaviour::CannotJoin] {
        let (mut device, old) = device();
        let new = new_image(2, 0, 1080);
        device.download(&new);
        device.request_update();
        let report = device.boot_to_jump();
        assert!(is_trial(&report), "{behaviour:?}");
        run_app(&mut device, behaviour);

        // The watchdog (or the application giving up) resets the device.
        let report = device.boot_to_jump();
        assert_eq!(jumped_version(&report), v(1, 0), "{behaviour:?}");
        assert!(!is_trial(&report));
        let reverted = UpdateResult::Reverted {
            cause: RevertCause::NotConfirmed,
            version: ts006(2, 0),
        };
        assert_eq!(report.update, Some(reverted));
        assert_eq!(device.state().last_update, Some(reverted));
        assert!(device.primary_holds(&old));
        // The reverted image is back where it was downloaded, and the security counter
        // was never raised.
        let area = device.layout.download_image().start as usize;
        assert_eq!(&device.flash.contents()[area..area + new.len()], &new[..]);
        assert_eq!(device.state().security_counter, 0);
        // And it stays reverted.
        let report = device.boot_to_jump();
        assert_eq!(jumped_version(&report), v(1, 0));
        assert!(device.flash.violations().is_empty());
    }
}

#[test]
fn a_trial_image_may_get_more_boots_when_configured() {
    let (mut device, _) = device();
    device.download(&new_image(1, 5, 700));
    device.request_update();
    let keys = device.keys.clone();
    let mut config = fuota_boot::BootConfig::new(device.layout, &keys);
    config.max_trial_boots = 2;
    for _ in 0..2 {
        let report = fuota_boot::boot(&mut device.flash, &config, &mut device.watchdog).unwrap();
        assert!(is_trial(&report));
    }
    let report = fuota_boot::boot(&mut device.flash, &config, &mut device.watchdog).unwrap();
    assert_eq!(jumped_version(&report), v(1, 0));
}

/// Puts `image` in the download slot, requests the update, boots: the old image must
/// keep running and the report must say why.
fn assert_rejected(device: &mut Device, old: &[u8], image: &[u8], reason: RejectReason) {
    device.download(image);
    device.request_update();
    let report = device.boot_to_jump();
    assert_eq!(jumped_version(&report), v(1, 0), "{reason:?}");
    assert!(!is_trial(&report));
    assert!(device.primary_holds(old));
    match report.update {
        Some(UpdateResult::Rejected { reason: got, .. }) => assert_eq!(got, reason),
        other => panic!("expected a rejection ({reason:?}), got {other:?}"),
    }
    assert_eq!(device.state().last_update, report.update);
    assert_eq!(device.state().phase, Phase::Idle);
    assert!(device.flash.violations().is_empty());
}

#[test]
fn bad_images_are_refused_and_the_reason_is_kept() {
    let (mut device, old) = device();
    let good = new_image(1, 1, 1000);

    let other_key = ImageSpec::new(1, 1, 1000, 5).sign(&signing_key(9));
    assert_rejected(&mut device, &old, &other_key, RejectReason::KeyNotTrusted);

    let mut bad_signature = good.clone();
    let last = bad_signature.len() - 3;
    bad_signature[last] ^= 0x01;
    assert_rejected(
        &mut device,
        &old,
        &bad_signature,
        RejectReason::BadSignature,
    );

    let mut bad_body = good.clone();
    bad_body[100] ^= 0x40;
    assert_rejected(&mut device, &old, &bad_body, RejectReason::HashMismatch);

    // Half an image: the TLVs would be in erased flash.
    let truncated = good[..good.len() / 2].to_vec();
    assert_rejected(&mut device, &old, &truncated, RejectReason::Truncated);

    // An image claiming to be larger than the slot.
    let oversized = new_image(1, 1, 5 * 256);
    assert_rejected(&mut device, &old, &oversized, RejectReason::Truncated);

    let mut not_an_image = pseudo_random(600, 3);
    not_an_image[..4].copy_from_slice(&[1, 2, 3, 4]);
    assert_rejected(&mut device, &old, &not_an_image, RejectReason::Malformed);

    assert_rejected(&mut device, &old, &[], RejectReason::NoImage);
}

#[test]
fn the_rejected_version_is_reported_when_readable() {
    let (mut device, old) = device();
    let other_key = ImageSpec::new(3, 1, 800, 5).sign(&signing_key(9));
    assert_rejected(&mut device, &old, &other_key, RejectReason::KeyNotTrusted);
    assert_eq!(
        device.state().last_update,
        Some(UpdateResult::Rejected {
            reason: RejectReason::KeyNotTrusted,
            version: Some(ts006(3, 1)),
        })
    );
    assert_eq!(RejectReason::KeyNotTrusted.up_image_status(), 1);
    assert_eq!(RejectReason::WrongHardware.up_image_status(), 2);
    assert_eq!(RejectReason::NoImage.up_image_status(), 0);
}

#[test]
fn images_for_other_hardware_are_refused() {
    let key = signing_key(1);
    let old = ImageSpec::new(1, 0, 900, 10)
        .for_hardware(0x0001_0001)
        .sign(&key);
    let mut device = Device::new(small_layout(), &key, &old);
    device.hardware = Some(0x0001_0001);
    let other = ImageSpec::new(1, 1, 900, 11)
        .for_hardware(0x0002_0001)
        .sign(&key);
    assert_rejected(&mut device, &old, &other, RejectReason::WrongHardware);
    let unmarked = ImageSpec::new(1, 1, 900, 11).sign(&key);
    assert_rejected(&mut device, &old, &unmarked, RejectReason::WrongHardware);
    let right = ImageSpec::new(1, 1, 900, 11)
        .for_hardware(0x0001_0001)
        .sign(&key);
    device.download(&right);
    device.request_update();
    assert!(is_trial(&device.boot_to_jump()));
}

#[test]
fn downgrades_below_the_security_counter_are_refused() {
    let (mut device, _) = device();
    let v1_1 = new_image(1, 1, 1000);
    device.download(&v1_1);
    device.request_update();
    device.boot_to_jump();
    device.confirm();
    assert_eq!(device.state().security_counter, ts006(1, 1));

    // 1.0 (the image kept in the download slot, or any 1.0) is now a rollback.
    let v1_0 = ImageSpec::new(1, 0, 900, 10).sign(&signing_key(1));
    device.download(&v1_0);
    device.request_update();
    let report = device.boot_to_jump();
    assert_eq!(jumped_version(&report), v(1, 1));
    assert_eq!(
        report.update,
        Some(UpdateResult::Rejected {
            reason: RejectReason::Downgrade,
            version: Some(ts006(1, 0)),
        })
    );
    assert!(device.primary_holds(&v1_1));

    // The same version (another build) is not a rollback.
    let rebuild = ImageSpec {
        version: ImageVersion::new(1, 1, 0, 77),
        ..ImageSpec::new(1, 1, 600, 1)
    }
    .sign(&signing_key(1));
    device.download(&rebuild);
    device.request_update();
    assert!(is_trial(&device.boot_to_jump()));
}

#[test]
fn the_watchdog_is_started_before_every_jump_and_only_then() {
    let (mut device, old) = device();
    for boots in 1..=3 {
        device.boot_to_jump();
        assert_eq!(device.watchdog.starts, boots);
    }
    device.download(&new_image(1, 1, 500));
    device.request_update();
    device.boot_to_jump();
    assert_eq!(device.watchdog.starts, 4);
    device.boot_to_jump(); // revert, then jump
    assert_eq!(device.watchdog.starts, 5);

    // A primary slot that does not verify: halt, no watchdog, no jump.
    let mut corrupt = old.clone();
    corrupt[200] ^= 1;
    device.flash.load(device.layout.primary.start, &corrupt);
    let report = device.boot().unwrap();
    assert_eq!(
        report.decision,
        BootDecision::Halt(RejectReason::HashMismatch)
    );
    assert_eq!(device.watchdog.starts, 5);
}

#[test]
fn a_trial_image_that_no_longer_verifies_is_reverted_before_it_runs() {
    let (mut device, old) = device();
    let new = new_image(1, 2, 1000);
    device.download(&new);
    device.request_update();
    // Stop right after the swap completed: cut power at the trial-boot record.
    let mut probe = device.clone();
    let before = probe.flash.operations();
    probe.boot_to_jump();
    let trial_record = probe.flash.operations() - 1 - before;
    device
        .flash
        .cut_power_in(trial_record, fuota_boot::sim::CutTiming::Before);
    assert!(device.boot().is_err());
    device.flash.power_cycle();
    // The new image gets damaged before its first start.
    let mut damaged = new.clone();
    damaged[300] ^= 0x80;
    device.flash.load(device.layout.primary.start, &damaged);

    let report = device.boot_to_jump();
    assert_eq!(jumped_version(&report), v(1, 0));
    assert_eq!(
        report.update,
        Some(UpdateResult::Reverted {
            cause: RevertCause::TrialImageInvalid,
            version: ts006(1, 2),
        })
    );
    assert!(device.primary_holds(&old));
}

#[test]
fn images_of_different_sizes_swap_and_revert_exactly() {
    // Small to large and large to small, with the slot-sized image too.
    for (old_len, new_len) in [(300, 1050), (1050, 300), (600, 1090)] {
        let key = signing_key(1);
        let old = ImageSpec::new(1, 0, old_len, 1).sign(&key);
        let new = ImageSpec::new(1, 1, new_len, 2).sign(&key);
        let mut device = Device::new(small_layout(), &key, &old);
        device.download(&new);
        device.request_update();
        let primary_before: Vec<u8> = device.flash.contents()
            [device.layout.primary.start as usize..device.layout.primary.end() as usize]
            .to_vec();
        assert!(is_trial(&device.boot_to_jump()));
        assert!(device.primary_holds(&new));
        let report = device.boot_to_jump();
        assert_eq!(jumped_version(&report), v(1, 0));
        let primary_after = &device.flash.contents()
            [device.layout.primary.start as usize..device.layout.primary.end() as usize];
        assert_eq!(primary_after, &primary_before[..], "{old_len} -> {new_len}");
    }
}

#[test]
fn requests_follow_the_phase() {
    let (mut device, _) = device();
    let layout = device.layout;
    assert_eq!(cancel_update(&mut device.flash, &layout), Ok(false));
    device.download(&new_image(1, 1, 700));
    device.request_update();
    device.request_update(); // twice is harmless
    assert_eq!(device.state().phase, Phase::UpdatePending);
    assert_eq!(cancel_update(&mut device.flash, &layout), Ok(true));
    assert_eq!(jumped_version(&device.boot_to_jump()), v(1, 0));

    assert!(device.state().may_write_download_slot());
    device.request_update();
    assert!(!device.state().may_write_download_slot());
    assert!(is_trial(&device.boot_to_jump()));
    assert!(!device.state().may_write_download_slot());
    assert_eq!(
        request_update(&mut device.flash, &layout),
        Err(RequestError::TrialNotConfirmed)
    );
    assert_eq!(
        device.confirm(),
        Confirmation::Confirmed {
            version: ts006(1, 1)
        }
    );
    assert!(device.state().may_write_download_slot());
    assert_eq!(request_update(&mut device.flash, &layout), Ok(()));
}

#[test]
fn device_state_outside_the_slots_survives_updates_and_reverts() {
    let (mut device, _) = device();
    let layout = device.layout;
    // The application's state pages: DevNonce counter, frame counters, SessionCnt...
    let app_state = pseudo_random(layout.app_state.len as usize, 77);
    device.flash.load(layout.app_state.start, &app_state);
    // ...and the bootloader region.
    let bootloader = pseudo_random(layout.bootloader.len as usize, 78);
    device.flash.load(layout.bootloader.start, &bootloader);

    let mut version = 1;
    for round in 0..12u8 {
        version += 1;
        device.download(&new_image(version, 0, 400 + usize::from(round) * 50));
        device.request_update();
        assert!(is_trial(&device.boot_to_jump()));
        if round % 3 == 2 {
            device.boot_to_jump(); // reverted
            version -= 1;
        } else {
            device.confirm();
            device.boot_to_jump();
        }
        assert_eq!(device.state().security_counter, ts006(version, 0));
    }
    let contents = device.flash.contents();
    let app = &contents[layout.app_state.start as usize..layout.app_state.end() as usize];
    assert_eq!(app, &app_state[..]);
    let boot = &contents[layout.bootloader.start as usize..layout.bootloader.end() as usize];
    assert_eq!(boot, &bootloader[..]);
    let page = layout.page_size as usize;
    let erases = device.flash.page_erase_counts();
    for region in [layout.app_state, layout.bootloader, layout.fec_log] {
        let pages = region.start as usize / page..region.end() as usize / page;
        assert!(erases[pages].iter().all(|&n| n == 0), "{region:?} erased");
    }
    assert!(device.flash.violations().is_empty());
    assert_eq!(device.flash.page_size(), layout.page_size);
}
