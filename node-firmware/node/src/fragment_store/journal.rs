//! The received-fragment journal record: one per uncoded fragment stored in the
//! download slot, appended through [`crate::SessionStore::append_fragment`].
//!
//! Layout (16 bytes, little-endian):
//!
//! ```text
//! 0..2   [epoch:2 | N:14]   session epoch (generation mod 4) and fragment counter
//! 2..9   head               the fragment's first 7 bytes (0xFF past its end)
//! 9..16  tail               the fragment's last 7 bytes (0xFF before its start)
//! ```
//!
//! Why the edges: when FragSize is not a multiple of the flash write granule, the
//! granule a fragment shares with a neighbour can only be programmed once both are
//! known; until then the decoder holds those bytes in RAM, and a reboot loses them. A
//! fragment's share of such a granule is at most granule − 1 ≤ 7 bytes at each end, so
//! the record keeps both ends and the slot keeps everything in between.
//!
//! The epoch guards against records of an earlier session that a failed journal clear
//! left behind.

use crate::platform::FRAGMENT_RECORD_LEN;

/// Bytes kept from each end of a fragment.
pub(crate) const EDGE_BYTES: usize = 7;

/// One journal record; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragmentRecord {
    pub epoch: u8,
    pub number: u16,
    head: [u8; EDGE_BYTES],
    tail: [u8; EDGE_BYTES],
}

impl FragmentRecord {
    /// The record for uncoded fragment `number` with payload `data`.
    pub fn new(epoch: u8, number: u16, data: &[u8]) -> Self {
        let edge = data.len().min(EDGE_BYTES);
        let mut head = [0xFF; EDGE_BYTES];
        let mut tail = [0xFF; EDGE_BYTES];
        head[..edge].copy_from_slice(&data[..edge]);
        tail[EDGE_BYTES - edge..].copy_from_slice(&data[data.len() - edge..]);
        FragmentRecord {
            epoch: epoch & 0x03,
            number: number & 0x3FFF,
            head,
            tail,
        }
    }

    /// The 16 bytes of the record.
    pub fn encode(&self) -> [u8; FRAGMENT_RECORD_LEN] {
        let mut out = [0u8; FRAGMENT_RECORD_LEN];
        let tag = u16::from(self.epoch) << 14 | self.number;
        out[..2].copy_from_slice(&tag.to_le_bytes());
        out[2..2 + EDGE_BYTES].copy_from_slice(&self.head);
        out[2 + EDGE_BYTES..].copy_from_slice(&self.tail);
        out
    }

    /// The record in `bytes` (every 16-byte value is a syntactically valid record; the
    /// caller checks epoch and number against the session).
    pub fn decode(bytes: &[u8; FRAGMENT_RECORD_LEN]) -> Self {
        let tag = u16::from_le_bytes([bytes[0], bytes[1]]);
        let mut head = [0u8; EDGE_BYTES];
        let mut tail = [0u8; EDGE_BYTES];
        head.copy_from_slice(&bytes[2..2 + EDGE_BYTES]);
        tail.copy_from_slice(&bytes[2 + EDGE_BYTES..]);
        FragmentRecord {
            epoch: (tag >> 14) as u8,
            number: tag & 0x3FFF,
            head,
            tail,
        }
    }

    /// Writes the kept edges over `fragment` (read back from the slot, where the edge
    /// granules may still be erased).
    pub fn restore_edges(&self, fragment: &mut [u8]) {
        let len = fragment.len();
        let edge = len.min(EDGE_BYTES);
        fragment[len - edge..].copy_from_slice(&self.tail[EDGE_BYTES - edge..]);
        fragment[..edge].copy_from_slice(&self.head[..edge]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_round_trip_for_long_and_short_fragments() {
        for len in [1usize, 3, 7, 8, 13, 14, 15, 50, 255] {
            let data: heapless::Vec<u8, 255> = (0..len).map(|i| i as u8 ^ 0x5A).collect();
            let record = FragmentRecord::new(3, 16383, &data);
            let decoded = FragmentRecord::decode(&record.encode());
            assert_eq!(decoded, record);
            assert_eq!((decoded.epoch, decoded.number), (3, 16383));
            let mut from_flash: heapless::Vec<u8, 255> = data.clone();
            let edge = len.min(EDGE_BYTES);
            from_flash[..edge].fill(0xFF);
            from_flash[len - edge..].fill(0xFF);
            decoded.restore_edges(&mut from_flash);
            assert_eq!(from_flash, data, "length {len}");
        }
    }
}
