//! The node's path end to end on the STM32WL layout: a signed ~95 KB image cut into
//! 48-byte fragments, 10 % of them lost, coded fragments until the FEC decoder completes
//! the block straight into the download image area (through `FlashWindow` over the
//! simulated flash); then the bootloader verifies, swaps, boots the new image on trial,
//! and it confirms. A corrupted transfer is refused and the old image keeps running.

mod common;

use common::fec_download::download_with_fec;
use common::{is_trial, jumped_version, signing_key, Device, ImageSpec};
use fuota_boot::{RejectReason, UpdateResult, STM32WL55JC};
use lorawan_fuota::fec::decoder::DecoderConfig;
use lorawan_fuota::fec::{Decoder, SliceFlash};
use lorawan_fuota::image::ImageVersion;

#[test]
fn the_fec_log_of_the_reference_session_fits_its_area() {
    let config = DecoderConfig {
        nb_frag: 2000,
        frag_size: 48,
        max_lost: 400,
        version: lorawan_fuota::codec::PackageVersion::V2,
    };
    let sizing = Decoder::<SliceFlash, SliceFlash>::sizing(&config, 8).unwrap();
    assert_eq!(sizing.log_reserved_bytes, 400 * 56);
    assert!(sizing.log_reserved_bytes <= STM32WL55JC.fec_log.len as usize);
    assert!(2000 * 48 <= STM32WL55JC.download_image().len);
}

#[test]
fn an_image_received_with_fec_installs_and_runs() {
    let key = signing_key(1);
    let old = ImageSpec::new(1, 0, 60_000, 1)
        .with_header_size(0x200)
        .sign(&key);
    let new = ImageSpec::new(1, 1, 95_000, 2)
        .with_header_size(0x200)
        .sign(&key);
    let mut device = Device::new(STM32WL55JC, &key, &old);
    let report = download_with_fec(&mut device, &new, 48, 400, 10, 7);
    assert!(report.lost > 0);
    assert!(device.flash.violations().is_empty());
    let area = STM32WL55JC.download_image().start as usize;
    assert_eq!(&device.flash.contents()[area..area + new.len()], &new[..]);

    device.request_update();
    let boot = device.boot_to_jump();
    assert!(is_trial(&boot));
    assert_eq!(jumped_version(&boot), ImageVersion::new(1, 1, 0, 1));
    device.confirm();
    let boot = device.boot_to_jump();
    assert!(!is_trial(&boot));
    assert_eq!(
        boot.state.last_update,
        Some(UpdateResult::Installed {
            version: ImageVersion::new(1, 1, 0, 0).to_ts006()
        })
    );
}

#[test]
fn a_transfer_of_a_badly_signed_image_leaves_the_old_one_running() {
    let key = signing_key(1);
    let old = ImageSpec::new(1, 0, 20_000, 1).sign(&key);
    let forged = ImageSpec::new(9, 0, 30_000, 2).sign(&signing_key(2));
    let mut device = Device::new(STM32WL55JC, &key, &old);
    download_with_fec(&mut device, &forged, 232, 30, 10, 3);
    device.request_update();
    let boot = device.boot_to_jump();
    assert_eq!(jumped_version(&boot), ImageVersion::new(1, 0, 0, 1));
    assert_eq!(
        boot.update,
        Some(UpdateResult::Rejected {
            reason: RejectReason::KeyNotTrusted,
            version: Some(ImageVersion::new(9, 0, 0, 0).to_ts006()),
        })
    );
}
