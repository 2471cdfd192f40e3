//! Exchanging the images of the primary slot and the download slot, page by page,
//! restartable after a power cut at any operation.
//!
//! # The algorithm: swap with offset
//!
//! The download slot is one page larger than the primary slot. A downloaded image sits
//! one page in (the download image area); the slot's first page is spare. Installing
//! `n` pages (step `i` = 0, 1, …, n − 1), with `P[i]` the primary slot's page `i` and
//! `D[j]` the download slot's page `j`:
//!
//! ```text
//! 1. erase D[i], copy P[i] → D[i]        the running image's page, kept for a revert
//!    record "step i backed up"
//! 2. erase P[i], copy D[i+1] → P[i]      the new image's page
//!    record "step i done"
//! ```
//!
//! Afterwards `P[0..n]` holds the new image and `D[0..n]` the old one, one page lower
//! than where the new one came from. A revert runs the same two moves the other way,
//! from the last page down (step `k`, page `i` = n − 1 − k):
//!
//! ```text
//! 1. erase D[i+1], copy P[i] → D[i+1]    the image on trial goes back where it came from
//! 2. erase P[i],   copy D[i] → P[i]      the previous image returns
//! ```
//!
//! which leaves both slots exactly as they were before the install.
//!
//! # Why it is restartable
//!
//! Each move reads a page that nothing has changed since the last record, and writes a
//! page whose content nothing needs any more:
//!
//! - move 1 reads `P[i]` (changed only by move 2 of this step, after the "backed up"
//!   record) and overwrites a download page whose content is already safe elsewhere
//!   (install: `D[i]` is the new image's page i − 1, copied to `P[i−1]` by the previous
//!   step, or the spare page; revert: `D[i+1]` is the old image's page i + 1, restored by
//!   the previous step, or the stale copy past the old image);
//! - move 2 reads the download page the step did not touch and overwrites `P[i]`,
//!   which the "backed up" record says is safe in the download slot.
//!
//! So after a cut, the boot state (see `status`) says which move to redo, and redoing
//! it from its erase gives the same result, whatever the cut left in the page being
//! written (torn double-words included: the erase clears them). Each page of either
//! slot is erased once per swap: 2n erases, no scratch page wearing out.
//!
//! Pages are copied in chunks through a small RAM buffer. Double-words that read as
//! erased are not programmed. A double-word of the source that cannot be read (an ECC
//! fault) is left erased in the copy: it can only lie outside both images, since both
//! were verified before the swap began, and leaving it erased is the same on every
//! retry.

use crate::flash::BootFlash;
use crate::layout::Layout;
use crate::state::{Phase, Record, Swap, SwapKind};
use crate::status::StatusLog;

/// Bytes copied at a time (a stack buffer).
const COPY_CHUNK: usize = 256;

/// The pages one swap step works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StepPages {
    /// The primary slot's page.
    primary: u32,
    /// The download page the primary page is backed up into.
    backup: u32,
    /// The download page copied into the primary page.
    source: u32,
}

impl StepPages {
    fn of(swap: &Swap) -> Self {
        let step = u32::from(swap.step);
        match swap.kind {
            SwapKind::Install => Self {
                primary: step,
                backup: step,
                source: step + 1,
            },
            SwapKind::Revert(_) => {
                let page = u32::from(swap.pages).saturating_sub(1).saturating_sub(step);
                Self {
                    primary: page,
                    backup: page + 1,
                    source: page,
                }
            }
        }
    }
}

/// Runs the swap the boot state describes until every page is exchanged. Returns at
/// once if the state is not a swap or the swap is complete.
pub(crate) fn run_swap<F: BootFlash>(
    flash: &mut F,
    layout: &Layout,
    log: &mut StatusLog,
) -> Result<(), F::Error> {
    let page_size = layout.page_size;
    loop {
        let swap = match log.state().phase {
            Phase::Swapping(swap) if !swap.is_complete() => swap,
            _ => return Ok(()),
        };
        let pages = StepPages::of(&swap);
        let primary = layout.primary.page_offset(pages.primary, page_size);
        if !swap.backed_up {
            let backup = layout.download.page_offset(pages.backup, page_size);
            flash.erase_page(backup)?;
            copy_page(flash, primary, backup, page_size)?;
            log.append(flash, Record::StepBackedUp(swap.step))?;
        }
        let source = layout.download.page_offset(pages.source, page_size);
        flash.erase_page(primary)?;
        copy_page(flash, source, primary, page_size)?;
        log.append(flash, Record::StepDone(swap.step))?;
    }
}

/// Copies one page into an erased page. Source double-words that read as erased or
/// cannot be read are not programmed.
pub(crate) fn copy_page<F: BootFlash>(
    flash: &mut F,
    from: u32,
    to: u32,
    page_size: u32,
) -> Result<(), F::Error> {
    const UNIT: usize = 8;
    let mut chunk = [0u8; COPY_CHUNK];
    let mut done = 0u32;
    while done < page_size {
        let len = ((page_size - done) as usize).min(COPY_CHUNK);
        let Some(buffer) = chunk.get_mut(..len) else {
            return Ok(());
        };
        let mut readable = [true; COPY_CHUNK / UNIT];
        if flash.read(from + done, buffer).is_err() {
            // Find the unreadable double-words one by one.
            for (i, unit) in buffer.chunks_exact_mut(UNIT).enumerate() {
                let ok = flash.read(from + done + (i * UNIT) as u32, unit).is_ok();
                if let Some(flag) = readable.get_mut(i) {
                    *flag = ok;
                }
                if !ok {
                    unit.fill(0xFF);
                }
            }
        }
        // Program runs of double-words that hold data.
        let units = len / UNIT;
        let mut run_start: Option<usize> = None;
        for i in 0..=units {
            let has_data = i < units
                && readable.get(i).copied().unwrap_or(false)
                && buffer
                    .get(i * UNIT..(i + 1) * UNIT)
                    .is_some_and(|unit| unit.iter().any(|&b| b != 0xFF));
            match (has_data, run_start) {
                (true, None) => run_start = Some(i),
                (false, Some(start)) => {
                    if let Some(run) = buffer.get(start * UNIT..i * UNIT) {
                        flash.program(to + done + (start * UNIT) as u32, run)?;
                    }
                    run_start = None;
                }
                _ => {}
            }
        }
        done += len as u32;
    }
    Ok(())
}
