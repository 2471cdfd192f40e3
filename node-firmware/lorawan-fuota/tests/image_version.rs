//! The MCUboot ↔ TS006 version mapping, anti-rollback comparison and the hardware
//! version TLV encoding.

use lorawan_fuota::image::{
    compare_ts006, decode_hardware_version, encode_hardware_version, ImageError, ImageVersion,
    VersionChange, TLV_HARDWARE_VERSION,
};
use proptest::prelude::*;

#[test]
fn ts006_mapping_examples() {
    assert_eq!(ImageVersion::new(1, 2, 3, 4).to_ts006(), 0x0102_0003);
    assert_eq!(
        ImageVersion::new(255, 255, 65535, u32::MAX).to_ts006(),
        u32::MAX
    );
    assert_eq!(ImageVersion::new(0, 0, 0, 7).to_ts006(), 0);
    assert_eq!(
        ImageVersion::from_ts006(0x0102_0003),
        ImageVersion::new(1, 2, 3, 0)
    );
    // TS006 test vector "DevUpgradeImageAns status 3, next FW 0x01020304".
    assert_eq!(
        ImageVersion::from_ts006(0x0102_0304).to_string(),
        "1.2.772+0"
    );
}

#[test]
fn build_number_is_not_carried() {
    let a = ImageVersion::new(1, 2, 3, 4);
    let b = ImageVersion::new(1, 2, 3, 5);
    assert_eq!(a.to_ts006(), b.to_ts006());
    assert!(a < b, "MCUboot's full order still sees the build");
    assert_eq!(
        compare_ts006(a.to_ts006(), b.to_ts006()),
        VersionChange::Same
    );
    assert!(!compare_ts006(b.to_ts006(), a.to_ts006()).is_rollback());
}

#[test]
fn anti_rollback() {
    let running = ImageVersion::new(2, 0, 0, 0).to_ts006();
    assert_eq!(
        compare_ts006(running, ImageVersion::new(2, 0, 1, 0).to_ts006()),
        VersionChange::Upgrade
    );
    assert_eq!(
        compare_ts006(running, ImageVersion::new(1, 255, 65535, 9).to_ts006()),
        VersionChange::Rollback
    );
    assert!(VersionChange::Rollback.is_rollback());
    assert!(!VersionChange::Upgrade.is_rollback());
    assert!(!VersionChange::Same.is_rollback());
}

#[test]
fn hardware_version_tlv_encoding() {
    // `imgtool sign --custom-tlv 0xa0 0x00010203` stores 00 01 02 03.
    assert_eq!(TLV_HARDWARE_VERSION, 0xa0);
    assert_eq!(
        encode_hardware_version(0x0001_0203),
        [0x00, 0x01, 0x02, 0x03]
    );
    assert_eq!(
        decode_hardware_version(&[0x00, 0x01, 0x02, 0x03]),
        Ok(0x0001_0203)
    );
    assert_eq!(
        decode_hardware_version(&[1, 2, 3]),
        Err(ImageError::BadTlvLength {
            kind: TLV_HARDWARE_VERSION,
            len: 3
        })
    );
}

proptest! {
    #[test]
    fn ts006_round_trip(v in any::<u32>()) {
        prop_assert_eq!(ImageVersion::from_ts006(v).to_ts006(), v);
    }

    #[test]
    fn mapping_drops_only_the_build(major: u8, minor: u8, revision: u16, build: u32) {
        let version = ImageVersion::new(major, minor, revision, build);
        let back = ImageVersion::from_ts006(version.to_ts006());
        prop_assert_eq!(back, ImageVersion { build: 0, ..version });
    }

    /// Comparing TS006 values orders versions like MCUboot without the build number.
    #[test]
    fn ts006_order_matches_version_order(
        a in (any::<u8>(), any::<u8>(), any::<u16>()),
        b in (any::<u8>(), any::<u8>(), any::<u16>()),
    ) {
        let va = ImageVersion::new(a.0, a.1, a.2, 0);
        let vb = ImageVersion::new(b.0, b.1, b.2, 0);
        let expected = match vb.cmp(&va) {
            std::cmp::Ordering::Greater => VersionChange::Upgrade,
            std::cmp::Ordering::Equal => VersionChange::Same,
            std::cmp::Ordering::Less => VersionChange::Rollback,
        };
        prop_assert_eq!(compare_ts006(va.to_ts006(), vb.to_ts006()), expected);
    }

    #[test]
    fn hardware_version_round_trip(hw in any::<u32>()) {
        prop_assert_eq!(decode_hardware_version(&encode_hardware_version(hw)), Ok(hw));
    }
}
