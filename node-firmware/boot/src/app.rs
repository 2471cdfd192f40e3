//! The application's side of the hand-over: ask for an update, confirm the running
//! image, read what became of the last update. The application binary calls these on
//! the same flash and layout as the bootloader; each is one record or one snapshot of
//! the boot state (see `status`), so a power cut during any of them leaves the request
//! or the confirmation either done or not done.
//!
//! The node's flow:
//!
//! 1. write the new image into [`Layout::download_image`] (the FEC decoder does, through
//!    a `FlashWindow`), verify it, then [`request_update`] and reset;
//! 2. after the reset, read [`read_boot_state`]: `last_update` says whether the image
//!    was rejected (and why) or reverted, for the TS006 status;
//! 3. when the new image runs on trial ([`Phase::Trial`]), it calls [`confirm_image`]
//!    once it has joined and heard a downlink; if it resets before that, the bootloader
//!    reverts it.

use crate::boot::{check_layout, BootError};
use crate::flash::BootFlash;
use crate::layout::Layout;
use crate::state::{BootState, Phase, Record};
use crate::status::StatusLog;

/// Reads the boot state (what the bootloader will do at the next reset, the last
/// update's result, the security counter). Damaged flash reads as a fresh device.
pub fn read_boot_state<F: BootFlash>(flash: &mut F, layout: &Layout) -> BootState {
    *StatusLog::load(flash, layout).state()
}

/// Why an update could not be requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError<E> {
    /// The running image is on trial: confirm it first (a new update would make its
    /// revert impossible).
    TrialNotConfirmed,
    /// A swap is under way (only the bootloader runs during a swap).
    SwapInProgress,
    /// Layout unusable, or the flash failed.
    Boot(BootError<E>),
}

/// Asks the bootloader to install, at the next reset, the image in the download image
/// area. It verifies the image again before installing it. Asking twice is harmless.
/// The previous update's result is cleared.
pub fn request_update<F: BootFlash>(
    flash: &mut F,
    layout: &Layout,
) -> Result<(), RequestError<F::Error>> {
    check_layout(flash, layout).map_err(RequestError::Boot)?;
    let mut log = StatusLog::load(flash, layout);
    let state = *log.state();
    match state.phase {
        Phase::UpdatePending => Ok(()),
        Phase::Trial(_) => Err(RequestError::TrialNotConfirmed),
        Phase::Swapping(_) => Err(RequestError::SwapInProgress),
        Phase::Idle => log
            .rotate(
                flash,
                BootState {
                    phase: Phase::UpdatePending,
                    last_update: None,
                    ..state
                },
            )
            .map_err(|error| RequestError::Boot(BootError::Flash(error))),
    }
}

/// Withdraws a requested update (the download slot was deleted, TS006
/// DevDeleteImageReq). Returns true if one was pending.
pub fn cancel_update<F: BootFlash>(
    flash: &mut F,
    layout: &Layout,
) -> Result<bool, BootError<F::Error>> {
    check_layout(flash, layout)?;
    let mut log = StatusLog::load(flash, layout);
    let state = *log.state();
    if state.phase != Phase::UpdatePending {
        return Ok(false);
    }
    log.rotate(
        flash,
        BootState {
            phase: Phase::Idle,
            ..state
        },
    )
    .map_err(BootError::Flash)?;
    Ok(true)
}

/// What [`confirm_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// The image on trial is now confirmed; the security counter is raised to its
    /// version.
    Confirmed {
        /// Its TS006 version.
        version: u32,
    },
    /// The running image was already confirmed.
    AlreadyConfirmed,
}

/// Confirms the running image: call it once the new image has proved itself (joined
/// and heard a downlink). Without it, the next reset reverts an image on trial.
pub fn confirm_image<F: BootFlash>(
    flash: &mut F,
    layout: &Layout,
) -> Result<Confirmation, BootError<F::Error>> {
    check_layout(flash, layout)?;
    let mut log = StatusLog::load(flash, layout);
    match log.state().phase {
        Phase::Trial(trial) => {
            log.append(flash, Record::Confirm)
                .map_err(BootError::Flash)?;
            Ok(Confirmation::Confirmed {
                version: trial.version,
            })
        }
        Phase::Idle | Phase::UpdatePending | Phase::Swapping(_) => {
            Ok(Confirmation::AlreadyConfirmed)
        }
    }
}
