//! The boot state: what the bootloader and the application agree on across resets
//! (update pending, swap progress, trial, the last update's result, the security
//! counter), the records that advance it, and their byte encodings.
//!
//! How these bytes are laid out in the two boot state pages, and why that survives
//! power cuts, is `status`'s business; this module only turns values into bytes and
//! back, and says how a record changes the state ([`BootState::apply`]).
//!
//! # Page header (40 bytes, five double-words, little-endian)
//!
//! ```text
//! 0..4    magic "FBS1"
//! 4..8    sequence number (the page with the higher one is current)
//! 8       phase: 0 idle, 1 update pending, 2 swapping, 3 trial
//! 9       swap kind: 0 install, 1 revert (not confirmed), 2 revert (trial image invalid)
//! 10..12  pages the swap moves
//! 12..14  swap step (pages done)
//! 14      1 if the current step's primary page is backed up in the download slot
//! 15      trial boots so far
//! 16..20  TS006 version of the image being installed or on trial
//! 20      last update result: 0 none, 1 installed, 2 rejected, 3 reverted
//! 21      reject reason or revert cause
//! 22      1 if the last update's version (24..28) is known
//! 23      0
//! 24..28  TS006 version of the last update's image
//! 28..32  security counter (lowest TS006 version the bootloader will run)
//! 32..36  0
//! 36..40  CRC-32 of bytes 0..36
//! ```
//!
//! # Record (8 bytes, one double-word)
//!
//! ```text
//! 0       kind: 0x51 step backed up, 0x52 step done, 0x53 trial boot, 0x54 confirm
//! 1..3    step (u16, step records), 0 otherwise
//! 3       0
//! 4..6    low 16 bits of the page's sequence number
//! 6..8    CRC-16/CCITT-FALSE of bytes 0..6
//! ```
//!
//! An erased double-word (all 0xFF) and an all-zero one fail both checks.

use crate::crc::{crc16, crc32};

/// Length of a page header.
pub const HEADER_LEN: usize = 40;
/// Length of a record.
pub const RECORD_LEN: usize = 8;

const MAGIC: [u8; 4] = *b"FBS1";

/// What the bootloader has to do at the next reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The primary slot holds a confirmed image: verify it and run it.
    Idle,
    /// The application asked for the image in the download slot to be installed.
    UpdatePending,
    /// A swap is under way (install or revert).
    Swapping(Swap),
    /// The new image runs on trial: it must confirm itself before the next reset.
    Trial(Trial),
}

/// Why an image on trial is being reverted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevertCause {
    /// The image did not confirm itself before a reset (it hung, could not join, or
    /// power was lost first).
    NotConfirmed,
    /// The image failed verification before its trial boot.
    TrialImageInvalid,
}

/// Direction of a swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SwapKind {
    /// The downloaded image goes into the primary slot; the running one is kept in the
    /// download slot.
    Install,
    /// The image on trial goes back to the download slot; the previous one returns.
    Revert(RevertCause),
}

/// Progress of a swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Swap {
    /// Install or revert.
    pub kind: SwapKind,
    /// Pages to exchange (the larger of both images, in pages).
    pub pages: u16,
    /// Pages exchanged so far.
    pub step: u16,
    /// The primary page of the current step is copied to the download slot.
    pub backed_up: bool,
    /// TS006 version of the image being installed (or reverted).
    pub version: u32,
}

impl Swap {
    /// True once every page is exchanged.
    pub fn is_complete(&self) -> bool {
        self.step >= self.pages
    }
}

/// An image on trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Trial {
    /// Pages a revert must exchange (those of the install).
    pub pages: u16,
    /// Times the bootloader has started it.
    pub boots: u8,
    /// Its TS006 version.
    pub version: u32,
}

/// Why a downloaded image was not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The download slot holds no image (no MCUboot magic).
    NoImage,
    /// The image runs past the end of the slot (an incomplete or oversized image).
    Truncated,
    /// The header or the TLVs are malformed, or the hash or signature TLV is missing.
    Malformed,
    /// The SHA-256 of the image differs from its SHA256 TLV.
    HashMismatch,
    /// The image names a signing key the bootloader does not trust.
    KeyNotTrusted,
    /// The signature does not verify.
    BadSignature,
    /// The image is for other hardware, or does not say which.
    WrongHardware,
    /// The image could not be read (ECC faults in the slot).
    Unreadable,
    /// Its version is lower than the security counter (anti-rollback).
    Downgrade,
}

impl RejectReason {
    const ALL: [RejectReason; 9] = [
        RejectReason::NoImage,
        RejectReason::Truncated,
        RejectReason::Malformed,
        RejectReason::HashMismatch,
        RejectReason::KeyNotTrusted,
        RejectReason::BadSignature,
        RejectReason::WrongHardware,
        RejectReason::Unreadable,
        RejectReason::Downgrade,
    ];

    fn code(self) -> u8 {
        match self {
            RejectReason::NoImage => 1,
            RejectReason::Truncated => 2,
            RejectReason::Malformed => 3,
            RejectReason::HashMismatch => 4,
            RejectReason::KeyNotTrusted => 5,
            RejectReason::BadSignature => 6,
            RejectReason::WrongHardware => 7,
            RejectReason::Unreadable => 8,
            RejectReason::Downgrade => 9,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.code() == code)
    }

    /// The TS006 `UpImageStatus` that describes the slot after this rejection:
    /// 0 (no image), 2 (incompatible hardware) or 1 (corrupt: every other reason,
    /// a downgrade included, for which TS006 has no code of its own).
    pub fn up_image_status(self) -> u8 {
        match self {
            RejectReason::NoImage => 0,
            RejectReason::WrongHardware => 2,
            _ => 1,
        }
    }
}

/// What became of the last update the application asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateResult {
    /// The new image was installed and confirmed itself.
    Installed {
        /// Its TS006 version.
        version: u32,
    },
    /// The downloaded image was refused; the previous image kept running.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// Its TS006 version, if its header could be read.
        version: Option<u32>,
    },
    /// The new image ran on trial and was reverted; the previous image runs again.
    Reverted {
        /// Why.
        cause: RevertCause,
        /// TS006 version of the reverted image.
        version: u32,
    },
}

/// The whole boot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootState {
    /// What to do at the next reset.
    pub phase: Phase,
    /// The lowest TS006 version the bootloader installs or runs. Raised to an image's
    /// version when that image confirms itself, never lowered.
    pub security_counter: u32,
    /// What became of the last update, for the application to report (TS006).
    pub last_update: Option<UpdateResult>,
}

impl Default for BootState {
    /// A device fresh from the factory: idle, security counter 0, no update yet.
    fn default() -> Self {
        Self {
            phase: Phase::Idle,
            security_counter: 0,
            last_update: None,
        }
    }
}

/// A change of state appended to the current page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Record {
    /// The primary page of swap step `n` is copied into the download slot.
    StepBackedUp(u16),
    /// Swap step `n` is complete.
    StepDone(u16),
    /// The bootloader is starting the image on trial.
    TrialBoot,
    /// The image on trial confirmed itself.
    Confirm,
}

const RECORD_STEP_BACKED_UP: u8 = 0x51;
const RECORD_STEP_DONE: u8 = 0x52;
const RECORD_TRIAL_BOOT: u8 = 0x53;
const RECORD_CONFIRM: u8 = 0x54;

impl Record {
    /// The record's bytes, tagged with the page's sequence number.
    pub fn encode(self, sequence: u32) -> [u8; RECORD_LEN] {
        let (kind, step) = match self {
            Record::StepBackedUp(step) => (RECORD_STEP_BACKED_UP, step),
            Record::StepDone(step) => (RECORD_STEP_DONE, step),
            Record::TrialBoot => (RECORD_TRIAL_BOOT, 0),
            Record::Confirm => (RECORD_CONFIRM, 0),
        };
        let [s0, s1] = step.to_le_bytes();
        let [t0, t1, _, _] = sequence.to_le_bytes();
        let body = [kind, s0, s1, 0, t0, t1];
        let [c0, c1] = crc16(&body).to_le_bytes();
        [kind, s0, s1, 0, t0, t1, c0, c1]
    }

    /// The record in `bytes`, if they are a valid record of the page with `sequence`.
    pub fn decode(bytes: &[u8; RECORD_LEN], sequence: u32) -> Option<Self> {
        let [kind, s0, s1, zero, t0, t1, c0, c1] = *bytes;
        let [e0, e1, _, _] = sequence.to_le_bytes();
        if zero != 0
            || [t0, t1] != [e0, e1]
            || crc16(&[kind, s0, s1, zero, t0, t1]) != u16::from_le_bytes([c0, c1])
        {
            return None;
        }
        let step = u16::from_le_bytes([s0, s1]);
        match (kind, step) {
            (RECORD_STEP_BACKED_UP, step) => Some(Record::StepBackedUp(step)),
            (RECORD_STEP_DONE, step) => Some(Record::StepDone(step)),
            (RECORD_TRIAL_BOOT, 0) => Some(Record::TrialBoot),
            (RECORD_CONFIRM, 0) => Some(Record::Confirm),
            _ => None,
        }
    }
}

impl BootState {
    /// True if the application may erase and write the download slot (to receive a new
    /// image). Not while an image is on trial or being swapped: the download slot then
    /// holds the previous image, which a revert needs. Not while an update is pending
    /// either: cancel it first ([`cancel_update`](crate::cancel_update)).
    pub fn may_write_download_slot(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Applies a record; returns false (and changes nothing) if it does not follow
    /// from the current state. Records are only ever appended in the order this
    /// accepts, so a refused one is damage, and ignoring it is what keeps the swap
    /// from ever going backwards.
    pub fn apply(&mut self, record: Record) -> bool {
        match (&mut self.phase, record) {
            (Phase::Swapping(swap), Record::StepBackedUp(step))
                if step == swap.step && !swap.backed_up && !swap.is_complete() =>
            {
                swap.backed_up = true;
                true
            }
            (Phase::Swapping(swap), Record::StepDone(step))
                if step == swap.step && swap.backed_up && !swap.is_complete() =>
            {
                swap.step = swap.step.saturating_add(1);
                swap.backed_up = false;
                true
            }
            (Phase::Trial(trial), Record::TrialBoot) => {
                trial.boots = trial.boots.saturating_add(1);
                true
            }
            (Phase::Trial(trial), Record::Confirm) => {
                let version = trial.version;
                self.security_counter = self.security_counter.max(version);
                self.last_update = Some(UpdateResult::Installed { version });
                self.phase = Phase::Idle;
                true
            }
            _ => false,
        }
    }

    /// The page header for this state with sequence number `sequence`.
    pub fn encode_header(&self, sequence: u32) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&sequence.to_le_bytes());
        let (phase, kind, pages, step, backed_up, boots, version) = match self.phase {
            Phase::Idle => (0u8, 0u8, 0u16, 0u16, false, 0u8, 0u32),
            Phase::UpdatePending => (1, 0, 0, 0, false, 0, 0),
            Phase::Swapping(swap) => {
                let kind = match swap.kind {
                    SwapKind::Install => 0,
                    SwapKind::Revert(RevertCause::NotConfirmed) => 1,
                    SwapKind::Revert(RevertCause::TrialImageInvalid) => 2,
                };
                (
                    2,
                    kind,
                    swap.pages,
                    swap.step,
                    swap.backed_up,
                    0,
                    swap.version,
                )
            }
            Phase::Trial(trial) => (3, 0, trial.pages, 0, false, trial.boots, trial.version),
        };
        out[8] = phase;
        out[9] = kind;
        out[10..12].copy_from_slice(&pages.to_le_bytes());
        out[12..14].copy_from_slice(&step.to_le_bytes());
        out[14] = u8::from(backed_up);
        out[15] = boots;
        out[16..20].copy_from_slice(&version.to_le_bytes());
        let (code, detail, last_version) = match self.last_update {
            None => (0u8, 0u8, None),
            Some(UpdateResult::Installed { version }) => (1, 0, Some(version)),
            Some(UpdateResult::Rejected { reason, version }) => (2, reason.code(), version),
            Some(UpdateResult::Reverted { cause, version }) => {
                let cause = match cause {
                    RevertCause::NotConfirmed => 1,
                    RevertCause::TrialImageInvalid => 2,
                };
                (3, cause, Some(version))
            }
        };
        out[20] = code;
        out[21] = detail;
        out[22] = u8::from(last_version.is_some());
        out[24..28].copy_from_slice(&last_version.unwrap_or(0).to_le_bytes());
        out[28..32].copy_from_slice(&self.security_counter.to_le_bytes());
        let crc = crc32(&out[..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The state and sequence number in a page header, if it is a valid one.
    pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Option<(u32, BootState)> {
        let (body, crc) = bytes.split_last_chunk::<4>()?;
        if crc32(body) != u32::from_le_bytes(*crc) || body.get(0..4)? != MAGIC {
            return None;
        }
        let u16_at = |at: usize| -> Option<u16> {
            Some(u16::from_le_bytes(*body.get(at..)?.first_chunk::<2>()?))
        };
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(*body.get(at..)?.first_chunk::<4>()?))
        };
        let byte_at = |at: usize| -> Option<u8> { body.get(at).copied() };

        let sequence = u32_at(4)?;
        let pages = u16_at(10)?;
        let step = u16_at(12)?;
        let version = u32_at(16)?;
        let phase = match byte_at(8)? {
            0 => Phase::Idle,
            1 => Phase::UpdatePending,
            2 => Phase::Swapping(Swap {
                kind: match byte_at(9)? {
                    0 => SwapKind::Install,
                    1 => SwapKind::Revert(RevertCause::NotConfirmed),
                    2 => SwapKind::Revert(RevertCause::TrialImageInvalid),
                    _ => return None,
                },
                pages,
                step: if step > pages { return None } else { step },
                backed_up: match byte_at(14)? {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
                version,
            }),
            3 => Phase::Trial(Trial {
                pages,
                boots: byte_at(15)?,
                version,
            }),
            _ => return None,
        };
        let last_version = match byte_at(22)? {
            0 => None,
            1 => Some(u32_at(24)?),
            _ => return None,
        };
        let detail = byte_at(21)?;
        let last_update = match byte_at(20)? {
            0 => None,
            1 => Some(UpdateResult::Installed {
                version: last_version?,
            }),
            2 => Some(UpdateResult::Rejected {
                reason: RejectReason::from_code(detail)?,
                version: last_version,
            }),
            3 => Some(UpdateResult::Reverted {
                cause: match detail {
                    1 => RevertCause::NotConfirmed,
                    2 => RevertCause::TrialImageInvalid,
                    _ => return None,
                },
                version: last_version?,
            }),
            _ => return None,
        };
        Some((
            sequence,
            BootState {
                phase,
                security_counter: u32_at(28)?,
                last_update,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swapping(kind: SwapKind) -> Phase {
        Phase::Swapping(Swap {
            kind,
            pages: 47,
            step: 12,
            backed_up: true,
            version: 0x0102_0003,
        })
    }

    #[test]
    fn headers_round_trip() {
        let states = [
            BootState::default(),
            BootState {
                phase: Phase::UpdatePending,
                security_counter: 7,
                last_update: Some(UpdateResult::Rejected {
                    reason: RejectReason::Downgrade,
                    version: Some(3),
                }),
            },
            BootState {
                phase: swapping(SwapKind::Install),
                security_counter: 0x0101_0000,
                last_update: Some(UpdateResult::Rejected {
                    reason: RejectReason::NoImage,
                    version: None,
                }),
            },
            BootState {
                phase: swapping(SwapKind::Revert(RevertCause::TrialImageInvalid)),
                security_counter: 1,
                last_update: None,
            },
            BootState {
                phase: Phase::Trial(Trial {
                    pages: 3,
                    boots: 1,
                    version: 9,
                }),
                security_counter: 2,
                last_update: Some(UpdateResult::Reverted {
                    cause: RevertCause::NotConfirmed,
                    version: 5,
                }),
            },
            BootState {
                phase: Phase::Idle,
                security_counter: 9,
                last_update: Some(UpdateResult::Installed { version: 9 }),
            },
        ];
        for (sequence, state) in states.into_iter().enumerate() {
            let bytes = state.encode_header(sequence as u32 + 100);
            assert_eq!(
                BootState::decode_header(&bytes),
                Some((sequence as u32 + 100, state))
            );
        }
    }

    #[test]
    fn erased_and_zeroed_bytes_are_not_headers_or_records() {
        assert_eq!(BootState::decode_header(&[0xFF; HEADER_LEN]), None);
        assert_eq!(BootState::decode_header(&[0; HEADER_LEN]), None);
        for sequence in [0, 1, 0xFFFF, 0xFFFF_FFFF] {
            assert_eq!(Record::decode(&[0xFF; RECORD_LEN], sequence), None);
            assert_eq!(Record::decode(&[0; RECORD_LEN], sequence), None);
        }
    }

    #[test]
    fn records_belong_to_their_page() {
        let bytes = Record::StepDone(4).encode(0x0001_0002);
        assert_eq!(
            Record::decode(&bytes, 0x0001_0002),
            Some(Record::StepDone(4))
        );
        assert_eq!(Record::decode(&bytes, 0x0001_0003), None);
    }

    #[test]
    fn records_only_move_the_state_forward() {
        let mut state = BootState {
            phase: Phase::Swapping(Swap {
                kind: SwapKind::Install,
                pages: 2,
                step: 0,
                backed_up: false,
                version: 5,
            }),
            security_counter: 1,
            last_update: None,
        };
        assert!(!state.apply(Record::StepDone(0)));
        assert!(state.apply(Record::StepBackedUp(0)));
        assert!(!state.apply(Record::StepBackedUp(0)));
        assert!(state.apply(Record::StepDone(0)));
        assert!(!state.apply(Record::StepDone(0)));
        assert!(!state.apply(Record::StepBackedUp(0)));
        assert!(state.apply(Record::StepBackedUp(1)));
        assert!(state.apply(Record::StepDone(1)));
        assert!(!state.apply(Record::StepBackedUp(2)));
        assert!(!state.apply(Record::Confirm));
        assert!(matches!(state.phase, Phase::Swapping(swap) if swap.is_complete()));
    }

    #[test]
    fn confirming_raises_the_security_counter() {
        let mut state = BootState {
            phase: Phase::Trial(Trial {
                pages: 2,
                boots: 0,
                version: 0x0200_0000,
            }),
            security_counter: 0x0100_0000,
            last_update: None,
        };
        assert!(state.apply(Record::TrialBoot));
        assert!(state.apply(Record::Confirm));
        assert_eq!(state.phase, Phase::Idle);
        assert_eq!(state.security_counter, 0x0200_0000);
        assert_eq!(
            state.last_update,
            Some(UpdateResult::Installed {
                version: 0x0200_0000
            })
        );
        assert!(!state.apply(Record::Confirm));
    }
}
