//! TS006 firmware management protocol (FPort 203, PackageIdentifier 4, version 1 only).
//!
//! Reference: `applayer.md` §4. All commands are unicast. Layouts:
//!
//! | CID | Downlink (request) | Uplink (answer) |
//! |---|---|---|
//! | 0x00 | PackageVersionReq: — | PackageVersionAns: id, version |
//! | 0x01 | DevVersionReq: — | DevVersionAns: FW(u32) HW(u32) |
//! | 0x02 | DevRebootTimeReq: time(u32) | DevRebootTimeAns: time(u32) |
//! | 0x03 | DevRebootCountdownReq: u24 | DevRebootCountdownAns: u24 |
//! | 0x04 | DevUpgradeImageReq: — | DevUpgradeImageAns: status, (next FW u32 iff status 3) |
//! | 0x05 | DevDeleteImageReq: version(u32) | DevDeleteImageAns: error bits |

use super::{
    Command, DecodeError, EncodeError, Package, PackageVersion, PackageVersionAns, Reader, Writer,
};

const CID_PACKAGE_VERSION: u8 = 0x00;
const CID_DEV_VERSION: u8 = 0x01;
const CID_DEV_REBOOT_TIME: u8 = 0x02;
const CID_DEV_REBOOT_COUNTDOWN: u8 = 0x03;
const CID_DEV_UPGRADE_IMAGE: u8 = 0x04;
const CID_DEV_DELETE_IMAGE: u8 = 0x05;

/// DevRebootTimeReq value asking for a reboot as soon as possible (no answer follows).
pub const REBOOT_TIME_ASAP: u32 = 0;
/// DevRebootTimeReq/Ans value cancelling a programmed reboot.
pub const REBOOT_TIME_CANCEL: u32 = 0xFFFF_FFFF;
/// DevRebootCountdownReq value asking for a reboot as soon as possible (no answer).
pub const REBOOT_COUNTDOWN_ASAP: u32 = 0;
/// DevRebootCountdownReq/Ans value cancelling a programmed reboot.
pub const REBOOT_COUNTDOWN_CANCEL: u32 = 0x00FF_FFFF;

/// Server → device commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Downlink {
    /// PackageVersionReq.
    PackageVersionReq,
    /// DevVersionReq: asks for the running firmware and hardware versions.
    DevVersionReq,
    /// DevRebootTimeReq: reboot at this GPS time (seconds); 0 = as soon as possible,
    /// 0xFFFFFFFF = cancel.
    DevRebootTimeReq {
        /// GPS seconds, or [`REBOOT_TIME_ASAP`] / [`REBOOT_TIME_CANCEL`].
        reboot_time: u32,
    },
    /// DevRebootCountdownReq: reboot after this many seconds (24 bits); 0 = as soon as
    /// possible, 0xFFFFFF = cancel.
    DevRebootCountdownReq {
        /// Seconds, or [`REBOOT_COUNTDOWN_ASAP`] / [`REBOOT_COUNTDOWN_CANCEL`].
        countdown: u32,
    },
    /// DevUpgradeImageReq: asks for the status of the stored upgrade image.
    DevUpgradeImageReq,
    /// DevDeleteImageReq: delete the stored image of this firmware version.
    DevDeleteImageReq {
        /// FirmwareToDeleteVersion.
        firmware_version: u32,
    },
}

/// Status of the upgrade image stored on a device (DevUpgradeImageAns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpgradeImageStatus {
    /// 0: no upgrade image present.
    NoImage,
    /// 1: image present but corrupt or its signature is wrong.
    CorruptOrBadSignature,
    /// 2: authentic image, but for another hardware platform.
    WrongHardware,
    /// 3: valid image ready to install; the firmware version it will run.
    Valid {
        /// nextFirmwareVersion.
        next_firmware_version: u32,
    },
}

impl UpgradeImageStatus {
    /// The UpImageStatus code (0..3).
    pub const fn code(&self) -> u8 {
        match self {
            UpgradeImageStatus::NoImage => 0,
            UpgradeImageStatus::CorruptOrBadSignature => 1,
            UpgradeImageStatus::WrongHardware => 2,
            UpgradeImageStatus::Valid { .. } => 3,
        }
    }
}

/// Device → server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Uplink {
    /// PackageVersionAns.
    PackageVersionAns(PackageVersionAns),
    /// DevVersionAns: running firmware and hardware versions.
    DevVersionAns {
        /// FW version (manufacturer-defined; see `image::version` for ours).
        firmware_version: u32,
        /// HW version.
        hardware_version: u32,
    },
    /// DevRebootTimeAns: seconds until the reboot; 0 = cannot reboot then,
    /// 0xFFFFFFFF = cancellation acknowledged.
    DevRebootTimeAns {
        /// Seconds until reboot, 0 or [`REBOOT_TIME_CANCEL`].
        reboot_time: u32,
    },
    /// DevRebootCountdownAns: seconds until reboot (24 bits); 0 = error,
    /// 0xFFFFFF = cancelled.
    DevRebootCountdownAns {
        /// Seconds until reboot, 0 or [`REBOOT_COUNTDOWN_CANCEL`].
        countdown: u32,
    },
    /// DevUpgradeImageAns.
    DevUpgradeImageAns(UpgradeImageStatus),
    /// DevDeleteImageAns: both flags false means the image was deleted.
    DevDeleteImageAns {
        /// Bit 1 ErrorInvalidVersion: the version does not match the stored image.
        error_invalid_version: bool,
        /// Bit 0 ErrorNoValidImage: no valid image stored.
        error_no_valid_image: bool,
    },
}

impl Command<'_> for Downlink {
    const PACKAGE: Package = Package::FirmwareManagement;

    fn decode(r: &mut Reader<'_>, _version: PackageVersion) -> Result<Self, DecodeError> {
        Ok(match r.begin_command()? {
            CID_PACKAGE_VERSION => Downlink::PackageVersionReq,
            CID_DEV_VERSION => Downlink::DevVersionReq,
            CID_DEV_REBOOT_TIME => Downlink::DevRebootTimeReq {
                reboot_time: r.u32_le()?,
            },
            CID_DEV_REBOOT_COUNTDOWN => Downlink::DevRebootCountdownReq {
                countdown: r.u24_le()?,
            },
            CID_DEV_UPGRADE_IMAGE => Downlink::DevUpgradeImageReq,
            CID_DEV_DELETE_IMAGE => Downlink::DevDeleteImageReq {
                firmware_version: r.u32_le()?,
            },
            _ => return Err(r.unknown_cid()),
        })
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match *self {
            Downlink::PackageVersionReq => w.u8(CID_PACKAGE_VERSION),
            Downlink::DevVersionReq => w.u8(CID_DEV_VERSION),
            Downlink::DevRebootTimeReq { reboot_time } => {
                w.u8(CID_DEV_REBOOT_TIME)?;
                w.u32_le(reboot_time)
            }
            Downlink::DevRebootCountdownReq { countdown } => {
                w.u8(CID_DEV_REBOOT_COUNTDOWN)?;
                w.u24_le(countdown, "Countdown")
            }
            Downlink::DevUpgradeImageReq => w.u8(CID_DEV_UPGRADE_IMAGE),
            Downlink::DevDeleteImageReq { firmware_version } => {
                w.u8(CID_DEV_DELETE_IMAGE)?;
                w.u32_le(firmware_version)
            }
        }
    }
}

impl Command<'_> for Uplink {
    const PACKAGE: Package = Package::FirmwareManagement;

    fn decode(r: &mut Reader<'_>, _version: PackageVersion) -> Result<Self, DecodeError> {
        Ok(match r.begin_command()? {
            CID_PACKAGE_VERSION => Uplink::PackageVersionAns(PackageVersionAns::decode(r)?),
            CID_DEV_VERSION => Uplink::DevVersionAns {
                firmware_version: r.u32_le()?,
                hardware_version: r.u32_le()?,
            },
            CID_DEV_REBOOT_TIME => Uplink::DevRebootTimeAns {
                reboot_time: r.u32_le()?,
            },
            CID_DEV_REBOOT_COUNTDOWN => Uplink::DevRebootCountdownAns {
                countdown: r.u24_le()?,
            },
            CID_DEV_UPGRADE_IMAGE => {
                // Values 0..3 live in bits 1:0; the other bits are RFU.
                let status = match r.u8()? & 0x03 {
                    0 => UpgradeImageStatus::NoImage,
                    1 => UpgradeImageStatus::CorruptOrBadSignature,
                    2 => UpgradeImageStatus::WrongHardware,
                    _ => UpgradeImageStatus::Valid {
                        next_firmware_version: r.u32_le()?,
                    },
                };
                Uplink::DevUpgradeImageAns(status)
            }
            CID_DEV_DELETE_IMAGE => {
                let status = r.u8()?;
                Uplink::DevDeleteImageAns {
                    error_invalid_version: status & 0x02 != 0,
                    error_no_valid_image: status & 0x01 != 0,
                }
            }
            _ => return Err(r.unknown_cid()),
        })
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match *self {
            Uplink::PackageVersionAns(answer) => {
                w.u8(CID_PACKAGE_VERSION)?;
                answer.encode(w)
            }
            Uplink::DevVersionAns {
                firmware_version,
                hardware_version,
            } => {
                w.u8(CID_DEV_VERSION)?;
                w.u32_le(firmware_version)?;
                w.u32_le(hardware_version)
            }
            Uplink::DevRebootTimeAns { reboot_time } => {
                w.u8(CID_DEV_REBOOT_TIME)?;
                w.u32_le(reboot_time)
            }
            Uplink::DevRebootCountdownAns { countdown } => {
                w.u8(CID_DEV_REBOOT_COUNTDOWN)?;
                w.u24_le(countdown, "Countdown")
            }
            Uplink::DevUpgradeImageAns(status) => {
                w.u8(CID_DEV_UPGRADE_IMAGE)?;
                w.u8(status.code())?;
                if let UpgradeImageStatus::Valid {
                    next_firmware_version,
                } = status
                {
                    w.u32_le(next_firmware_version)?;
                }
                Ok(())
            }
            Uplink::DevDeleteImageAns {
                error_invalid_version,
                error_no_valid_image,
            } => {
                w.u8(CID_DEV_DELETE_IMAGE)?;
                w.u8(u8::from(error_invalid_version) << 1 | u8::from(error_no_valid_image))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_image_answer_ignores_rfu_bits_and_reads_version_only_for_status_3() {
        let answer = Uplink::decode_single(&[0x04, 0xfc], PackageVersion::V1);
        assert_eq!(
            answer,
            Ok(Uplink::DevUpgradeImageAns(UpgradeImageStatus::NoImage))
        );
        let truncated = Uplink::decode_single(&[0x04, 0x03, 0x01], PackageVersion::V1);
        assert!(matches!(
            truncated,
            Err(DecodeError::Truncated { cid: 4, .. })
        ));
    }

    #[test]
    fn countdown_over_24_bits_is_refused() {
        let mut out = [0u8; 8];
        let result = Downlink::DevRebootCountdownReq {
            countdown: 0x0100_0000,
        }
        .encode_to(&mut out);
        assert!(matches!(result, Err(EncodeError::InvalidField { .. })));
    }
}
