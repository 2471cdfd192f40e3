//! Power cuts at every flash operation of a full update (request, install, confirm) and
//! of a revert, on a small geometry (256-byte pages, 5-page slots): before, after and
//! during (torn) each operation, with torn double-words raising ECC faults or reading
//! as garbage; then cuts during the recovery boots too. After every cut the device
//! reboots and must end on a valid signed image: the new one once the update was
//! durably under way, the old one when the trial image had been started without
//! confirming itself (a reset before confirmation reverts, by design).

mod common;

use common::{is_trial, signing_key, small_layout, trusted, Device, ImageSpec};
use fuota_boot::sim::{CutTiming, TornReads};
use fuota_boot::{BootDecision, Layout, Phase, RevertCause, UpdateResult};
use lorawan_fuota::image::{verify, VerifyOptions};

/// The images of a scenario: 1.0 running (two thirds of the slot), 1.1 downloaded
/// (the whole slot).
struct Images {
    old: Vec<u8>,
    new: Vec<u8>,
}

fn images(layout: &Layout) -> Images {
    let key = signing_key(1);
    let slot = layout.max_image_len() as usize;
    let images = Images {
        old: ImageSpec::new(1, 0, slot * 2 / 3, 10).sign(&key),
        new: ImageSpec::new(1, 1, slot - 220, 11).sign(&key),
    };
    assert!(images.new.len() > slot - layout.page_size as usize);
    assert!(images.new.len() <= slot);
    images
}

/// Which image the device ends up running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Running {
    /// The new image, on trial.
    NewOnTrial,
    /// The new image, confirmed.
    NewConfirmed,
    /// The old image (no update, or the update was rejected or reverted).
    Old,
}

/// Boots with power on and checks, independently of the bootloader, that the primary
/// slot holds exactly one of the two signed images, and that the decision matches it.
fn settle(device: &mut Device, images: &Images) -> Running {
    let watchdog_before = device.watchdog.starts;
    let report = device.boot().expect("a boot with power on completes");
    let BootDecision::Jump { image, trial } = report.decision else {
        panic!("bootloader halted: {:?}", report.decision);
    };
    assert_eq!(
        device.watchdog.starts,
        watchdog_before + 1,
        "watchdog started"
    );
    let start = device.layout.primary.start as usize;
    let primary = &device.flash.contents()[start..device.layout.primary.end() as usize];
    let verified = verify(primary, &[trusted(&signing_key(1))], &VerifyOptions::new())
        .expect("the primary slot verifies");
    assert_eq!(verified.digest(), &image.digest);
    assert!(
        device.flash.violations().is_empty(),
        "{:?}",
        device.flash.violations()
    );
    // Nothing outside the slots and the boot state is ever touched.
    let layout = device.layout;
    let page = layout.page_size as usize;
    for region in [layout.bootloader, layout.fec_log, layout.app_state] {
        let pages = region.start as usize / page..region.end() as usize / page;
        assert!(device.flash.page_erase_counts()[pages]
            .iter()
            .all(|&n| n == 0));
        let bytes = &device.flash.contents()[region.start as usize..region.end() as usize];
        assert!(bytes.iter().all(|&b| b == 0xFF), "{region:?} written");
    }
    if device.primary_holds(&images.new) {
        if trial {
            Running::NewOnTrial
        } else {
            Running::NewConfirmed
        }
    } else {
        assert!(
            device.primary_holds(&images.old),
            "primary holds neither image"
        );
        assert!(!trial);
        Running::Old
    }
}

/// What a scenario starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// 1.0 runs, 1.1 is downloaded, nothing requested yet.
    Downloaded,
    /// The update is requested: the next boot installs.
    Pending,
    /// 1.1 was started on trial and did not confirm: the next boot reverts.
    TrialStarted,
}

fn device_at(start: Start, images: &Images, torn_reads: TornReads, layout: Layout) -> Device {
    let mut device = Device::new(layout, &signing_key(1), &images.old);
    device.flash.set_torn_reads(torn_reads);
    device.download(&images.new);
    if start == Start::Downloaded {
        return device;
    }
    device.request_update();
    if start == Start::TrialStarted {
        assert!(is_trial(&device.boot_to_jump()));
    }
    device
}

/// The flash operation of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Boot,
    RequestUpdate,
    Confirm,
}

fn perform(device: &mut Device, action: Action) {
    // Errors are expected: power is cut.
    match action {
        Action::Boot => drop(device.boot()),
        Action::RequestUpdate => drop(fuota_boot::request_update(
            &mut device.flash,
            &device.layout,
        )),
        Action::Confirm => drop(fuota_boot::confirm_image(&mut device.flash, &device.layout)),
    }
}

/// Flash operations `action` performs from `device` without a cut.
fn operations_of(device: &Device, action: Action) -> u64 {
    let mut probe = device.clone();
    let before = probe.flash.operations();
    perform(&mut probe, action);
    assert!(probe.flash.is_powered());
    probe.flash.operations() - before
}

/// Cuts power at operation `op` (counted from now) of `action`, then restores it.
fn cut(device: &mut Device, action: Action, op: u64, timing: CutTiming) {
    device.flash.cut_power_in(op, timing);
    perform(device, action);
    assert!(!device.flash.is_powered(), "the cut at {op} struck");
    device.flash.power_cycle();
}

/// What the next uninterrupted boot must do, from the durable boot state (read by the
/// test after the cut): revert if the trial image was already started (or is being
/// reverted), run the new image once the install is under way, the old one otherwise.
fn expected_from_durable_state(device: &mut Device) -> Running {
    let state = device.state();
    match state.phase {
        Phase::Idle => match state.last_update {
            Some(UpdateResult::Installed { .. }) => Running::NewConfirmed,
            _ => Running::Old,
        },
        Phase::UpdatePending => Running::NewOnTrial,
        Phase::Swapping(swap) => match swap.kind {
            fuota_boot::SwapKind::Install => Running::NewOnTrial,
            fuota_boot::SwapKind::Revert(_) => Running::Old,
        },
        Phase::Trial(trial) if trial.boots == 0 => Running::NewOnTrial,
        Phase::Trial(_) => Running::Old,
    }
}

/// Finishes the story. A trial image must still be revertible (a copy that does not
/// confirm is reverted to exactly the old image), then it confirms (it is healthy), and
/// the next boot must keep it. When the old image runs, the new one must be back in the
/// download image area, and the old image must keep running.
fn finish(device: &mut Device, images: &Images, running: Running) {
    if running == Running::NewOnTrial {
        let mut unconfirmed = device.clone();
        assert_eq!(settle(&mut unconfirmed, images), Running::Old, "revert");
        assert_download_holds_new(&unconfirmed, images);
        device.confirm();
        assert_eq!(settle(device, images), Running::NewConfirmed);
        assert_eq!(
            device.state().security_counter,
            lorawan_fuota::image::ImageVersion::new(1, 1, 0, 0).to_ts006()
        );
    } else {
        if running == Running::Old {
            assert_download_holds_new(device, images);
        }
        assert_eq!(settle(device, images), running);
    }
}

fn assert_download_holds_new(device: &Device, images: &Images) {
    let area = device.layout.download_image().start as usize;
    assert!(
        device.flash.contents()[area..area + images.new.len()] == images.new[..],
        "the new image is back in the download image area"
    );
}

/// Every operation × every timing of `action` from `start`; `expected(op, timing, last)`
/// says where the device must end.
fn every_cut(
    layout: Layout,
    start: Start,
    action: Action,
    torn_reads: TornReads,
    expected: impl Fn(u64, CutTiming, u64) -> Running,
) -> u64 {
    let images = images(&layout);
    let origin = device_at(start, &images, torn_reads, layout);
    let operations = operations_of(&origin, action);
    assert!(operations > 0);
    let last = operations - 1;
    for op in 0..operations {
        for timing in CutTiming::ALL {
            let mut device = origin.clone();
            cut(&mut device, action, op, timing);
            let predicted = expected_from_durable_state(&mut device);
            let running = settle(&mut device, &images);
            let want = expected(op, timing, last);
            assert_eq!(
                running, want,
                "{action:?} cut {timing:?} op {op}/{operations}"
            );
            assert_eq!(predicted, want, "durable state after {timing:?} op {op}");
            if running == Running::Old && action != Action::RequestUpdate {
                assert!(matches!(
                    device.state().last_update,
                    Some(UpdateResult::Reverted {
                        cause: RevertCause::NotConfirmed,
                        ..
                    })
                ));
            }
            finish(&mut device, &images, running);
        }
    }
    operations
}

#[test]
fn install_survives_a_cut_at_every_operation() {
    for torn_reads in [TornReads::EccFault, TornReads::Garbage] {
        let operations = every_cut(
            small_layout(),
            Start::Pending,
            Action::Boot,
            torn_reads,
            |op, timing, last| {
                // Only a completed trial-boot record (the boot's last operation) counts as
                // "started without confirming".
                if op == last && timing == CutTiming::After {
                    Running::Old
                } else {
                    Running::NewOnTrial
                }
            },
        );
        println!("install ({torn_reads:?}): {operations} operations × 3 timings");
    }
}

#[test]
fn revert_survives_a_cut_at_every_operation() {
    for torn_reads in [TornReads::EccFault, TornReads::Garbage] {
        let operations = every_cut(
            small_layout(),
            Start::TrialStarted,
            Action::Boot,
            torn_reads,
            |_, _, _| Running::Old,
        );
        println!("revert ({torn_reads:?}): {operations} operations × 3 timings");
    }
}

#[test]
fn request_survives_a_cut_at_every_operation() {
    every_cut(
        small_layout(),
        Start::Downloaded,
        Action::RequestUpdate,
        TornReads::EccFault,
        |op, timing, last| {
            if op == last && timing == CutTiming::After {
                Running::NewOnTrial
            } else {
                Running::Old
            }
        },
    );
}

#[test]
fn confirm_survives_a_cut_at_every_operation() {
    every_cut(
        small_layout(),
        Start::TrialStarted,
        Action::Confirm,
        TornReads::EccFault,
        |op, timing, last| {
            if op == last && timing == CutTiming::After {
                Running::NewConfirmed
            } else {
                Running::Old
            }
        },
    );
}

/// With 128-byte pages a boot state page holds eleven records, so a 9-page install
/// (18 step records) fills it and carries on in a new snapshot, twice: cut everywhere.
#[test]
fn install_and_revert_across_full_status_pages_survive_every_cut() {
    let layout = Layout::small(128, 9);
    // The clean install rotates the boot state more often than its phase changes.
    let mut probe = device_at(
        Start::Pending,
        &images(&layout),
        TornReads::EccFault,
        layout,
    );
    let state_pages = (layout.boot_state.start / layout.page_size) as usize;
    let erased_before: u32 = probe.flash.page_erase_counts()[state_pages..state_pages + 2]
        .iter()
        .sum();
    probe.boot_to_jump();
    let rotations = probe.flash.page_erase_counts()[state_pages..state_pages + 2]
        .iter()
        .sum::<u32>()
        - erased_before;
    assert!(
        rotations >= 3,
        "{rotations} rotations: the page never filled"
    );

    let install = every_cut(
        layout,
        Start::Pending,
        Action::Boot,
        TornReads::EccFault,
        |op, timing, last| {
            if op == last && timing == CutTiming::After {
                Running::Old
            } else {
                Running::NewOnTrial
            }
        },
    );
    let revert = every_cut(
        layout,
        Start::TrialStarted,
        Action::Boot,
        TornReads::EccFault,
        |_, _, _| Running::Old,
    );
    println!("128-byte pages: install {install}, revert {revert} operations × 3 timings");
}

/// A small deterministic generator for sampled cut points.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }

    fn timing(&mut self) -> CutTiming {
        CutTiming::ALL[self.below(3) as usize]
    }
}

/// Cuts the boots that recover from a first cut, again and again: for first cuts at
/// every `exhaustive_stride`-th operation (every timing), a second cut at every
/// operation of the recovery boot; for first cuts at every operation (every timing), a
/// chain of three more cuts at random points of the recoveries that follow.
fn recovery_cuts(start: Start, exhaustive_stride: u64) {
    let images = images(&small_layout());
    let origin = device_at(start, &images, TornReads::EccFault, small_layout());
    let operations = operations_of(&origin, Action::Boot);
    let mut rng = Lcg(operations);
    let mut scenarios = 0u64;
    for op in 0..operations {
        for timing in CutTiming::ALL {
            let mut first = origin.clone();
            cut(&mut first, Action::Boot, op, timing);

            if op % exhaustive_stride == 0 || op + 1 == operations {
                let recovery_ops = operations_of(&first, Action::Boot);
                for second in 0..recovery_ops {
                    let second_timing = CutTiming::ALL[(second % 3) as usize];
                    let mut device = first.clone();
                    cut(&mut device, Action::Boot, second, second_timing);
                    let predicted = expected_from_durable_state(&mut device);
                    let running = settle(&mut device, &images);
                    assert_eq!(
                        running, predicted,
                        "cuts at {op} {timing:?}, then {second} {second_timing:?}"
                    );
                    finish(&mut device, &images, running);
                    scenarios += 1;
                }
            }

            let mut device = first;
            for _ in 0..3 {
                let ops = operations_of(&device, Action::Boot);
                if ops == 0 {
                    break;
                }
                cut(&mut device, Action::Boot, rng.below(ops), rng.timing());
            }
            let predicted = expected_from_durable_state(&mut device);
            let running = settle(&mut device, &images);
            assert_eq!(running, predicted, "chain after a cut at {op} {timing:?}");
            finish(&mut device, &images, running);
            scenarios += 1;
        }
    }
    println!("{start:?}: {scenarios} recovery scenarios");
}

#[test]
fn install_recovers_through_cuts_during_recovery() {
    recovery_cuts(Start::Pending, 40);
}

#[test]
fn revert_recovers_through_cuts_during_recovery() {
    recovery_cuts(Start::TrialStarted, 40);
}
