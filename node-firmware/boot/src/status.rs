//! The boot state on flash: two alternating pages, each a header followed by records,
//! written so that a power cut at any operation leaves either the old state or the new
//! one, never anything in between.
//!
//! # Format
//!
//! Each of the two boot state pages holds a 40-byte header (a whole [`BootState`]
//! snapshot with a sequence number and a CRC-32) followed by 8-byte records (one
//! double-word each, CRC-16, tagged with the page's sequence number) that advance that
//! state: swap steps, trial boots, the application's confirmation. The encodings are in
//! `state`. The *current* page is the one with a valid header and the higher sequence
//! number; the state is its header with its valid records applied in order.
//!
//! # Why a power cut cannot corrupt it
//!
//! - **A record** is one double-word, programmed once into erased flash. Cut before, it
//!   is absent; cut after, it is present; torn, it reads as an ECC fault or fails its
//!   CRC: absent. Records after a damaged one are still read (the scan covers the whole
//!   page), and the next record goes after the last non-erased double-word, so a torn
//!   double-word is never programmed again.
//! - **A new snapshot** (a phase change, or a full page) goes to the *other* page:
//!   erase it, then program the header with sequence + 1. Until that header is complete
//!   the other page has no valid header, or its old one with a lower sequence number,
//!   so the current page stays current. The current page is never erased.
//! - **Reading never fails**: a double-word that raises an ECC fault is damage, handled
//!   like a failed CRC. No valid header anywhere means a device fresh from the factory:
//!   [`BootState::default`].
//!
//! The state can therefore only move forward, one complete record or snapshot at a
//! time, which is what makes every swap step restartable (see `swap`).
//!
//! Not modelled: a double-word programmed so weakly that it reads back differently on
//! different boots. The STM32WL's programming either completes or leaves ECC-detectable
//! damage in practice; MCUboot makes the same assumption.

use crate::flash::BootFlash;
use crate::layout::Layout;
use crate::state::{BootState, Record, HEADER_LEN, RECORD_LEN};

/// Double-words taken by the header.
const HEADER_DOUBLE_WORDS: u32 = (HEADER_LEN / RECORD_LEN) as u32;

/// Bytes read at a time while scanning records (a stack buffer).
const SCAN_CHUNK: usize = 64;

/// Attempts at programming one record before giving up (the first position may hold a
/// torn double-word that read as erased).
const RECORD_ATTEMPTS: u32 = 2;

/// True if sequence number `a` is newer than `b`, in serial-number arithmetic
/// (RFC 1982), so that the count may wrap (it never will: a page wears out long
/// before 2³¹ erases).
fn is_newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The page that is current and where its next record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CurrentPage {
    /// 0 or 1.
    index: u32,
    /// Its header's sequence number.
    sequence: u32,
    /// Double-word index (in the page) of the next record.
    next_record: u32,
}

/// The boot state as read from flash, and the means to change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLog {
    state: BootState,
    current: Option<CurrentPage>,
    page_size: u32,
    pages: [u32; 2],
}

impl StatusLog {
    /// Reads the boot state from `layout`'s boot state pages. Never fails: damaged
    /// double-words are ignored, and no valid page at all is a fresh device.
    pub fn load<F: BootFlash>(flash: &mut F, layout: &Layout) -> Self {
        let pages = [layout.boot_state_page(0), layout.boot_state_page(1)];
        let mut best: Option<(u32, u32, BootState)> = None;
        for (index, &offset) in (0u32..).zip(pages.iter()) {
            let mut header = [0u8; HEADER_LEN];
            if flash.read(offset, &mut header).is_err() {
                continue;
            }
            if let Some((sequence, state)) = BootState::decode_header(&header) {
                if best.is_none_or(|(_, best_sequence, _)| is_newer(sequence, best_sequence)) {
                    best = Some((index, sequence, state));
                }
            }
        }
        let mut log = Self {
            state: BootState::default(),
            current: None,
            page_size: layout.page_size,
            pages,
        };
        if let Some((index, sequence, state)) = best {
            log.state = state;
            let next_record = log.replay_records(flash, index, sequence);
            log.current = Some(CurrentPage {
                index,
                sequence,
                next_record,
            });
        }
        log
    }

    /// The current boot state.
    pub fn state(&self) -> &BootState {
        &self.state
    }

    fn double_words_per_page(&self) -> u32 {
        self.page_size / RECORD_LEN as u32
    }

    /// Applies the valid records of page `index` to the state; returns the double-word
    /// index just past the last one that is not erased.
    fn replay_records<F: BootFlash>(&mut self, flash: &mut F, index: u32, sequence: u32) -> u32 {
        let page = self.pages.get(index as usize).copied().unwrap_or(0);
        let end = self.double_words_per_page();
        let mut next_record = HEADER_DOUBLE_WORDS;
        let mut unit = HEADER_DOUBLE_WORDS;
        let mut chunk = [0u8; SCAN_CHUNK];
        while unit < end {
            let units = (end - unit).min((SCAN_CHUNK / RECORD_LEN) as u32);
            let len = units as usize * RECORD_LEN;
            let offset = page + unit * RECORD_LEN as u32;
            let Some(buffer) = chunk.get_mut(..len) else {
                break;
            };
            let whole_chunk_read = flash.read(offset, buffer).is_ok();
            for i in 0..units {
                let mut record = [0u8; RECORD_LEN];
                let readable = if whole_chunk_read {
                    let at = i as usize * RECORD_LEN;
                    match buffer.get(at..at + RECORD_LEN) {
                        Some(bytes) => {
                            record.copy_from_slice(bytes);
                            true
                        }
                        None => false,
                    }
                } else {
                    flash
                        .read(offset + i * RECORD_LEN as u32, &mut record)
                        .is_ok()
                };
                if readable && record == [0xFF; RECORD_LEN] {
                    continue;
                }
                next_record = unit + i + 1;
                if readable {
                    if let Some(record) = Record::decode(&record, sequence) {
                        self.state.apply(record);
                    }
                }
            }
            unit += units;
        }
        next_record
    }

    /// Makes `state` the boot state with a new snapshot in the other page.
    pub fn rotate<F: BootFlash>(
        &mut self,
        flash: &mut F,
        state: BootState,
    ) -> Result<(), F::Error> {
        let (target, sequence) = match self.current {
            Some(current) => (1 - current.index, current.sequence.wrapping_add(1)),
            None => (0, 1),
        };
        let page = self.pages.get(target as usize).copied().unwrap_or(0);
        flash.erase_page(page)?;
        flash.program(page, &state.encode_header(sequence))?;
        self.state = state;
        self.current = Some(CurrentPage {
            index: target,
            sequence,
            next_record: HEADER_DOUBLE_WORDS,
        });
        Ok(())
    }

    /// Appends `record` (which must apply to the current state) and applies it. A full
    /// page is first rotated into the other one with the current state.
    pub fn append<F: BootFlash>(&mut self, flash: &mut F, record: Record) -> Result<(), F::Error> {
        let mut attempt = 0;
        loop {
            let current = match self.current {
                Some(current) if current.next_record < self.double_words_per_page() => current,
                _ => {
                    let state = self.state;
                    self.rotate(flash, state)?;
                    continue;
                }
            };
            let page = self.pages.get(current.index as usize).copied().unwrap_or(0);
            let offset = page + current.next_record * RECORD_LEN as u32;
            let result = flash.program(offset, &record.encode(current.sequence));
            // Whatever happened, that double-word is used now.
            self.current = Some(CurrentPage {
                next_record: current.next_record + 1,
                ..current
            });
            match result {
                Ok(()) => {
                    self.state.apply(record);
                    return Ok(());
                }
                Err(error) => {
                    attempt += 1;
                    if attempt >= RECORD_ATTEMPTS {
                        return Err(error);
                    }
                }
            }
        }
    }
}
