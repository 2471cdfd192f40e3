//! FCntDown allocation that never reuses a counter, even after `kill -9` or power loss,
//! without an fsync per downlink.
//!
//! Each session row carries a high-water mark, `f_cnt_down_reserved`: every FCntDown
//! ever handed out is below it. The agent keeps a window in memory (`next`,
//! `reserved_until`) and hands counters out of it; when the window is used up it first
//! moves the mark [`FCNT_DOWN_RESERVATION`] ahead in a transaction committed with
//! `synchronous=FULL` (so the WAL is synced: the reservation survives a power cut), and
//! only then returns the counter. The window is loaded lazily as `next =
//! reserved_until = f_cnt_down_reserved`, so after a crash the session resumes at the
//! mark: at most [`FCNT_DOWN_RESERVATION`] counters are skipped, none reused (LoRaWAN
//! devices accept gaps). A clean [`Storage::shutdown`] gives the unused part back.

use rusqlite::{params, TransactionBehavior};

use super::{Storage, StorageError};
use crate::identifiers::DevEui;

/// How many FCntDown values one synced write reserves.
pub const FCNT_DOWN_RESERVATION: u64 = 64;

/// FCntDown is a 32-bit counter: values `0 ..= 2^32 - 1`.
const FCNT_DOWN_LIMIT: u64 = 1 << 32;

/// The in-memory part: counters in `next .. reserved_until` are durably reserved and
/// not yet handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FCntDownWindow {
    next: u64,
    reserved_until: u64,
}

impl Storage {
    /// The next FCntDown for the device's session: never returned before for this
    /// session, by this process or any earlier one. Use it or lose it (gaps are fine).
    ///
    /// Costs one synced commit every [`FCNT_DOWN_RESERVATION`] calls. Call it before
    /// building the frame, outside any [`Storage::write`] transaction.
    pub fn next_f_cnt_down(&mut self, dev_eui: DevEui) -> Result<u32, StorageError> {
        let mut window = match self.fcnt_down_windows.get(&dev_eui) {
            Some(window) => *window,
            None => {
                let counters = self
                    .session_counters(dev_eui)?
                    .ok_or(StorageError::NoSession(dev_eui))?;
                FCntDownWindow {
                    next: counters.f_cnt_down_reserved,
                    reserved_until: counters.f_cnt_down_reserved,
                }
            }
        };
        if window.next >= FCNT_DOWN_LIMIT {
            return Err(StorageError::FCntDownExhausted(dev_eui));
        }
        if window.next >= window.reserved_until {
            let mark = (window.next + FCNT_DOWN_RESERVATION).min(FCNT_DOWN_LIMIT);
            self.reserve_durably(dev_eui, window.next, mark)?;
            window.reserved_until = mark;
        }
        let counter =
            u32::try_from(window.next).map_err(|_| StorageError::FCntDownExhausted(dev_eui))?;
        window.next += 1;
        self.fcnt_down_windows.insert(dev_eui, window);
        Ok(counter)
    }

    /// Moves the device's mark to `mark` in a commit synced to disk.
    fn reserve_durably(
        &mut self,
        dev_eui: DevEui,
        next: u64,
        mark: u64,
    ) -> Result<(), StorageError> {
        self.connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(StorageError::sql(
                "enabling synchronous=FULL for a reservation",
            ))?;
        let reserved = self.write_reservation(dev_eui, next, mark);
        let restored = self
            .connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(StorageError::sql("restoring synchronous=NORMAL"));
        reserved.and(restored)
    }

    fn write_reservation(
        &mut self,
        dev_eui: DevEui,
        next: u64,
        mark: u64,
    ) -> Result<(), StorageError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StorageError::sql("beginning an FCntDown reservation"))?;
        // Never lower a mark: another writer (a newer window) may have moved it further.
        let updated = transaction
            .execute(
                "UPDATE device_sessions SET n_f_cnt_down = ?2, \
                 f_cnt_down_reserved = max(f_cnt_down_reserved, ?3) WHERE dev_eui = ?1",
                params![dev_eui.to_string(), next as i64, mark as i64],
            )
            .map_err(StorageError::sql("reserving FCntDown values"))?;
        if updated == 0 {
            return Err(StorageError::NoSession(dev_eui));
        }
        transaction
            .commit()
            .map_err(StorageError::sql("committing an FCntDown reservation"))
    }

    /// Lowers each mark this process raised back to the next unused counter (clean
    /// shutdown only: every counter below `next` was handed out).
    pub(crate) fn release_fcnt_down_reservations(&mut self) -> Result<(), StorageError> {
        let windows: Vec<(DevEui, FCntDownWindow)> = self.fcnt_down_windows.drain().collect();
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StorageError::sql("beginning the FCntDown release"))?;
        for (dev_eui, window) in windows {
            transaction
                .execute(
                    "UPDATE device_sessions SET n_f_cnt_down = ?2, f_cnt_down_reserved = ?2 \
                     WHERE dev_eui = ?1 AND f_cnt_down_reserved = ?3",
                    params![
                        dev_eui.to_string(),
                        window.next as i64,
                        window.reserved_until as i64
                    ],
                )
                .map_err(StorageError::sql("releasing unused FCntDown values"))?;
        }
        transaction
            .commit()
            .map_err(StorageError::sql("committing the FCntDown release"))
    }
}
