//! Device configuration: region, FUOTA versions and application settings. The device's
//! identity and root keys are not here: they come from its provisioning record in OTP
//! (`fuota_device::provisioning`), written per device at manufacturing.
//!
//! With the `bench-credentials` feature, a device without a provisioning record uses the
//! placeholders below instead: the same in every image built so, for bench work only.
//! Never ship an image built with it.
use core::time::Duration;

use fuota_device::{Credentials, LinkConfig, ProvisioningRecord, DEFAULT_TRIAL_DEADLINE};
use lorawan_device::region::{Region, DR};

/// The placeholder identity of a bench image (`bench-credentials`), if this is one.
pub fn bench_credentials() -> Option<ProvisioningRecord> {
    #[cfg(feature = "bench-credentials")]
    {
        const KEY: [u8; 16] = [
            0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF,
            0x4F, 0x3C,
        ];
        Some(ProvisioningRecord {
            credentials: Credentials {
                dev_eui: [0, 0, 0, 0, 0, 0, 0, 1],
                join_eui: [0; 8],
                app_key: KEY,
            },
            gen_app_key: KEY,
        })
    }
    #[cfg(not(feature = "bench-credentials"))]
    None
}

/// Regional parameters.
pub const REGION: Region = Region::EU868;

/// FPort of the periodic application uplink.
pub const UPLINK_FPORT: u8 = 1;

/// Time between periodic uplinks (the duty-cycle gate may stretch it).
pub const UPLINK_PERIOD: Duration = Duration::from_secs(300);

/// Every this many periodic uplinks, one is sent confirmed: the link check that tells a
/// resumed session the network server no longer knows (a restored database, a device
/// moved to another network) from a quiet one.
pub const CONFIRMED_UPLINK_EVERY: u32 = 12;

/// Confirmed uplinks in a row without an acknowledgement after which the session is
/// taken as lost and the device joins again (at one per hour: three hours).
pub const REJOIN_AFTER_UNANSWERED: u32 = 3;

/// Start with the session saved before the reset instead of joining again (see
/// `fuota_device::mac_state` for what a restored session does not keep).
pub const RESUME_SESSION_AFTER_RESET: bool = true;

/// The data rates join requests try in turn (EU868: SF7 down to SF12), from the first
/// again after each join; the session's uplinks keep the one its join was accepted at.
/// One round costs about 3 s of airtime, so the join backoff's first hour allows a dozen.
pub const JOIN_DATA_RATES: &[DR] = &[DR::_5, DR::_4, DR::_3, DR::_2, DR::_1, DR::_0];

/// Hardware version of this board (TS006 HWVersion); an image built for another
/// (its protected TLV 0xa0) is refused before it is installed.
pub const HARDWARE_VERSION: u32 = 0x0001_0000;

/// The TS006 firmware version reported when the running image has no MCUboot header
/// (flashed on a bench without the bootloader).
pub const UNSIGNED_FIRMWARE_VERSION: u32 = 0;

/// Largest application payload of an uplink: EU868's limit at DR0-DR2 (51 bytes), so
/// every answer fits whatever data rate the device uses.
pub const MAX_UPLINK_PAYLOAD: usize = 51;

/// RAM lent to the FEC decoder (see `lorawan_fuota::fec::Decoder::sizing`): the more,
/// the more lost fragments a block survives. The agent's simulator lends its nodes the
/// same.
pub const FEC_WORKSPACE_BYTES: usize = 16 * 1024;

/// The link's configuration: the constants above and the device's credentials.
pub fn link_config(credentials: Credentials) -> LinkConfig {
    LinkConfig {
        credentials,
        region: REGION,
        resume_session_after_reset: RESUME_SESSION_AFTER_RESET,
        uplink_fport: UPLINK_FPORT,
        uplink_period: UPLINK_PERIOD,
        confirmed_uplink_every: CONFIRMED_UPLINK_EVERY,
        rejoin_after_unanswered: REJOIN_AFTER_UNANSWERED,
        trial_deadline: DEFAULT_TRIAL_DEADLINE,
        join_data_rates: JOIN_DATA_RATES,
    }
}
