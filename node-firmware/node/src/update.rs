//! The node's side of the hand-over with the bootloader, after a reset: what the
//! firmware tells the node about the image it runs ([`RunningImage`]: on trial or
//! confirmed, and what became of the last update it asked for), and what the node
//! concludes about its download slot.
//!
//! The node hands a verified image over with [`crate::UpdateAgent::mark_update_pending`]
//! and remembers (persisted, before marking) the TS006 version it handed over. At the
//! next start the firmware reads the bootloader's state and passes it as a
//! [`RunningImage`]; the node then settles the slot:
//!
//! | bootloader says, for the handed-over version | download slot becomes         |
//! |----------------------------------------------|-------------------------------|
//! | running it on trial                          | on trial: no image until the outcome is known |
//! | installed (or confirmed by this node)        | empty (the swap moved it)     |
//! | rejected it (why → UpImageStatus)            | refused: reported, never retried |
//! | reverted it (it never confirmed itself)      | refused: UpImageStatus 1       |
//! | nothing, or another version                  | unchanged                     |
//!
//! so that DevUpgradeImageAns reports the failure and a programmed reboot does not
//! hand the same image over again. A new fragmentation session replaces a refused image.
//!
//! The image on trial confirms itself ([`crate::UpdateAgent::confirm_running_image`])
//! once the device has joined and heard a downlink: the firmware calls
//! [`crate::FuotaNode::downlink_heard`] when `lorawan-device` receives one (every
//! application downlink given to `handle_downlink` counts too). A trial image that
//! never gets there (it hangs, or cannot join) is reset by the watchdog or gives up and
//! resets, and the bootloader reverts it.

use lorawan_fuota::codec::firmware_management::UpgradeImageStatus;

/// What became of the last update the node asked for, as the bootloader recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastUpdate {
    /// The new image was installed and confirmed itself.
    Installed {
        /// Its TS006 version.
        version: u32,
    },
    /// The bootloader refused the image; the previous image kept running.
    Rejected {
        /// Its TS006 version, if its header could be read.
        version: Option<u32>,
        /// The UpImageStatus that describes the refusal (`NoImage`, `WrongHardware` or
        /// `CorruptOrBadSignature`).
        status: UpgradeImageStatus,
    },
    /// The new image ran on trial, never confirmed itself, and was reverted.
    Reverted {
        /// Its TS006 version.
        version: u32,
    },
}

/// The image the node runs in, as the bootloader's state describes it at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunningImage {
    /// The image runs on trial: it must confirm itself or be reverted at the next reset.
    pub on_trial: bool,
    /// What became of the last update, if the bootloader recorded a result.
    pub last_update: Option<LastUpdate>,
}

/// What the slot is after the bootloader's outcome for a handed-over image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotVerdict {
    /// The image runs on trial: it left the slot, and comes back if reverted.
    OnTrial,
    /// The image was installed and confirmed: it left the slot for good.
    Installed,
    /// The bootloader refused or reverted it.
    Refused(UpgradeImageStatus),
    /// Nothing known about it: keep the slot as it is.
    Unknown,
}

impl RunningImage {
    /// The verdict on the image of TS006 version `handed_over`, given that the node now
    /// runs `running_version`.
    pub(crate) fn verdict(&self, handed_over: u32, running_version: u32) -> SlotVerdict {
        if self.on_trial && running_version == handed_over {
            return SlotVerdict::OnTrial;
        }
        match self.last_update {
            Some(LastUpdate::Installed { version }) if version == handed_over => {
                SlotVerdict::Installed
            }
            Some(LastUpdate::Rejected { version, status })
                if version.is_none_or(|version| version == handed_over) =>
            {
                SlotVerdict::Refused(status)
            }
            Some(LastUpdate::Reverted { version }) if version == handed_over => {
                SlotVerdict::Refused(UpgradeImageStatus::CorruptOrBadSignature)
            }
            _ => SlotVerdict::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_outcome_for_the_handed_over_version_settles_the_slot() {
        let trial = RunningImage {
            on_trial: true,
            last_update: None,
        };
        assert_eq!(trial.verdict(7, 7), SlotVerdict::OnTrial);
        assert_eq!(trial.verdict(7, 6), SlotVerdict::Unknown);
        let installed = RunningImage {
            on_trial: false,
            last_update: Some(LastUpdate::Installed { version: 7 }),
        };
        assert_eq!(installed.verdict(7, 7), SlotVerdict::Installed);
        assert_eq!(installed.verdict(8, 7), SlotVerdict::Unknown);
        let rejected = |version| RunningImage {
            on_trial: false,
            last_update: Some(LastUpdate::Rejected {
                version,
                status: UpgradeImageStatus::WrongHardware,
            }),
        };
        assert_eq!(
            rejected(Some(9)).verdict(9, 1),
            SlotVerdict::Refused(UpgradeImageStatus::WrongHardware)
        );
        assert_eq!(
            rejected(None).verdict(9, 1),
            SlotVerdict::Refused(UpgradeImageStatus::WrongHardware)
        );
        assert_eq!(rejected(Some(8)).verdict(9, 1), SlotVerdict::Unknown);
        let reverted = RunningImage {
            on_trial: false,
            last_update: Some(LastUpdate::Reverted { version: 9 }),
        };
        assert_eq!(
            reverted.verdict(9, 1),
            SlotVerdict::Refused(UpgradeImageStatus::CorruptOrBadSignature)
        );
        assert_eq!(RunningImage::default().verdict(9, 1), SlotVerdict::Unknown);
    }
}
