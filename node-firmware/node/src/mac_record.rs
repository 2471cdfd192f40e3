//! [`MacRecord`]: what the firmware keeps of its LoRaWAN MAC across resets, in the
//! session store's [`crate::RECORD_LORAWAN`] record: the DevNonce counter and the
//! unicast session (DevAddr, session keys, frame counters).
//!
//! # Why
//!
//! - **DevNonce.** LoRaWAN 1.0.4 makes the DevNonce of a join request a counter that
//!   never repeats for the device's lifetime; a network server refuses a DevNonce it has
//!   seen (or, from 1.0.4 on, one not above the last). A device that forgets it on reset
//!   cannot join again. The counter is saved *before* each join request goes on the
//!   air ([`MacRecord::take_dev_nonce`]), so a reset after the request never reuses it.
//! - **Session.** A device that keeps its session across a reset (an update's reboot
//!   included: the application state pages survive a swap) needs no new join, and the
//!   FUOTA server sees it back at once. Frame counters must never go back:
//!   `FCntUp` is reserved ahead in steps of [`FCNT_UP_RESERVATION`]
//!   ([`MacRecord::reserve_uplink`]); a restored session starts at the reserved limit,
//!   so no FCntUp is used twice without a flash write per uplink.
//!
//! - **Data rate.** The session's uplinks keep the data rate its join was accepted at
//!   (the network server does no ADR the device follows), so a device far from the
//!   gateway is still heard after a reset.
//!
//! # Format (version 1, little-endian; the store adds its own CRC)
//!
//! ```text
//! 0        format version (1)
//! 1        flags: bit 0 = a session follows
//! 2..4     next DevNonce (u16)
//! 4..8     DevAddr (u32)                         — with a session only
//! 8..24    NwkSKey
//! 24..40   AppSKey
//! 40..44   FCntUp limit: the next FCntUp after a restore (u32)
//! 44..48   FCntDown last accepted (u32)
//! 48       uplink data rate (the region's DR index)
//! ```
//!
//! Bytes 0..4 keep this meaning in every later version, and a later version's record is
//! at most [`MAC_RECORD_READ_LEN`] bytes long. An image that finds a record it
//! cannot read (one a newer image wrote, before a revert to this one) still continues the
//! DevNonce counter from it ([`MacRecord::salvage`]) and joins again: a counter
//! restarted at 0 would be refused by the network server for good.

/// Format version written in byte 0.
const FORMAT_VERSION: u8 = 1;
/// Flag: the record holds a session.
const FLAG_SESSION: u8 = 0x01;
/// Length of a record without a session.
const LEN_WITHOUT_SESSION: usize = 4;
/// Length of a record with a session; the largest a record gets.
pub const MAC_RECORD_MAX_LEN: usize = 49;
/// The buffer a record is read into: room for what later versions add.
pub const MAC_RECORD_READ_LEN: usize = 128;
/// The value of an erased flash byte: never a format version.
const ERASED: u8 = 0xFF;

/// FCntUp values reserved by one save: a restored session starts up to this far ahead
/// of the last uplink, and the record is written once per this many uplinks.
pub const FCNT_UP_RESERVATION: u32 = 64;

/// A LoRaWAN 1.0.x unicast session as the firmware keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacSession {
    /// DevAddr.
    pub dev_addr: u32,
    /// Network session key (NwkSKey).
    pub nwk_s_key: [u8; 16],
    /// Application session key (AppSKey).
    pub app_s_key: [u8; 16],
    /// Uplinks may use FCntUp values below this without saving again; a restored
    /// session continues from it.
    pub fcnt_up_limit: u32,
    /// The last FCntDown the device accepted (a restored session refuses older ones).
    pub fcnt_down: u32,
    /// The data rate (the region's DR index) the session's uplinks use.
    pub data_rate: u8,
}

/// The firmware's persistent MAC state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MacRecord {
    /// DevNonce of the next join request.
    pub next_dev_nonce: u16,
    /// The session, once joined.
    pub session: Option<MacSession>,
}

/// Why a stored [`MacRecord`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacRecordError {
    /// Shorter than its flags say.
    Truncated {
        /// Its length.
        len: usize,
    },
    /// A format version this firmware does not know (written by a newer image).
    UnknownVersion(u8),
    /// Flag bits this format does not define.
    UnknownFlags(u8),
}

/// Every DevNonce of the device's life has been used: it can never join again with
/// this JoinEUI (LoRaWAN 1.0.4 §6.2.5: the device must not wrap the counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNoncesExhausted;

impl MacRecord {
    /// The record's bytes; the returned length is used of the buffer.
    pub fn encode(&self) -> ([u8; MAC_RECORD_MAX_LEN], usize) {
        let mut bytes = [0u8; MAC_RECORD_MAX_LEN];
        bytes[0] = FORMAT_VERSION;
        bytes[2..4].copy_from_slice(&self.next_dev_nonce.to_le_bytes());
        let Some(session) = &self.session else {
            return (bytes, LEN_WITHOUT_SESSION);
        };
        bytes[1] = FLAG_SESSION;
        bytes[4..8].copy_from_slice(&session.dev_addr.to_le_bytes());
        bytes[8..24].copy_from_slice(&session.nwk_s_key);
        bytes[24..40].copy_from_slice(&session.app_s_key);
        bytes[40..44].copy_from_slice(&session.fcnt_up_limit.to_le_bytes());
        bytes[44..48].copy_from_slice(&session.fcnt_down.to_le_bytes());
        bytes[48] = session.data_rate;
        (bytes, MAC_RECORD_MAX_LEN)
    }

    /// Reads a record written by [`MacRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MacRecordError> {
        let truncated = MacRecordError::Truncated { len: bytes.len() };
        let [version, flags, nonce_low, nonce_high, ..] = *bytes else {
            return Err(truncated);
        };
        if version != FORMAT_VERSION {
            return Err(MacRecordError::UnknownVersion(version));
        }
        if flags & !FLAG_SESSION != 0 {
            return Err(MacRecordError::UnknownFlags(flags));
        }
        let next_dev_nonce = u16::from_le_bytes([nonce_low, nonce_high]);
        if flags & FLAG_SESSION == 0 {
            return Ok(MacRecord {
                next_dev_nonce,
                session: None,
            });
        }
        let Some(fields) = bytes.get(4..MAC_RECORD_MAX_LEN) else {
            return Err(truncated);
        };
        let word = |at: usize| {
            let mut value = [0u8; 4];
            value.copy_from_slice(&fields[at..at + 4]);
            u32::from_le_bytes(value)
        };
        let key = |at: usize| {
            let mut value = [0u8; 16];
            value.copy_from_slice(&fields[at..at + 16]);
            value
        };
        Ok(MacRecord {
            next_dev_nonce,
            session: Some(MacSession {
                dev_addr: word(0),
                nwk_s_key: key(4),
                app_s_key: key(20),
                fcnt_up_limit: word(36),
                fcnt_down: word(40),
                data_rate: fields[44],
            }),
        })
    }

    /// What an image keeps of a record [`MacRecord::decode`] refused: the DevNonce
    /// counter (bytes 2..4 in every version), without the session. `None` when the bytes
    /// are no record at all (too short, version 0 or erased flash).
    pub fn salvage(bytes: &[u8]) -> Option<Self> {
        match *bytes {
            [version, _, nonce_low, nonce_high, ..] if version != 0 && version != ERASED => {
                Some(MacRecord {
                    next_dev_nonce: u16::from_le_bytes([nonce_low, nonce_high]),
                    session: None,
                })
            }
            _ => None,
        }
    }

    /// The DevNonce for the join request about to be sent: the counter is advanced and
    /// the session dropped (a join replaces it). Save the record before the request
    /// goes on the air.
    pub fn take_dev_nonce(&mut self) -> Result<u16, DevNoncesExhausted> {
        let nonce = self.next_dev_nonce;
        self.next_dev_nonce = nonce.checked_add(1).ok_or(DevNoncesExhausted)?;
        self.session = None;
        Ok(nonce)
    }

    /// A join was accepted at `data_rate`: the new session starts at FCntUp 0, with the
    /// first reservation made, its uplinks at that data rate. Save the record before the
    /// first uplink.
    pub fn joined(
        &mut self,
        dev_addr: u32,
        nwk_s_key: [u8; 16],
        app_s_key: [u8; 16],
        data_rate: u8,
    ) {
        self.session = Some(MacSession {
            dev_addr,
            nwk_s_key,
            app_s_key,
            fcnt_up_limit: FCNT_UP_RESERVATION,
            fcnt_down: 0,
            data_rate,
        });
    }

    /// Before an uplink with `fcnt_up`: true if the record changed (the reservation ran
    /// out and was extended) and must be saved before the uplink is sent. `fcnt_down` is
    /// the session's current FCntDown, taken along whenever the record is saved.
    pub fn reserve_uplink(&mut self, fcnt_up: u32, fcnt_down: u32) -> bool {
        let Some(session) = &mut self.session else {
            return false;
        };
        if fcnt_up < session.fcnt_up_limit {
            return false;
        }
        session.fcnt_up_limit = fcnt_up.saturating_add(FCNT_UP_RESERVATION);
        session.fcnt_down = session.fcnt_down.max(fcnt_down);
        true
    }

    /// Records the session's current FCntDown (saved with the next write; call it
    /// before a planned reset and save).
    pub fn note_fcnt_down(&mut self, fcnt_down: u32) {
        if let Some(session) = &mut self.session {
            session.fcnt_down = session.fcnt_down.max(fcnt_down);
        }
    }

    /// Forgets the session (it expired, or the network server no longer knows it); the
    /// DevNonce counter is kept.
    pub fn forget_session(&mut self) {
        self.session = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined_record() -> MacRecord {
        let mut record = MacRecord {
            next_dev_nonce: 7,
            session: None,
        };
        record.joined(0x2601_0001, [0x11; 16], [0x22; 16], 3);
        record
    }

    #[test]
    fn records_round_trip_with_and_without_a_session() {
        let fresh = MacRecord::default();
        let (bytes, len) = fresh.encode();
        assert_eq!(len, 4);
        assert_eq!(MacRecord::decode(&bytes[..len]), Ok(fresh));

        let mut record = joined_record();
        record.reserve_uplink(64, 9);
        let (bytes, len) = record.encode();
        assert_eq!(len, MAC_RECORD_MAX_LEN);
        let decoded = MacRecord::decode(&bytes[..len]).unwrap();
        assert_eq!(decoded, record);
        let session = decoded.session.unwrap();
        assert_eq!(session.dev_addr, 0x2601_0001);
        assert_eq!(session.fcnt_up_limit, 128);
        assert_eq!(session.fcnt_down, 9);
        assert_eq!(session.app_s_key, [0x22; 16]);
        assert_eq!(session.data_rate, 3);
    }

    #[test]
    fn damaged_or_foreign_records_are_refused() {
        let (bytes, len) = joined_record().encode();
        assert_eq!(
            MacRecord::decode(&bytes[..len - 1]),
            Err(MacRecordError::Truncated { len: len - 1 })
        );
        assert_eq!(
            MacRecord::decode(&bytes[..3]),
            Err(MacRecordError::Truncated { len: 3 })
        );
        let mut newer = bytes;
        newer[0] = 2;
        assert_eq!(
            MacRecord::decode(&newer[..len]),
            Err(MacRecordError::UnknownVersion(2))
        );
        let mut flagged = bytes;
        flagged[1] |= 0x80;
        assert_eq!(
            MacRecord::decode(&flagged[..len]),
            Err(MacRecordError::UnknownFlags(0x81))
        );
        // Erased flash is not a record either.
        assert_eq!(
            MacRecord::decode(&[0xFF; MAC_RECORD_MAX_LEN]),
            Err(MacRecordError::UnknownVersion(0xFF))
        );
    }

    #[test]
    fn a_record_this_image_cannot_read_still_gives_its_dev_nonce_counter() {
        let (bytes, len) = joined_record().encode();
        let counter_only = MacRecord {
            next_dev_nonce: 7,
            session: None,
        };
        // A newer image's record (after a revert), longer and with flags this one does
        // not know: the counter goes on, the session is dropped (the device joins again).
        let mut newer = [0u8; 64];
        newer[..len].copy_from_slice(&bytes[..len]);
        newer[0] = 2;
        newer[1] = 0x83;
        assert!(MacRecord::decode(&newer).is_err());
        assert_eq!(MacRecord::salvage(&newer), Some(counter_only));
        let mut flagged = bytes;
        flagged[1] |= 0x80;
        assert_eq!(MacRecord::salvage(&flagged[..len]), Some(counter_only));
        // A session record cut short (an earlier layout) keeps its counter too.
        assert_eq!(MacRecord::salvage(&bytes[..len - 1]), Some(counter_only));
        // Nothing to salvage from what is no record.
        assert_eq!(MacRecord::salvage(&bytes[..3]), None);
        assert_eq!(MacRecord::salvage(&[0xFF; MAC_RECORD_MAX_LEN]), None);
        assert_eq!(MacRecord::salvage(&[0; MAC_RECORD_MAX_LEN]), None);
    }

    #[test]
    fn dev_nonces_count_up_never_repeat_and_drop_the_session() {
        let mut record = joined_record();
        assert_eq!(record.take_dev_nonce(), Ok(7));
        assert_eq!(record.session, None, "a join request replaces the session");
        assert_eq!(record.take_dev_nonce(), Ok(8));
        assert_eq!(record.next_dev_nonce, 9);

        let mut last = MacRecord {
            next_dev_nonce: u16::MAX,
            session: None,
        };
        assert_eq!(last.take_dev_nonce(), Err(DevNoncesExhausted));
        assert_eq!(
            last.next_dev_nonce,
            u16::MAX,
            "an exhausted counter is not wrapped to a used value"
        );
    }

    #[test]
    fn uplinks_save_once_per_reservation_and_a_restore_never_reuses_a_counter() {
        let mut record = joined_record();
        let mut saved = record;
        let mut saves = 0;
        // The device sends 200 uplinks, saving when asked; a reset can come after any.
        for fcnt_up in 0..200u32 {
            if record.reserve_uplink(fcnt_up, fcnt_up / 2) {
                saved = record;
                saves += 1;
            }
            let restored = saved.session.unwrap();
            assert!(
                restored.fcnt_up_limit > fcnt_up,
                "after uplink {fcnt_up}, a restore would start at {}",
                restored.fcnt_up_limit
            );
        }
        // 0..63 are covered by the join's reservation, then one save per 64.
        assert_eq!(saves, 3);
        assert_eq!(saved.session.unwrap().fcnt_up_limit, 192 + 64);
    }

    #[test]
    fn fcnt_down_never_goes_back_and_no_session_means_nothing_to_reserve() {
        let mut record = joined_record();
        record.note_fcnt_down(12);
        record.note_fcnt_down(5);
        assert_eq!(record.session.unwrap().fcnt_down, 12);
        record.forget_session();
        assert!(!record.reserve_uplink(1000, 0));
        assert_eq!(record.next_dev_nonce, 7, "the counter outlives the session");
    }
}
