//! Image versions, and the one mapping between MCUboot versions and TS006 versions.
//!
//! MCUboot versions are `major.minor.revision+build` (u8, u8, u16, u32). TS006
//! (firmware management) carries a single 32-bit firmware version: in DevVersionAns
//! (`FWVersion`), in DevUpgradeImageAns (`nextFirmwareVersion`) and in DevDeleteImageReq.
//! This project maps one to the other in exactly one way:
//!
//! ```text
//! ts006 = major << 24 | minor << 16 | revision
//! ```
//!
//! This is also the value `imgtool sign --security-counter auto` writes, so an image's
//! security counter and its TS006 version agree.
//!
//! The build number is **not** carried: two images that differ only in build number
//! (`1.2.3+4` and `1.2.3+5`) have the same TS006 version. Anti-rollback therefore
//! compares TS006 versions only ([`compare_ts006`]): a candidate with a lower TS006
//! version is a rollback and must be refused; an equal one is not a rollback (as with
//! MCUboot's downgrade prevention, which ignores the build number by default), but it is
//! not an upgrade either: a campaign should not send it to a device already reporting
//! that version. Give each release its own `major.minor.revision`.
//!
//! The inverse, [`ImageVersion::from_ts006`], gives build number 0.

use core::cmp::Ordering;
use core::fmt;

/// An MCUboot image version, `major.minor.revision+build`.
///
/// The derived ordering is MCUboot's full order (build number last); anti-rollback
/// uses [`compare_ts006`] instead, which ignores the build number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ImageVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Revision.
    pub revision: u16,
    /// Build number (not carried in the TS006 version).
    pub build: u32,
}

impl ImageVersion {
    /// A version from its four parts.
    pub const fn new(major: u8, minor: u8, revision: u16, build: u32) -> Self {
        Self {
            major,
            minor,
            revision,
            build,
        }
    }

    /// The TS006 32-bit firmware version: `major << 24 | minor << 16 | revision`.
    /// The build number is dropped.
    pub const fn to_ts006(self) -> u32 {
        (self.major as u32) << 24 | (self.minor as u32) << 16 | self.revision as u32
    }

    /// The MCUboot version for a TS006 firmware version, with build number 0.
    pub const fn from_ts006(version: u32) -> Self {
        Self {
            major: (version >> 24) as u8,
            minor: (version >> 16) as u8,
            revision: version as u16,
            build: 0,
        }
    }
}

impl fmt::Display for ImageVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}+{}",
            self.major, self.minor, self.revision, self.build
        )
    }
}

/// How a candidate image's version relates to the running one, for anti-rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionChange {
    /// The candidate's TS006 version is higher: an upgrade.
    Upgrade,
    /// Same TS006 version (possibly another build number): neither upgrade nor rollback.
    Same,
    /// The candidate's TS006 version is lower: a rollback, to be refused.
    Rollback,
}

impl VersionChange {
    /// True when the candidate must be refused by anti-rollback.
    pub const fn is_rollback(self) -> bool {
        matches!(self, VersionChange::Rollback)
    }
}

/// Compares a candidate TS006 version with the running one (plain unsigned order of the
/// 32-bit values, which is the order of `major`, then `minor`, then `revision`).
pub fn compare_ts006(running: u32, candidate: u32) -> VersionChange {
    match candidate.cmp(&running) {
        Ordering::Greater => VersionChange::Upgrade,
        Ordering::Equal => VersionChange::Same,
        Ordering::Less => VersionChange::Rollback,
    }
}
