//! Device configuration: LoRaWAN credentials, region and application settings.
//!
//! PROVISIONING IS NOT BUILT YET. The credentials below are compile-time placeholders for
//! bench work, identical in every image built from this source. Real devices must get their
//! own DevEUI, JoinEUI and AppKey from a provisioning step (a per-device record in flash,
//! written at manufacturing) that replaces these constants. Never ship them.
use embassy_time::Duration;
use lorawan_device::region::Region;

/// DevEUI, most significant byte first (as network servers display it).
pub const DEV_EUI_MSB: [u8; 8] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01];

/// JoinEUI (AppEUI in LoRaWAN 1.0.x), most significant byte first.
pub const JOIN_EUI_MSB: [u8; 8] = [0x00; 8];

/// AppKey (root key of LoRaWAN 1.0.x OTAA), in the order network servers display it.
pub const APP_KEY: [u8; 16] = [
    0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF, 0x4F, 0x3C,
];

/// Regional parameters.
pub const REGION: Region = Region::EU868;

/// FPort of the periodic application uplink.
pub const UPLINK_FPORT: u8 = 1;

/// Time between periodic uplinks (the duty-cycle gate may stretch it).
pub const UPLINK_PERIOD: Duration = Duration::from_secs(300);

/// Listen in Class C between uplinks once joined. Off by default: LoRaWAN devices start in
/// Class A, and the FUOTA packages switch to Class C only for a multicast session.
pub const CLASS_C_AFTER_JOIN: bool = false;

/// lorawan-device takes EUIs least significant byte first (the on-air order).
pub const fn eui_lsb_first(msb_first: [u8; 8]) -> [u8; 8] {
    let mut lsb_first = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        lsb_first[i] = msb_first[7 - i];
        i += 1;
    }
    lsb_first
}
