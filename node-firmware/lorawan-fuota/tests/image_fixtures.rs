//! Images signed by imgtool 2.5.0 (tests/fixtures/images, made by make-fixtures.sh):
//! they verify with the fixture key and report the right versions, and every corruption
//! is refused with the right error.

use lorawan_fuota::image::{
    check_integrity_source, verify, Image, ImageError, ImageRegion, ImageVersion, SourceError,
    TrustedKey, VerifyOptions, TLV_ECDSA_SIG, TLV_HARDWARE_VERSION, TLV_KEYHASH, TLV_PUBKEY,
    TLV_SHA256,
};
use p256::pkcs8::DecodePublicKey;

const HW_KEYHASH: &[u8] = include_bytes!("fixtures/images/signed-hw-keyhash.bin");
const HW_PUBKEY: &[u8] = include_bytes!("fixtures/images/signed-hw-pubkey.bin");
const NO_HW: &[u8] = include_bytes!("fixtures/images/signed-no-hw.bin");
const EXTRAS_SLOT: &[u8] = include_bytes!("fixtures/images/signed-extras-padded-slot.bin");
const BIG_ENDIAN: &[u8] = include_bytes!("fixtures/images/signed-big-endian.bin");
const BODY: &[u8] = include_bytes!("fixtures/images/body.bin");
const PUBKEY_DER: &[u8] = include_bytes!("fixtures/images/pubkey.der");
const PUBKEY_PEM: &str = include_str!("fixtures/images/pubkey.pem");
const PUBKEY_HASH: &[u8] = include_bytes!("fixtures/images/pubkey.sha256");
const OTHER_PUBKEY_PEM: &str = include_str!("fixtures/images/other-pubkey.pem");

/// Hardware version signed into the fixtures with `--custom-tlv 0xa0 0x00010203`.
const FIXTURE_HW: u32 = 0x0001_0203;

fn key_from_pem(pem: &str) -> TrustedKey {
    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(pem).expect("PEM public key");
    TrustedKey::from_sec1_bytes(key.to_sec1_point(false).as_bytes()).expect("P-256 key")
}

fn fixture_key() -> TrustedKey {
    TrustedKey::from_spki_der(PUBKEY_DER).expect("imgtool getpub -e raw output")
}

fn no_options() -> VerifyOptions {
    VerifyOptions::new()
}

/// The three plain fixtures (version 1.2.3+4).
fn plain_fixtures() -> [(&'static str, &'static [u8]); 3] {
    [
        ("signed-hw-keyhash.bin", HW_KEYHASH),
        ("signed-hw-pubkey.bin", HW_PUBKEY),
        ("signed-no-hw.bin", NO_HW),
    ]
}

#[test]
fn fixture_key_forms_agree_with_imgtool() {
    let from_der = fixture_key();
    let from_pem = key_from_pem(PUBKEY_PEM);
    assert_eq!(from_der.spki_der(), from_pem.spki_der());
    assert_eq!(from_der.spki_der().as_slice(), PUBKEY_DER);
    // imgtool getpubhash: what the KEYHASH TLV holds.
    assert_eq!(from_der.key_hash().as_slice(), PUBKEY_HASH);
}

#[test]
fn imgtool_images_verify_and_report_versions() {
    let keys = [fixture_key()];
    for (name, bytes) in plain_fixtures() {
        let verified =
            verify(bytes, &keys, &no_options()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verified.version(), ImageVersion::new(1, 2, 3, 4), "{name}");
        assert_eq!(verified.version().to_string(), "1.2.3+4");
        assert_eq!(verified.ts006_version(), 0x0102_0003, "{name}");
        assert_eq!(verified.key_index(), 0);
        assert_eq!(verified.header().hdr_size, 0x200);
        assert_eq!(verified.header().img_size as usize, BODY.len());
        assert_eq!(verified.image_len() as usize, bytes.len());

        let image = Image::parse(bytes).expect("parse");
        assert_eq!(image.body(), BODY, "{name}");
        assert_eq!(image.hardware_version(), verified.hardware_version());
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(image.hashed_region()).into();
        assert_eq!(&digest, verified.digest());
    }
    let hw = |bytes| verify(bytes, &keys, &no_options()).map(|v| v.hardware_version());
    assert_eq!(hw(HW_KEYHASH), Ok(Some(FIXTURE_HW)));
    assert_eq!(hw(HW_PUBKEY), Ok(Some(FIXTURE_HW)));
    assert_eq!(hw(NO_HW), Ok(None));
}

#[test]
fn fixture_tlv_layout_is_as_documented() {
    let image = Image::parse(HW_KEYHASH).unwrap();
    let protected: Vec<_> = image.protected_tlvs().collect();
    assert_eq!(protected.len(), 1);
    assert_eq!(protected[0].kind, TLV_HARDWARE_VERSION);
    // `--custom-tlv 0xa0 0x00010203` is stored byte for byte: big-endian, 4 bytes.
    assert_eq!(protected[0].value, [0x00, 0x01, 0x02, 0x03]);
    assert_eq!(image.header().protect_tlv_size, 4 + 4 + 4);
    let kinds: Vec<_> = image.unprotected_tlvs().map(|t| t.kind).collect();
    assert_eq!(kinds, [TLV_SHA256, TLV_KEYHASH, TLV_ECDSA_SIG]);

    let image = Image::parse(HW_PUBKEY).unwrap();
    let kinds: Vec<_> = image
        .unprotected_tlvs()
        .map(|t| (t.kind, t.value.len()))
        .collect();
    assert_eq!(kinds[0], (TLV_SHA256, 32));
    assert_eq!(kinds[1], (TLV_PUBKEY, 91));
    assert_eq!(kinds[2].0, TLV_ECDSA_SIG);

    let image = Image::parse(NO_HW).unwrap();
    assert_eq!(image.header().protect_tlv_size, 0);
    assert_eq!(image.protected_tlvs().count(), 0);
}

#[test]
fn padded_slot_with_extras_verifies() {
    let keys = [fixture_key()];
    let verified = verify(EXTRAS_SLOT, &keys, &no_options()).expect("verify");
    assert_eq!(verified.version(), ImageVersion::new(2, 10, 300, 99));
    assert_eq!(verified.ts006_version(), 0x020a_012c);
    assert_eq!(verified.hardware_version(), Some(0x0000_ab01));
    assert!(
        (verified.image_len() as usize) < EXTRAS_SLOT.len(),
        "slot padding after the TLVs"
    );

    let image = Image::parse(EXTRAS_SLOT).unwrap();
    assert_eq!(image.body(), BODY);
    // imgtool's `--security-counter auto` is exactly our TS006 mapping.
    let sec_cnt = image
        .protected_tlvs()
        .find(|t| t.kind == 0x50)
        .expect("SEC_CNT");
    assert_eq!(sec_cnt.value, verified.ts006_version().to_le_bytes());
    let custom = image
        .protected_tlvs()
        .find(|t| t.kind == 0xa1)
        .expect("0xa1");
    assert_eq!(custom.value, b"board-rev-b");
    // --pad-sig: the DER signature is zero-padded to 72 bytes.
    let sig = image
        .unprotected_tlvs()
        .find(|t| t.kind == TLV_ECDSA_SIG)
        .unwrap();
    assert_eq!(sig.value.len(), 72);
}

#[test]
fn hardware_version_option() {
    let keys = [fixture_key()];
    let same = VerifyOptions::new().require_hardware(FIXTURE_HW);
    let other = VerifyOptions::new().require_hardware(0x0001_0204);
    assert!(verify(HW_KEYHASH, &keys, &same).is_ok());
    assert_eq!(
        verify(HW_KEYHASH, &keys, &other),
        Err(ImageError::WrongHardware {
            image: FIXTURE_HW,
            device: 0x0001_0204
        })
    );
    assert_eq!(
        verify(NO_HW, &keys, &same),
        Err(ImageError::MissingHardwareVersion { device: FIXTURE_HW })
    );
    let error = verify(HW_KEYHASH, &keys, &other).unwrap_err().to_string();
    assert_eq!(
        error,
        "image is for hardware 0x00010203, device hardware is 0x00010204"
    );
}

#[test]
fn wrong_key_is_refused() {
    let other = [key_from_pem(OTHER_PUBKEY_PEM)];
    // The key hash / full key names the signer: an untrusted signer.
    assert_eq!(
        verify(HW_KEYHASH, &other, &no_options()),
        Err(ImageError::KeyNotTrusted)
    );
    assert_eq!(
        verify(HW_PUBKEY, &other, &no_options()),
        Err(ImageError::KeyNotTrusted)
    );
    assert_eq!(
        verify(HW_KEYHASH, &[], &no_options()),
        Err(ImageError::KeyNotTrusted)
    );
    // Several trusted keys: the matching one is found.
    let both = [key_from_pem(OTHER_PUBKEY_PEM), fixture_key()];
    assert_eq!(
        verify(HW_PUBKEY, &both, &no_options()).map(|v| v.key_index()),
        Ok(1)
    );
}

#[test]
fn big_endian_image_is_refused() {
    let keys = [fixture_key()];
    assert_eq!(
        verify(BIG_ENDIAN, &keys, &no_options()),
        Err(ImageError::BigEndian)
    );
    assert_eq!(Image::parse(BIG_ENDIAN).unwrap_err(), ImageError::BigEndian);
    assert_eq!(
        ImageError::BigEndian.to_string(),
        "big-endian image, not supported"
    );
}

/// Errors a corrupted header or TLV info header may cause (structure), besides the hash.
fn is_structural(error: &ImageError) -> bool {
    matches!(
        error,
        ImageError::Truncated { .. }
            | ImageError::BigEndian
            | ImageError::BadMagic(_)
            | ImageError::HeaderTooSmall(_)
            | ImageError::UnsupportedFlags(_)
            | ImageError::BadTlvInfoMagic { .. }
            | ImageError::BadTlvTotal { .. }
            | ImageError::ProtectedSizeMismatch { .. }
            | ImageError::TlvOverflow { .. }
            | ImageError::BadTlvLength { .. }
            | ImageError::DuplicateTlv { .. }
            | ImageError::UnprotectedTlv { .. }
            | ImageError::MissingHash
            | ImageError::MissingSignature
    )
}

/// Byte ranges of an image: which error a flip there must give.
struct Ranges {
    header_fields: std::ops::Range<usize>,
    hashed: std::ops::Range<usize>,
    protected_info_and_headers: Vec<usize>,
    sha_value: std::ops::Range<usize>,
    key_value: std::ops::Range<usize>,
    sig_value: std::ops::Range<usize>,
}

fn ranges(bytes: &[u8]) -> Ranges {
    let image = Image::parse(bytes).unwrap();
    let layout = *image.layout();
    let mut protected = Vec::new();
    if layout.protected.len > 0 {
        let start = layout.protected.offset as usize;
        protected.extend(start..start + 4);
        let mut off = start + 4;
        for tlv in image.protected_tlvs() {
            protected.extend(off..off + 4);
            off += 4 + tlv.value.len();
        }
    }
    let value_range = |kind: u16| {
        let tlv = image.unprotected_tlvs().find(|t| t.kind == kind).unwrap();
        let start = tlv.value.as_ptr() as usize - bytes.as_ptr() as usize;
        start..start + tlv.value.len()
    };
    let key_kind = if image.unprotected_tlvs().any(|t| t.kind == TLV_KEYHASH) {
        TLV_KEYHASH
    } else {
        TLV_PUBKEY
    };
    Ranges {
        header_fields: 0..32,
        hashed: 0..layout.hashed_len() as usize,
        protected_info_and_headers: protected,
        sha_value: value_range(TLV_SHA256),
        key_value: value_range(key_kind),
        sig_value: value_range(TLV_ECDSA_SIG),
    }
}

#[test]
fn every_flipped_byte_is_refused() {
    let keys = [fixture_key()];
    let all = [
        ("signed-hw-keyhash.bin", HW_KEYHASH),
        ("signed-hw-pubkey.bin", HW_PUBKEY),
        ("signed-no-hw.bin", NO_HW),
        ("signed-extras-padded-slot.bin", EXTRAS_SLOT),
    ];
    for (name, original) in all {
        let r = ranges(original);
        let total = Image::parse(original).unwrap().layout().total_len() as usize;
        for mask in [0x01u8, 0x80, 0xff] {
            for i in 0..total {
                let mut bytes = original.to_vec();
                bytes[i] ^= mask;
                let error = verify(&bytes, &keys, &no_options())
                    .err()
                    .unwrap_or_else(|| panic!("{name}: byte {i} ^ {mask:#x} verified"));
                let structural =
                    r.header_fields.contains(&i) || r.protected_info_and_headers.contains(&i);
                let ok = if r.hashed.contains(&i) && !structural {
                    // Header padding, body, protected TLV values: only the hash can tell.
                    error == ImageError::HashMismatch
                } else if r.hashed.contains(&i) {
                    error == ImageError::HashMismatch || is_structural(&error)
                } else if r.sha_value.contains(&i) {
                    error == ImageError::HashMismatch
                } else if r.key_value.contains(&i) {
                    error == ImageError::KeyNotTrusted
                } else if r.sig_value.contains(&i) {
                    matches!(
                        error,
                        ImageError::BadSignature | ImageError::MalformedSignature
                    )
                } else {
                    // TLV info and TLV headers of the unprotected area.
                    is_structural(&error) || error == ImageError::KeyNotTrusted
                };
                assert!(ok, "{name}: byte {i} ^ {mask:#x}: unexpected {error:?}");
            }
        }
        // Bytes after the TLVs (slot padding and trailer) are not part of the image.
        for i in total..original.len() {
            let mut bytes = original.to_vec();
            bytes[i] ^= 0xff;
            assert!(
                verify(&bytes, &keys, &no_options()).is_ok(),
                "{name}: trailer byte {i}"
            );
        }
    }
}

#[test]
fn every_flipped_body_byte_is_a_hash_mismatch_with_hardware_check() {
    // Corruption is reported as such even when a hardware check is asked for.
    let keys = [fixture_key()];
    let options = VerifyOptions::new().require_hardware(0xdead_beef);
    for i in 0x200..0x200 + BODY.len() {
        let mut bytes = HW_KEYHASH.to_vec();
        bytes[i] ^= 0x55;
        assert_eq!(
            verify(&bytes, &keys, &options),
            Err(ImageError::HashMismatch)
        );
    }
}

#[test]
fn truncated_images_are_refused() {
    let keys = [fixture_key()];
    for (name, original) in plain_fixtures() {
        let hashed = Image::parse(original).unwrap().layout().hashed_len() as usize;
        for len in 0..original.len() {
            let error = verify(&original[..len], &keys, &no_options())
                .expect_err("truncated image verified");
            let expected_region = match len {
                0..32 => ImageRegion::Header,
                l if l < 0x200 => ImageRegion::Header,
                l if l < 0x200 + BODY.len() => ImageRegion::Body,
                l if l < hashed => ImageRegion::ProtectedTlvs,
                _ => ImageRegion::UnprotectedTlvs,
            };
            assert!(
                matches!(error, ImageError::Truncated { region, available, .. }
                    if region == expected_region && available as usize == len),
                "{name} cut at {len}: {error:?}"
            );
        }
    }
    let error = verify(&HW_KEYHASH[..HW_KEYHASH.len() - 1], &keys, &no_options()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "image truncated: the unprotected TLV area ends at byte {} but only {} bytes are available",
            HW_KEYHASH.len(),
            HW_KEYHASH.len() - 1
        )
    );
}

#[test]
fn shortened_tlv_total_is_refused() {
    // tlv_tot of the unprotected area one short: the signature TLV overflows the area.
    let keys = [fixture_key()];
    let image = Image::parse(HW_KEYHASH).unwrap();
    let info = image.layout().unprotected.offset as usize;
    let mut bytes = HW_KEYHASH.to_vec();
    let tot = u16::from_le_bytes([bytes[info + 2], bytes[info + 3]]) - 1;
    bytes[info + 2..info + 4].copy_from_slice(&tot.to_le_bytes());
    assert!(matches!(
        verify(&bytes, &keys, &no_options()),
        Err(ImageError::TlvOverflow {
            region: ImageRegion::UnprotectedTlvs,
            ..
        })
    ));
    // And the protected area's tlv_tot disagreeing with the header.
    let prot = image.layout().protected.offset as usize;
    let mut bytes = HW_KEYHASH.to_vec();
    bytes[prot + 2] ^= 0x04;
    assert!(matches!(
        verify(&bytes, &keys, &no_options()),
        Err(ImageError::ProtectedSizeMismatch { .. })
    ));
}

/// The keyless check a device runs when its bootloader verifies the signature:
/// everything but the signer and the signature.
#[test]
fn integrity_check_refuses_what_verify_refuses_except_the_signature() {
    let keys = [fixture_key()];
    let same = VerifyOptions::new().require_hardware(FIXTURE_HW);
    for (name, bytes) in plain_fixtures() {
        let checked = check_integrity_source(&mut &bytes[..], &no_options())
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let verified = verify(bytes, &keys, &no_options()).unwrap();
        assert_eq!(checked, *verified.checked(), "{name}");
        assert_eq!(checked.ts006_version(), 0x0102_0003);
    }
    // Hardware, as verify: refused for other hardware or without the TLV.
    assert!(check_integrity_source(&mut &HW_KEYHASH[..], &same).is_ok());
    assert_eq!(
        check_integrity_source(&mut &HW_KEYHASH[..], &same.require_hardware(0x0001_0204)),
        Err(SourceError::Image(ImageError::WrongHardware {
            image: FIXTURE_HW,
            device: 0x0001_0204
        }))
    );
    assert_eq!(
        check_integrity_source(&mut &NO_HW[..], &same),
        Err(SourceError::Image(ImageError::MissingHardwareVersion {
            device: FIXTURE_HW
        }))
    );
    // Every body byte flipped: a hash mismatch. Every cut: refused.
    for i in (0x200..0x200 + BODY.len()).step_by(7) {
        let mut bytes = HW_KEYHASH.to_vec();
        bytes[i] ^= 0x55;
        assert_eq!(
            check_integrity_source(&mut &bytes[..], &same),
            Err(SourceError::Image(ImageError::HashMismatch))
        );
    }
    for len in 0..HW_KEYHASH.len() {
        assert!(check_integrity_source(&mut &HW_KEYHASH[..len], &no_options()).is_err());
    }
    // What it leaves to the bootloader: a signature that does not verify (its last
    // byte flipped) passes here and fails verify.
    let mut forged = HW_KEYHASH.to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    assert!(check_integrity_source(&mut &forged[..], &same).is_ok());
    assert!(verify(&forged, &keys, &same).is_err());
}
