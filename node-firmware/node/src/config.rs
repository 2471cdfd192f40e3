//! The node's configuration: package versions and ports, the device's keys and versions,
//! how much of its memory a fragmentation session may claim, and the timing of clock
//! synchronisation requests. Built once by the firmware; [`NodeConfig::new`] gives the
//! defaults.

use lorawan_fuota::codec::{Package, PackageVersion};
use lorawan_fuota::crypto::multicast::LorawanVersion;
use lorawan_fuota::crypto::Key128;
use lorawan_fuota::image::TrustedKey;

/// Most trusted image-signing keys a node holds.
pub const MAX_TRUSTED_KEYS: usize = 4;

/// Largest uplink payload the node ever builds (EU868 DR7); see
/// [`NodeConfig::max_uplink_payload`] for the one it actually uses.
pub const MAX_UPLINK_PAYLOAD: usize = 242;

/// The FPort of each package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuotaPorts {
    /// TS003 clock synchronisation (default 202).
    pub clock_sync: u8,
    /// TS005 remote multicast setup (default 200).
    pub multicast_setup: u8,
    /// TS004 fragmented data block transport (default 201).
    pub fragmentation: u8,
    /// TS006 firmware management (default 203).
    pub firmware_management: u8,
}

impl Default for FuotaPorts {
    fn default() -> Self {
        FuotaPorts {
            clock_sync: Package::ClockSync.default_fport(),
            multicast_setup: Package::MulticastSetup.default_fport(),
            fragmentation: Package::Fragmentation.default_fport(),
            firmware_management: Package::FirmwareManagement.default_fport(),
        }
    }
}

impl FuotaPorts {
    /// The package on `fport`, if any.
    pub fn package(&self, fport: u8) -> Option<Package> {
        if fport == self.clock_sync {
            Some(Package::ClockSync)
        } else if fport == self.multicast_setup {
            Some(Package::MulticastSetup)
        } else if fport == self.fragmentation {
            Some(Package::Fragmentation)
        } else if fport == self.firmware_management {
            Some(Package::FirmwareManagement)
        } else {
            None
        }
    }
}

/// When the node asks for the time (TS003).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSyncSettings {
    /// Send an AppTimeReq as soon as the node starts with an unsynchronised clock.
    pub sync_at_start: bool,
    /// While unsynchronised, repeat AppTimeReq this often (seconds).
    pub unsynchronised_retry_secs: u32,
    /// Spacing of the AppTimeReq uplinks of a ForceDeviceResync (seconds).
    pub forced_resync_interval_secs: u32,
    /// Random jitter (±, seconds) added to periodic requests
    /// (DeviceAppTimePeriodicityReq), so a fleet does not ask at the same instant.
    pub periodic_jitter_secs: u32,
}

impl Default for ClockSyncSettings {
    fn default() -> Self {
        ClockSyncSettings {
            sync_at_start: true,
            unsynchronised_retry_secs: 300,
            forced_resync_interval_secs: 30,
            periodic_jitter_secs: 30,
        }
    }
}

/// Everything the node needs to know about the device it runs on.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// FPorts of the four packages.
    pub ports: FuotaPorts,
    /// TS003 version the device implements (answers PackageVersionReq, selects the
    /// saturation rule).
    pub clock_sync_version: PackageVersion,
    /// TS005 version (session answer layout, StartMissed).
    pub multicast_setup_version: PackageVersion,
    /// TS004 version (setup/status layouts, parity rows, MIC).
    pub fragmentation_version: PackageVersion,
    /// LoRaWAN MAC version, which selects the McRootKey derivation.
    pub lorawan_version: LorawanVersion,
    /// Root key of the application packages: GenAppKey for LoRaWAN 1.0.x, AppKey for
    /// 1.1. McKEKey (TS005) and DataBlockIntKey (TS004 v2) derive from it.
    pub root_key: Key128,
    /// TS006 version of the running firmware (`image::ImageVersion::to_ts006` of the
    /// running image).
    pub firmware_version: u32,
    /// TS006 hardware version; images must carry the same one.
    pub hardware_version: u32,
    /// Keys images may be signed with.
    pub trusted_keys: heapless::Vec<TrustedKey, MAX_TRUSTED_KEYS>,
    /// Verify a downloaded image's signature against `trusted_keys` before handing it
    /// to the bootloader (true by default). False leaves the signature to the
    /// bootloader, which verifies it before installing anything; the node still checks
    /// structure, SHA-256, hardware version and downgrade. Without the crate's
    /// `signature-check` feature (the STM32WL application) the node cannot verify
    /// signatures, and this is taken as false.
    pub verify_signature: bool,
    /// Multicast groups supported (McGroupID `0..multicast_groups`), 1..=4.
    pub multicast_groups: u8,
    /// Fragmentation session indexes supported (FragIndex `0..fragmentation_indexes`),
    /// 1..=4. One session uses the download slot at a time.
    pub fragmentation_indexes: u8,
    /// Upper bound of the FEC decoder's capacity (L_max, the uncoded fragments it can
    /// rebuild) as a share of NbFrag; within it the decoder gets as much as the
    /// workspace and the log allow. 100 = no bound but RAM and log.
    pub fec_capacity_percent: u8,
    /// Smallest such share accepted: below it FragSessionSetupReq is refused with "not
    /// enough memory".
    pub fec_minimum_percent: u8,
    /// Largest uplink payload to build (keep it within the lowest data rate in use:
    /// 51 bytes for EU868 DR0). At most [`MAX_UPLINK_PAYLOAD`].
    pub max_uplink_payload: usize,
    /// Clock synchronisation timing.
    pub clock_sync: ClockSyncSettings,
    /// How many times FragDataBlockReceivedReq (TS004 v2) is sent before giving up when
    /// no FragDataBlockReceivedAns comes.
    pub block_received_attempts: u8,
}

impl NodeConfig {
    /// Defaults: all packages at version 2 on their default ports, LoRaWAN 1.0.x, one
    /// multicast group, one fragmentation index, an FEC decoder as large as RAM and log
    /// allow (at least 5 % of NbFrag), 51-byte uplinks, no trusted key (add them to
    /// `trusted_keys`).
    pub fn new(root_key: Key128, firmware_version: u32, hardware_version: u32) -> Self {
        NodeConfig {
            ports: FuotaPorts::default(),
            clock_sync_version: PackageVersion::V2,
            multicast_setup_version: PackageVersion::V2,
            fragmentation_version: PackageVersion::V2,
            lorawan_version: LorawanVersion::V1_0,
            root_key,
            firmware_version,
            hardware_version,
            trusted_keys: heapless::Vec::new(),
            verify_signature: true,
            multicast_groups: 1,
            fragmentation_indexes: 1,
            fec_capacity_percent: 100,
            fec_minimum_percent: 5,
            max_uplink_payload: 51,
            clock_sync: ClockSyncSettings::default(),
            block_received_attempts: 8,
        }
    }

    /// Every package version set to `version` (TS006 has only version 1).
    pub fn with_package_versions(mut self, version: PackageVersion) -> Self {
        self.clock_sync_version = version;
        self.multicast_setup_version = version;
        self.fragmentation_version = version;
        self
    }

    /// The uplink payload limit actually used (clamped to 3..=[`MAX_UPLINK_PAYLOAD`]).
    pub(crate) fn uplink_limit(&self) -> usize {
        self.max_uplink_payload.clamp(3, MAX_UPLINK_PAYLOAD)
    }
}
