//! TS006 firmware management protocol, device side (FPort 203, version 1): versions,
//! the programmed reboot, and the status of the image in the download slot.
//!
//! - DevVersionAns: the running firmware's TS006 version (`image::version` mapping of
//!   the running image) and the hardware version, both from the configuration.
//! - DevRebootTimeReq: 0 = reboot as soon as possible (no answer); 0xFFFFFFFF = cancel
//!   (answered 0xFFFFFFFF); a GPS time in the future is scheduled and answered with the
//!   seconds left; a time in the past, or any time while the clock is unsynchronised,
//!   is answered 0 (and a clock synchronisation is started).
//! - DevRebootCountdownReq: 0 = as soon as possible (no answer); 0xFFFFFF = cancel;
//!   otherwise a reboot that many seconds from now. One programmed reboot exists; each
//!   request replaces it.
//! - DevUpgradeImageReq: the slot's block is verified as a signed image
//!   (`lorawan_fuota::image`, read chunk-wise from flash, with the trusted keys and the
//!   device's hardware version): 0 no image (no complete block), 1 corrupt, badly signed,
//!   failed its TS004 MIC, or a downgrade (the bootloader would refuse it), 2 authentic
//!   but for other hardware, 3 valid, with its version. The result is cached until the
//!   slot changes.
//! - DevDeleteImageReq: ErrorNoValidImage without a valid image, ErrorInvalidVersion if
//!   the version differs; otherwise the image is erased.
//!
//! When the programmed reboot is due, a valid image is handed to the bootloader through
//! [`crate::UpdateAgent`] and `Action::Reboot` tells whether that worked; after the
//! reset, `update` settles what the bootloader did with it (a refused or reverted image
//! is reported as UpImageStatus 1 or 2 and never handed over again).

use lorawan_fuota::codec::firmware_management::{
    Downlink, UpgradeImageStatus, Uplink, REBOOT_COUNTDOWN_ASAP, REBOOT_COUNTDOWN_CANCEL,
    REBOOT_TIME_ASAP, REBOOT_TIME_CANCEL,
};
use lorawan_fuota::codec::{decode_all, Package, PackageVersion, PackageVersionAns};
#[cfg(feature = "signature-check")]
use lorawan_fuota::image::verify_source;
use lorawan_fuota::image::{
    check_integrity_source, compare_ts006, CheckedImage, ImageError, SourceError, TrustedKey,
    VerifyOptions,
};

use crate::clock_sync::ClockSyncClient;
use crate::config::MAX_TRUSTED_KEYS;
use crate::fragment_store::{FragmentStore, SlotContent};
use crate::outbox::Outbox;
use crate::platform::{PendingUpdate, Platform};
use crate::report::PackageReport;
use crate::time::{DeviceClock, Instant};
use crate::update::{RunningImage, SlotVerdict};

/// The programmed reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RebootSchedule {
    /// At a local instant (countdown, ASAP).
    Local(Instant),
    /// At a GPS time (on-air seconds), converted with the clock when polled.
    Gps(u32),
}

/// The verified state of the download slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageCheck {
    /// What DevUpgradeImageAns reports.
    pub status: UpgradeImageStatus,
    /// For a valid image, what the bootloader is told at reboot.
    pub update: Option<PendingUpdate>,
    /// Why the image was refused, if it was verified and refused.
    pub error: Option<ImageError>,
}

/// TS006 state; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct FirmwareManagement {
    firmware_version: u32,
    hardware_version: u32,
    #[cfg_attr(not(feature = "signature-check"), allow(dead_code))]
    trusted_keys: heapless::Vec<TrustedKey, MAX_TRUSTED_KEYS>,
    /// Verify signatures (see `NodeConfig::verify_signature`).
    #[cfg_attr(not(feature = "signature-check"), allow(dead_code))]
    verify_signature: bool,
    reboot: Option<RebootSchedule>,
    cached: Option<ImageCheck>,
    /// TS006 version of the image handed to the bootloader (persisted), until the
    /// next start settles what became of it.
    pub handed_over: Option<u32>,
}

impl FirmwareManagement {
    pub fn new(
        firmware_version: u32,
        hardware_version: u32,
        trusted_keys: heapless::Vec<TrustedKey, MAX_TRUSTED_KEYS>,
        verify_signature: bool,
    ) -> Self {
        FirmwareManagement {
            firmware_version,
            hardware_version,
            trusted_keys,
            verify_signature,
            reboot: None,
            cached: None,
            handed_over: None,
        }
    }

    /// Forgets the cached image verification (the slot changed).
    pub fn slot_changed(&mut self) {
        self.cached = None;
    }

    /// Handles one FRMPayload received on the TS006 port; returns the report and
    /// whether the slot content changed (image deleted).
    pub fn handle<P: Platform>(
        &mut self,
        now: Instant,
        payload: &[u8],
        fport: u8,
        outbox: &mut Outbox,
        clock: &mut ClockSyncClient,
        store: &mut FragmentStore<'_, P>,
    ) -> (PackageReport, bool) {
        let mut report = PackageReport::new(Package::FirmwareManagement);
        let mut slot_changed = false;
        for command in decode_all::<Downlink>(payload, PackageVersion::V1) {
            let command = match command {
                Ok(command) => command,
                Err(error) => {
                    report.decode_error = Some(error);
                    break;
                }
            };
            report.handled();
            let answer = match command {
                Downlink::PackageVersionReq => Uplink::PackageVersionAns(
                    PackageVersionAns::for_package(Package::FirmwareManagement, PackageVersion::V1),
                ),
                Downlink::DevVersionReq => Uplink::DevVersionAns {
                    firmware_version: self.firmware_version,
                    hardware_version: self.hardware_version,
                },
                Downlink::DevRebootTimeReq { reboot_time } => {
                    match self.reboot_time_request(now, reboot_time, clock) {
                        Some(answer) => Uplink::DevRebootTimeAns {
                            reboot_time: answer,
                        },
                        None => continue,
                    }
                }
                Downlink::DevRebootCountdownReq { countdown } => match countdown {
                    REBOOT_COUNTDOWN_ASAP => {
                        self.reboot = Some(RebootSchedule::Local(now));
                        continue;
                    }
                    REBOOT_COUNTDOWN_CANCEL => {
                        self.reboot = None;
                        Uplink::DevRebootCountdownAns {
                            countdown: REBOOT_COUNTDOWN_CANCEL,
                        }
                    }
                    seconds => {
                        self.reboot = Some(RebootSchedule::Local(now.plus_secs(seconds.into())));
                        Uplink::DevRebootCountdownAns { countdown: seconds }
                    }
                },
                Downlink::DevUpgradeImageReq => {
                    Uplink::DevUpgradeImageAns(self.check_image(store).status)
                }
                Downlink::DevDeleteImageReq { firmware_version } => {
                    let check = self.check_image(store);
                    let (error_no_valid_image, error_invalid_version) = match check.status {
                        UpgradeImageStatus::Valid {
                            next_firmware_version,
                        } if next_firmware_version == firmware_version => {
                            let block_len = match store.content {
                                SlotContent::Complete { block_len, .. }
                                | SlotContent::Refused { block_len, .. } => block_len,
                                _ => 0,
                            };
                            let deleted = store.delete_image(block_len).is_ok();
                            self.cached = None;
                            slot_changed = true;
                            (!deleted, false)
                        }
                        UpgradeImageStatus::Valid { .. } => (false, true),
                        _ => (true, false),
                    };
                    Uplink::DevDeleteImageAns {
                        error_invalid_version,
                        error_no_valid_image,
                    }
                }
            };
            outbox.push(now, fport, &answer);
        }
        (report, slot_changed)
    }

    /// The DevRebootTimeAns value, or `None` for "as soon as possible" (no answer).
    fn reboot_time_request(
        &mut self,
        now: Instant,
        reboot_time: u32,
        clock: &mut ClockSyncClient,
    ) -> Option<u32> {
        match reboot_time {
            REBOOT_TIME_ASAP => {
                self.reboot = Some(RebootSchedule::Local(now));
                None
            }
            REBOOT_TIME_CANCEL => {
                self.reboot = None;
                Some(REBOOT_TIME_CANCEL)
            }
            gps_time => {
                if !clock.clock().is_synchronised() {
                    clock.request_now(now);
                    return Some(0);
                }
                match u32::try_from(clock.clock().seconds_until(now, gps_time)) {
                    Ok(seconds) if seconds > 0 => {
                        self.reboot = Some(RebootSchedule::Gps(gps_time));
                        Some(seconds)
                    }
                    _ => Some(0),
                }
            }
        }
    }

    /// Verifies the slot (or returns the cached result).
    pub fn check_image<P: Platform>(&mut self, store: &mut FragmentStore<'_, P>) -> ImageCheck {
        if let Some(cached) = self.cached {
            return cached;
        }
        let refused = |status, error| ImageCheck {
            status,
            update: None,
            error,
        };
        let check = match store.content {
            SlotContent::Empty | SlotContent::Partial | SlotContent::OnTrial { .. } => {
                refused(UpgradeImageStatus::NoImage, None)
            }
            SlotContent::Refused { status, .. } => refused(status, None),
            SlotContent::Complete {
                mic_failed: true, ..
            } => refused(UpgradeImageStatus::CorruptOrBadSignature, None),
            SlotContent::Complete { block_len, .. } => {
                let options = VerifyOptions::new().require_hardware(self.hardware_version);
                match self.check_source(&mut store.image(block_len), &options) {
                    Ok(image) => {
                        let version = image.ts006_version();
                        if compare_ts006(self.firmware_version, version).is_rollback() {
                            refused(UpgradeImageStatus::CorruptOrBadSignature, None)
                        } else {
                            ImageCheck {
                                status: UpgradeImageStatus::Valid {
                                    next_firmware_version: version,
                                },
                                update: Some(PendingUpdate {
                                    firmware_version: version,
                                    image_len: image.image_len(),
                                    digest: *image.digest(),
                                }),
                                error: None,
                            }
                        }
                    }
                    Err(SourceError::Image(
                        error @ (ImageError::WrongHardware { .. }
                        | ImageError::MissingHardwareVersion { .. }),
                    )) => refused(UpgradeImageStatus::WrongHardware, Some(error)),
                    Err(SourceError::Image(error)) => {
                        refused(UpgradeImageStatus::CorruptOrBadSignature, Some(error))
                    }
                    Err(SourceError::Read(_)) => {
                        refused(UpgradeImageStatus::CorruptOrBadSignature, None)
                    }
                }
            }
        };
        self.cached = Some(check);
        check
    }

    /// Verifies the image: its signature against the trusted keys too when asked and
    /// built with the `signature-check` feature; otherwise everything else (see
    /// `lorawan_fuota::image::check_integrity_source`), the bootloader checking the
    /// signature before it installs the image.
    fn check_source<S: lorawan_fuota::image::ImageSource>(
        &self,
        source: &mut S,
        options: &VerifyOptions,
    ) -> Result<CheckedImage, SourceError<S::Error>> {
        #[cfg(feature = "signature-check")]
        if self.verify_signature {
            return verify_source(source, &self.trusted_keys, options)
                .map(|image| *image.checked());
        }
        check_integrity_source(source, options)
    }

    /// When the programmed reboot is due.
    pub fn next_reboot_at(&self, now: Instant, clock: &DeviceClock) -> Option<Instant> {
        Some(match self.reboot? {
            RebootSchedule::Local(at) => at,
            RebootSchedule::Gps(on_air) => {
                clock.local_instant(clock.nearest_gps_millis(now, on_air))
            }
        })
    }

    /// If the programmed reboot is due: takes it, and returns the valid image to hand
    /// to the bootloader first, if the slot holds one (`Some(None)`: reboot without).
    pub fn take_due_reboot<P: Platform>(
        &mut self,
        now: Instant,
        clock: &DeviceClock,
        store: &mut FragmentStore<'_, P>,
    ) -> Option<Option<PendingUpdate>> {
        let due = self.next_reboot_at(now, clock)?;
        if due > now {
            return None;
        }
        self.reboot = None;
        Some(self.check_image(store).update)
    }

    /// The running image confirmed itself: the image handed over is installed for good.
    pub fn confirmed<P: Platform>(&mut self, store: &mut FragmentStore<'_, P>) -> bool {
        if self.handed_over.take().is_none() {
            return false;
        }
        if let SlotContent::OnTrial { .. } = store.content {
            store.content = SlotContent::Empty;
        }
        self.cached = None;
        true
    }

    /// Settles the slot after a reset from what the bootloader did with the image
    /// handed over before it (see `update`); returns true if the persisted state
    /// changed.
    pub fn settle_handed_over_image<P: Platform>(
        &mut self,
        running: &RunningImage,
        store: &mut FragmentStore<'_, P>,
    ) -> bool {
        let Some(version) = self.handed_over else {
            return false;
        };
        let block_len = match store.content {
            SlotContent::Complete { block_len, .. } | SlotContent::OnTrial { block_len } => {
                Some(block_len)
            }
            _ => None,
        };
        match running.verdict(version, self.firmware_version) {
            SlotVerdict::OnTrial => {
                if let Some(block_len) = block_len {
                    store.content = SlotContent::OnTrial { block_len };
                }
                // Kept until the trial ends: a revert brings the image back.
                self.cached = None;
                return true;
            }
            SlotVerdict::Installed => store.content = SlotContent::Empty,
            SlotVerdict::Refused(status) => {
                if let Some(block_len) = block_len {
                    store.content = SlotContent::Refused { block_len, status };
                }
            }
            SlotVerdict::Unknown => {
                if let SlotContent::OnTrial { block_len } = store.content {
                    // The trial ended without a result naming it: trust nothing.
                    store.content = SlotContent::Refused {
                        block_len,
                        status: UpgradeImageStatus::CorruptOrBadSignature,
                    };
                }
            }
        }
        self.handed_over = None;
        self.cached = None;
        true
    }
}
