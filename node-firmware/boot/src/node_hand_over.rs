//! What the boot state tells the FUOTA node (`fuota-node`) when the application starts:
//! whether the running image is on trial, and what became of the last update, in the
//! node's terms (the TS006 status it reports). With the `node` feature; the
//! application, the agent's simulator and the tests all start the node this way.

use fuota_node::{LastUpdate, RunningImage};
use lorawan_fuota::codec::firmware_management::UpgradeImageStatus;

use crate::state::{BootState, Phase, UpdateResult};

impl From<UpdateResult> for LastUpdate {
    fn from(result: UpdateResult) -> Self {
        match result {
            UpdateResult::Installed { version } => LastUpdate::Installed { version },
            UpdateResult::Rejected { reason, version } => LastUpdate::Rejected {
                version,
                status: match reason.up_image_status() {
                    0 => UpgradeImageStatus::NoImage,
                    2 => UpgradeImageStatus::WrongHardware,
                    _ => UpgradeImageStatus::CorruptOrBadSignature,
                },
            },
            UpdateResult::Reverted { version, .. } => LastUpdate::Reverted { version },
        }
    }
}

/// The running image as the node needs to know it, from the boot state the
/// application reads at start (`crate::read_boot_state`).
pub fn running_image(state: &BootState) -> RunningImage {
    RunningImage {
        on_trial: matches!(state.phase, Phase::Trial(_)),
        last_update: state.last_update.map(LastUpdate::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RejectReason;

    #[test]
    fn each_result_becomes_the_status_the_node_reports() {
        let rejected = |reason| {
            LastUpdate::from(UpdateResult::Rejected {
                reason,
                version: Some(7),
            })
        };
        assert_eq!(
            rejected(RejectReason::WrongHardware),
            LastUpdate::Rejected {
                version: Some(7),
                status: UpgradeImageStatus::WrongHardware
            }
        );
        assert_eq!(
            rejected(RejectReason::NoImage),
            LastUpdate::Rejected {
                version: Some(7),
                status: UpgradeImageStatus::NoImage
            }
        );
        for reason in [
            RejectReason::BadSignature,
            RejectReason::KeyNotTrusted,
            RejectReason::Downgrade,
            RejectReason::HashMismatch,
        ] {
            assert_eq!(
                rejected(reason),
                LastUpdate::Rejected {
                    version: Some(7),
                    status: UpgradeImageStatus::CorruptOrBadSignature
                }
            );
        }
        assert_eq!(
            LastUpdate::from(UpdateResult::Installed { version: 3 }),
            LastUpdate::Installed { version: 3 }
        );
        let fresh = running_image(&BootState::default());
        assert!(!fresh.on_trial);
        assert_eq!(fresh.last_update, None);
    }
}
