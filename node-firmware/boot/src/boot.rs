//! What the bootloader does at every reset: [`boot`].
//!
//! ```text
//! load the boot state (status)
//! loop:
//!   idle            verify the primary image (signature, key, hardware, version ≥
//!                   security counter) → start the watchdog, jump; or halt
//!   update pending  verify the download image area the same way →
//!                     valid: snapshot "swapping (install)"
//!                     not:   snapshot "idle, last update rejected (why)"
//!   swapping        run the swap to its end (swap), then snapshot
//!                     install → "trial (0 boots)"
//!                     revert  → "idle, last update reverted (why)"
//!   trial           already started max_trial_boots times without confirming →
//!                     snapshot "swapping (revert, not confirmed)"
//!                   primary image invalid → snapshot "swapping (revert, invalid)"
//!                   otherwise record "trial boot", start the watchdog, jump (trial)
//! ```
//!
//! Every step either only reads, or ends in one record or snapshot (see `status`), so
//! a power cut anywhere makes the next reset redo, at most, the step that was cut. The
//! image about to run is verified before every jump, and the watchdog is started right
//! before it: an image that hangs is reset, and a trial image that never confirmed
//! itself is reverted at that reset.
//!
//! Flash reads that fail (ECC faults) make the image being read invalid; only a failed
//! program or erase stops [`boot`] with an error (the caller resets and tries again).

use core::fmt;

use lorawan_fuota::image::{
    compare_ts006, verify_source, ImageError, ImageHeader, ImageLayout, ImageVersion, SourceError,
    TrustedKey, VerifiedImage, VerifyOptions, IMAGE_HEADER_LEN,
};

use crate::flash::{BootFlash, FlashWindow};
use crate::layout::{Layout, LayoutError, Region};
use crate::state::{
    BootState, Phase, Record, RejectReason, RevertCause, Swap, SwapKind, Trial, UpdateResult,
};
use crate::status::StatusLog;
use crate::swap::run_swap;

/// The independent watchdog, started right before the jump. Once started it cannot be
/// stopped: an application that hangs is reset.
pub trait Watchdog {
    /// Starts the watchdog.
    fn start(&mut self);
}

/// What the bootloader is built with.
#[derive(Debug, Clone, Copy)]
pub struct BootConfig<'k> {
    /// The flash layout.
    pub layout: Layout,
    /// The keys images must be signed with (built into the bootloader).
    pub keys: &'k [TrustedKey],
    /// Extra checks, e.g. the device's hardware version.
    pub verify_options: VerifyOptions,
    /// How many times an image on trial is started before it is reverted if it has not
    /// confirmed itself (at least 1).
    pub max_trial_boots: u8,
}

impl<'k> BootConfig<'k> {
    /// A configuration with no hardware check and one trial boot.
    pub fn new(layout: Layout, keys: &'k [TrustedKey]) -> Self {
        Self {
            layout,
            keys,
            verify_options: VerifyOptions::new(),
            max_trial_boots: 1,
        }
    }
}

/// The image the bootloader hands over to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootImage {
    /// CPU address of its vector table (primary slot + header size).
    pub vector_table: u32,
    /// Its version.
    pub version: ImageVersion,
    /// Its length, header and TLVs included.
    pub image_len: u32,
    /// SHA-256 of its header, body and protected TLVs.
    pub digest: [u8; 32],
}

impl BootImage {
    fn from_verified(layout: &Layout, image: &VerifiedImage) -> Self {
        Self {
            vector_table: layout.address(
                layout
                    .primary
                    .start
                    .saturating_add(u32::from(image.header().hdr_size)),
            ),
            version: image.version(),
            image_len: image.image_len(),
            digest: *image.digest(),
        }
    }
}

/// What the bootloader decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDecision {
    /// Start `image` (the watchdog is running).
    Jump {
        /// The verified primary image.
        image: BootImage,
        /// True if it runs on trial and must confirm itself.
        trial: bool,
    },
    /// Nothing can be started: the primary slot holds no valid image (the reason), and
    /// no update or revert is under way. The caller halts (or waits for a debugger).
    Halt(RejectReason),
}

/// The outcome of one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootReport {
    /// Jump or halt.
    pub decision: BootDecision,
    /// The boot state after this boot.
    pub state: BootState,
    /// What this boot did to an update (rejected it, or finished reverting it), if
    /// anything; the application finds it later in `state.last_update`.
    pub update: Option<UpdateResult>,
}

/// Why [`boot`] could not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError<E> {
    /// The layout is unusable, or does not match the flash.
    Layout(LayoutError),
    /// Programming or erasing failed (on the simulator: power was cut).
    Flash(E),
}

impl<E: fmt::Debug> fmt::Display for BootError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Layout(error) => write!(f, "unusable flash layout: {error:?}"),
            BootError::Flash(error) => write!(f, "flash operation failed: {error:?}"),
        }
    }
}

/// Phase changes one boot can go through (pending → swapping → trial, or trial →
/// swapping → idle): more means the state machine is broken.
const MAX_TRANSITIONS: usize = 6;

/// Runs the bootloader's reset logic (see the module documentation) and says which
/// image to start. The watchdog has been started when this returns a jump.
pub fn boot<F: BootFlash, W: Watchdog>(
    flash: &mut F,
    config: &BootConfig<'_>,
    watchdog: &mut W,
) -> Result<BootReport, BootError<F::Error>> {
    let layout = &config.layout;
    check_layout(flash, layout)?;
    let mut log = StatusLog::load(flash, layout);
    let mut update = None;
    for _ in 0..MAX_TRANSITIONS {
        let state = *log.state();
        match state.phase {
            Phase::Idle => {
                let decision = match verify_primary(flash, config, state.security_counter) {
                    Ok(image) => {
                        watchdog.start();
                        BootDecision::Jump {
                            image,
                            trial: false,
                        }
                    }
                    Err(reason) => BootDecision::Halt(reason),
                };
                return Ok(BootReport {
                    decision,
                    state,
                    update,
                });
            }
            Phase::UpdatePending => {
                let next = match verify_candidate(flash, config, state.security_counter) {
                    Ok(candidate) => Phase::Swapping(Swap {
                        kind: SwapKind::Install,
                        pages: swap_pages(flash, layout, candidate.image_len()),
                        step: 0,
                        backed_up: false,
                        version: candidate.ts006_version(),
                    }),
                    Err((reason, version)) => {
                        let result = UpdateResult::Rejected { reason, version };
                        update = Some(result);
                        log.rotate(
                            flash,
                            BootState {
                                phase: Phase::Idle,
                                last_update: Some(result),
                                ..state
                            },
                        )
                        .map_err(BootError::Flash)?;
                        continue;
                    }
                };
                log.rotate(
                    flash,
                    BootState {
                        phase: next,
                        ..state
                    },
                )
                .map_err(BootError::Flash)?;
            }
            Phase::Swapping(swap) if !swap.is_complete() => {
                run_swap(flash, layout, &mut log).map_err(BootError::Flash)?;
            }
            Phase::Swapping(swap) => {
                let next = match swap.kind {
                    SwapKind::Install => BootState {
                        phase: Phase::Trial(Trial {
                            pages: swap.pages,
                            boots: 0,
                            version: swap.version,
                        }),
                        ..state
                    },
                    SwapKind::Revert(cause) => {
                        let result = UpdateResult::Reverted {
                            cause,
                            version: swap.version,
                        };
                        update = Some(result);
                        BootState {
                            phase: Phase::Idle,
                            last_update: Some(result),
                            ..state
                        }
                    }
                };
                log.rotate(flash, next).map_err(BootError::Flash)?;
            }
            Phase::Trial(trial) => {
                let cause = if trial.boots >= config.max_trial_boots.max(1) {
                    Some(RevertCause::NotConfirmed)
                } else {
                    match verify_primary(flash, config, state.security_counter) {
                        Ok(image) => {
                            log.append(flash, Record::TrialBoot)
                                .map_err(BootError::Flash)?;
                            watchdog.start();
                            return Ok(BootReport {
                                decision: BootDecision::Jump { image, trial: true },
                                state: *log.state(),
                                update,
                            });
                        }
                        Err(_) => Some(RevertCause::TrialImageInvalid),
                    }
                };
                if let Some(cause) = cause {
                    let revert = Swap {
                        kind: SwapKind::Revert(cause),
                        pages: trial.pages,
                        step: 0,
                        backed_up: false,
                        version: trial.version,
                    };
                    log.rotate(
                        flash,
                        BootState {
                            phase: Phase::Swapping(revert),
                            ..state
                        },
                    )
                    .map_err(BootError::Flash)?;
                }
            }
        }
    }
    // Not reached: every phase reaches a jump within MAX_TRANSITIONS. Should a bug
    // prove otherwise, run what the primary slot holds if it verifies.
    let state = *log.state();
    let decision = match verify_primary(flash, config, state.security_counter) {
        Ok(image) => {
            watchdog.start();
            BootDecision::Jump {
                image,
                trial: matches!(state.phase, Phase::Trial(_)),
            }
        }
        Err(reason) => BootDecision::Halt(reason),
    };
    Ok(BootReport {
        decision,
        state,
        update,
    })
}

/// Checks the layout and that it matches the flash.
pub(crate) fn check_layout<F: BootFlash, E>(
    flash: &F,
    layout: &Layout,
) -> Result<(), BootError<E>> {
    layout.check().map_err(BootError::Layout)?;
    if flash.page_size() != layout.page_size
        || flash.write_size() != layout.write_size
        || flash.capacity() < layout.flash_size
    {
        return Err(BootError::Layout(LayoutError::BadGeometry));
    }
    Ok(())
}

/// Verifies the image in the primary slot, and that its version is not below the
/// security counter.
fn verify_primary<F: BootFlash>(
    flash: &mut F,
    config: &BootConfig<'_>,
    security_counter: u32,
) -> Result<BootImage, RejectReason> {
    let verified = verify_region(flash, config, config.layout.primary, security_counter)
        .map_err(|(reason, _)| reason)?;
    Ok(BootImage::from_verified(&config.layout, &verified))
}

/// Verifies the image in the download image area, and that its version is not below
/// the security counter. On failure, also gives the image's version if its header
/// could be read.
fn verify_candidate<F: BootFlash>(
    flash: &mut F,
    config: &BootConfig<'_>,
    security_counter: u32,
) -> Result<VerifiedImage, (RejectReason, Option<u32>)> {
    let region = config.layout.download_image();
    verify_region(flash, config, region, security_counter)
}

fn verify_region<F: BootFlash>(
    flash: &mut F,
    config: &BootConfig<'_>,
    region: Region,
    security_counter: u32,
) -> Result<VerifiedImage, (RejectReason, Option<u32>)> {
    let mut window = FlashWindow::new(&mut *flash, region);
    match verify_source(&mut window, config.keys, &config.verify_options) {
        Ok(image) => {
            let version = image.ts006_version();
            if compare_ts006(security_counter, version).is_rollback() {
                Err((RejectReason::Downgrade, Some(version)))
            } else {
                Ok(image)
            }
        }
        Err(error) => {
            let mut header = [0u8; IMAGE_HEADER_LEN];
            let version = window
                .read_at(0, &mut header)
                .ok()
                .and_then(|()| ImageHeader::parse(&header).ok())
                .map(|header| header.version.to_ts006());
            Err((reject_reason(&error), version))
        }
    }
}

/// The reason to report for a verification failure.
fn reject_reason<E>(error: &SourceError<E>) -> RejectReason {
    match error {
        SourceError::Read(_) => RejectReason::Unreadable,
        SourceError::Image(error) => match error {
            ImageError::BadMagic(0xFFFF_FFFF) => RejectReason::NoImage,
            // Past the end of the slot, or TLVs expected where the flash is erased: the
            // image was not completely written.
            ImageError::Truncated { .. } | ImageError::BadTlvInfoMagic { found: 0xFFFF, .. } => {
                RejectReason::Truncated
            }
            ImageError::HashMismatch => RejectReason::HashMismatch,
            ImageError::KeyNotTrusted => RejectReason::KeyNotTrusted,
            ImageError::BadSignature => RejectReason::BadSignature,
            ImageError::WrongHardware { .. } | ImageError::MissingHardwareVersion { .. } => {
                RejectReason::WrongHardware
            }
            ImageError::BigEndian
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
            | ImageError::MalformedSignature => RejectReason::Malformed,
        },
    }
}

/// Pages a swap must exchange: enough for the longer of the new image and the one in
/// the primary slot (all of the slot if the latter cannot be read).
fn swap_pages<F: BootFlash>(flash: &mut F, layout: &Layout, new_len: u32) -> u16 {
    let slot_pages = layout.primary_pages();
    let mut window = FlashWindow::new(&mut *flash, layout.primary);
    let old_len = ImageLayout::read(&mut window)
        .map(|image| image.total_len())
        .unwrap_or(layout.primary.len);
    let longest = new_len.max(old_len);
    let pages = longest
        .div_ceil(layout.page_size.max(1))
        .clamp(1, slot_pages);
    u16::try_from(pages).unwrap_or(u16::MAX)
}
