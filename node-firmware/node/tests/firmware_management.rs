//! TS006 firmware management: versions, programmed reboots (time, countdown, cancel,
//! ASAP, past), the verified status of the image in the download slot (none, valid,
//! wrong hardware, bad signature, downgrade, truncated, corrupted), deletion, and the
//! hand-over to the bootloader at reboot. Vectors from test-vectors.md §7.

mod support;

use fuota_node::{Action, Instant};
use lorawan_fuota::codec::fragmentation::{Downlink as Ts004, FragSessionSetup};
use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::fec::FragmentEncoder;
use lorawan_fuota::image::ImageVersion;
use support::{actions, bytes, config, downlink, image, uplinks, Device, Node, HARDWARE};

const T: Instant = Instant::from_secs(60);

fn answers(node: &mut Node<'_>, now: Instant) -> Vec<Vec<u8>> {
    uplinks(node, now)
        .into_iter()
        .filter(|u| u.fport == 203)
        .map(|u| u.payload.to_vec())
        .collect()
}

/// Delivers `block` by unicast through a TS004 v1 session of 64-byte fragments.
fn deliver(node: &mut Node<'_>, block: &[u8]) {
    let encoder = FragmentEncoder::new(block, 64, PackageVersion::V1).unwrap();
    let setup = FragSessionSetup {
        frag_index: 0,
        mc_group_bit_mask: 0,
        nb_frag: encoder.nb_frag(),
        frag_size: 64,
        frag_algo: 0,
        block_ack_delay: 0,
        padding: encoder.padding() as u8,
        descriptor: [0; 4],
        v2: None,
    };
    node.handle_downlink(T, 201, &downlink(&[Ts004::FragSessionSetupReq(setup)]));
    let mut data = [0u8; 64];
    for n in 1..=encoder.nb_frag() {
        encoder.fragment(u32::from(n), &mut data).unwrap();
        let fragment = downlink(&[Ts004::DataFragment {
            frag_index: 0,
            fragment_number: n,
            data: &data,
        }]);
        node.handle_downlink(T, 201, &fragment);
    }
    assert!(node.fragmentation_progress().unwrap().complete);
    uplinks(node, T);
}

fn device() -> Device {
    Device::new(config(PackageVersion::V1), 16 * 1024, 8 * 1024)
}

fn signed(version: ImageVersion, hardware: u32, key: &p256::ecdsa::SigningKey) -> Vec<u8> {
    image::signed(&image::body(9_000, 3), version, hardware, key)
}

#[test]
fn versions_follow_the_vectors() {
    let mut config = config(PackageVersion::V1);
    config.firmware_version = 0x1122_3344;
    config.hardware_version = 0x1234_5678;
    let mut device = Device::new(config, 4096, 4096);
    let mut workspace = vec![0u8; 4096];
    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);
    node.handle_downlink(T, 203, &bytes("01"));
    assert_eq!(answers(&mut node, T), [bytes("01 44 33 22 11 78 56 34 12")]);
    node.handle_downlink(T, 203, &bytes("00"));
    assert_eq!(answers(&mut node, T), [bytes("00 04 01")]);
}

#[test]
fn reboot_countdown_time_cancel_and_asap() {
    let mut device = device();
    let mut workspace = vec![0u8; 8192];
    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);

    // Unsynchronised clock: a reboot time cannot be honoured (0) and time is requested.
    node.handle_downlink(T, 203, &bytes("02 12 0b 9f 55"));
    let all = uplinks(&mut node, T);
    assert_eq!(all[0].payload.as_slice(), bytes("02 00 00 00 00"));
    assert_eq!(all[1].fport, 202);
    support::sync_clock(&mut node, T, PackageVersion::V1);

    // Countdown 262657 s (vector 03 01 02 04), answered with the same value.
    node.handle_downlink(T, 203, &bytes("03 01 02 04"));
    assert_eq!(answers(&mut node, T), [bytes("03 01 02 04")]);
    assert_eq!(node.next_action_at(T), Some(T.plus_secs(262_657)));
    // Cancel (03 ff ff ff).
    node.handle_downlink(T, 203, &bytes("03 ff ff ff"));
    assert_eq!(answers(&mut node, T), [bytes("03 ff ff ff")]);
    assert_eq!(node.next_action_at(T), None);

    // A GPS time one hour ahead: 3600 s (vector 02 10 0e 00 00); a replaced schedule.
    let in_an_hour = support::gps_at(T, 3600);
    node.handle_downlink(
        T,
        203,
        &downlink(&[
            lorawan_fuota::codec::firmware_management::Downlink::DevRebootTimeReq {
                reboot_time: in_an_hour,
            },
        ]),
    );
    assert_eq!(answers(&mut node, T), [bytes("02 10 0e 00 00")]);
    assert_eq!(node.next_action_at(T), Some(T.plus_secs(3600)));
    assert!(actions(&mut node, T.plus_secs(3599)).is_empty());
    // In the past: 0, and the programmed reboot stays.
    let past = support::gps_at(T, 0) - 1;
    node.handle_downlink(
        T,
        203,
        &downlink(&[
            lorawan_fuota::codec::firmware_management::Downlink::DevRebootTimeReq {
                reboot_time: past,
            },
        ]),
    );
    assert_eq!(answers(&mut node, T), [bytes("02 00 00 00 00")]);
    // Cancel (02 ff ff ff ff).
    node.handle_downlink(T, 203, &bytes("02 ff ff ff ff"));
    assert_eq!(answers(&mut node, T), [bytes("02 ff ff ff ff")]);
    assert_eq!(node.next_action_at(T), None);

    // ASAP (02 00 00 00 00 and 03 00 00 00): no answer, reboot now, nothing to install.
    node.handle_downlink(T, 203, &bytes("02 00 00 00 00"));
    assert!(answers(&mut node, T).is_empty());
    assert_eq!(
        actions(&mut node, T),
        [Action::Reboot {
            install_update: false
        }]
    );
    node.handle_downlink(T, 203, &bytes("03 00 00 00"));
    assert!(answers(&mut node, T).is_empty());
    assert_eq!(
        actions(&mut node, T),
        [Action::Reboot {
            install_update: false
        }]
    );
}

#[test]
fn upgrade_image_status_reflects_the_verified_slot() {
    let key = image::signing_key();
    let valid = signed(ImageVersion::new(1, 3, 0, 0), HARDWARE, &key);
    let mut truncated = valid.clone();
    truncated.truncate(valid.len() - 100);
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("valid 1.3.0", valid, "04 03 00 00 03 01"),
        (
            "other hardware",
            signed(ImageVersion::new(1, 3, 0, 0), HARDWARE + 1, &key),
            "04 02",
        ),
        (
            "untrusted signer",
            signed(
                ImageVersion::new(1, 3, 0, 0),
                HARDWARE,
                &image::untrusted_key(),
            ),
            // Without the signature check the node leaves the signer to the bootloader,
            // which refuses the image at the reset (tests in node-firmware/boot).
            if cfg!(feature = "signature-check") {
                "04 01"
            } else {
                "04 03 00 00 03 01"
            },
        ),
        (
            "downgrade to 1.1.0",
            signed(ImageVersion::new(1, 1, 0, 0), HARDWARE, &key),
            "04 01",
        ),
        ("truncated", truncated, "04 01"),
    ];
    for (name, block, expected) in cases {
        let mut device = device();
        let mut workspace = vec![0u8; 8192];
        let (mut node, _) = device.boot(&mut workspace, T);
        uplinks(&mut node, T);
        node.handle_downlink(T, 203, &bytes("04"));
        assert_eq!(
            answers(&mut node, T),
            [bytes("04 00")],
            "{name}: no image yet"
        );
        deliver(&mut node, &block);
        node.handle_downlink(T, 203, &bytes("04"));
        assert_eq!(answers(&mut node, T), [bytes(expected)], "{name}");
    }

    // A byte flipped in flash after reception: found at the next verification.
    let mut device = device();
    let mut workspace = vec![0u8; 8192];
    let block = signed(ImageVersion::new(1, 3, 0, 0), HARDWARE, &key);
    {
        let (mut node, _) = device.boot(&mut workspace, T);
        uplinks(&mut node, T);
        deliver(&mut node, &block);
    }
    device.slot.tamper(0x300, 0x01);
    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);
    node.handle_downlink(T, 203, &bytes("04"));
    assert_eq!(answers(&mut node, T), [bytes("04 01")]);
    assert_eq!(
        node.upgrade_image().error,
        Some(lorawan_fuota::image::ImageError::HashMismatch)
    );
}

#[test]
fn reboot_hands_a_valid_image_to_the_bootloader() {
    let mut device = device();
    let mut workspace = vec![0u8; 8192];
    let block = signed(
        ImageVersion::new(2, 0, 1, 9),
        HARDWARE,
        &image::signing_key(),
    );
    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);
    deliver(&mut node, &block);
    node.handle_downlink(T, 203, &bytes("03 0a 00 00"));
    assert_eq!(answers(&mut node, T), [bytes("03 0a 00 00")]);
    assert!(device.updater.0.borrow().is_empty());
    assert_eq!(
        actions(&mut node, T.plus_secs(10)),
        [Action::Reboot {
            install_update: true
        }]
    );
    let handed = device.updater.0.borrow().clone();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].firmware_version, 0x0200_0001);
    assert_eq!(handed[0].image_len as usize, block.len());
    use sha2::Digest;
    let hashed = &block[..image::hashed_len(&block)];
    assert_eq!(
        handed[0].digest,
        <[u8; 32]>::from(sha2::Sha256::digest(hashed))
    );
}

#[test]
fn delete_image_checks_presence_and_version() {
    let mut device = device();
    let mut workspace = vec![0u8; 8192];
    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);
    // No image: ErrorNoValidImage (05 01), with the LBM self-test version bytes.
    node.handle_downlink(T, 203, &bytes("05 17 01 19 73"));
    assert_eq!(answers(&mut node, T), [bytes("05 01")]);
    deliver(
        &mut node,
        &signed(
            ImageVersion::new(1, 3, 0, 0),
            HARDWARE,
            &image::signing_key(),
        ),
    );
    // Another version: ErrorInvalidVersion (05 02).
    node.handle_downlink(T, 203, &bytes("05 00 00 03 02"));
    assert_eq!(answers(&mut node, T), [bytes("05 02")]);
    // The stored version 1.3.0: deleted (05 00); afterwards no image (04 00).
    node.handle_downlink(T, 203, &bytes("05 00 00 03 01 04"));
    assert_eq!(answers(&mut node, T), [bytes("05 00 04 00")]);
    assert_eq!(device.slot.read_bytes(0..4), [0xFF; 4]);
    // It stays deleted across a reboot.
    drop(node);
    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);
    node.handle_downlink(T, 203, &bytes("04"));
    assert_eq!(answers(&mut node, T), [bytes("04 00")]);
}
