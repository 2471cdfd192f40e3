//! The received-fragment journal: which uncoded fragments are safely in the download
//! slot, as 8-byte window records appended through
//! [`crate::SessionStore::append_fragment`].
//!
//! # Record (8 bytes, one flash double-word)
//!
//! ```text
//! 0..5   bitmap    fragments 40·w + 1 … 40·w + 40, bit i = fragment 40·w + 1 + i
//! 5..7   u16 LE    [epoch:2 | w:14]   session epoch (generation mod 4), window index
//! 7      CRC-8     (poly 0x07) of bytes 0..7: a torn record reads as invalid
//! ```
//!
//! Records are cumulative: the fragments of a window are the union of its records.
//!
//! # What is journaled, and when
//!
//! A fragment is journaled once it is *durable*: every flash granule it touches is
//! programmed. When FragSize is not a multiple of the 8-byte granule, the granule a
//! fragment shares with a neighbour is programmed only once both are known; until then
//! its bytes are in the decoder's RAM, which a reboot loses. So fragment `n` becomes
//! durable when it and every fragment sharing its edge granules are known, and its
//! arrival can make neighbours durable too.
//!
//! The [`JournalWriter`] keeps the current window in RAM and appends it when a durable
//! fragment falls in another window, or when the window is full. In-order delivery
//! (what servers do: uncoded fragments in sequence, then coded ones) thus costs about
//! one record per 40 fragments: the largest TS004 block (NbFrag 16 383) needs 410
//! records, 3 280 bytes, within the 4 KB journal of the STM32WL layout (the old format,
//! 16 bytes per fragment, needed 32 KB at NbFrag 2000). Worst-case delivery order (every
//! fragment in another window than the last) costs a record per fragment; when the
//! journal is full the rest is simply not journaled (the download continues; a reboot
//! loses those fragments, and coded fragments or a later session bring them back).
//!
//! What a power cut loses: the window in RAM (at most 39 fragments) and fragments
//! waiting for a neighbour. They are in the slot but not journaled: received again,
//! they program nothing new (`regions::ResumableSlot`).

use crate::platform::FRAGMENT_RECORD_LEN;

/// Fragments per window record.
pub(crate) const WINDOW_FRAGMENTS: u16 = 40;

/// One window record; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowRecord {
    pub epoch: u8,
    pub window: u16,
    /// Bit i: fragment `40·window + 1 + i` (40 bits used).
    pub bits: u64,
}

fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &byte in bytes {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl WindowRecord {
    /// The window of fragment `number` (1-based).
    pub fn window_of(number: u16) -> u16 {
        number.saturating_sub(1) / WINDOW_FRAGMENTS
    }

    /// The 8 bytes of the record.
    pub fn encode(&self) -> [u8; FRAGMENT_RECORD_LEN] {
        let mut out = [0u8; FRAGMENT_RECORD_LEN];
        out[..5].copy_from_slice(&self.bits.to_le_bytes()[..5]);
        let tag = u16::from(self.epoch & 0x03) << 14 | (self.window & 0x3FFF);
        out[5..7].copy_from_slice(&tag.to_le_bytes());
        out[7] = crc8(&out[..7]);
        out
    }

    /// The record in `bytes`, or `None` if its CRC fails (a torn or foreign record).
    pub fn decode(bytes: &[u8; FRAGMENT_RECORD_LEN]) -> Option<Self> {
        if crc8(&bytes[..7]) != bytes[7] {
            return None;
        }
        let mut bits = [0u8; 8];
        bits[..5].copy_from_slice(&bytes[..5]);
        let tag = u16::from_le_bytes([bytes[5], bytes[6]]);
        Some(WindowRecord {
            epoch: (tag >> 14) as u8,
            window: tag & 0x3FFF,
            bits: u64::from_le_bytes(bits),
        })
    }

    /// The fragment numbers the record names, up to `nb_frag`.
    pub fn fragments(&self, nb_frag: u16) -> impl Iterator<Item = u16> + '_ {
        let first = u32::from(self.window) * u32::from(WINDOW_FRAGMENTS) + 1;
        (0..u32::from(WINDOW_FRAGMENTS))
            .filter(move |i| self.bits >> i & 1 == 1)
            .map(move |i| first + i)
            .filter(move |&n| n <= u32::from(nb_frag))
            .map(|n| n as u16)
    }
}

/// The block geometry the durability rule needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockGeometry {
    pub nb_frag: u16,
    pub frag_size: u16,
    /// Flash write granule (1..=8).
    pub granule: u16,
}

impl BlockGeometry {
    /// Fragments (1-based) overlapping granule `g`, as an inclusive range.
    fn fragments_of_granule(&self, g: u32) -> (u16, u16) {
        let size = u32::from(self.frag_size.max(1));
        let granule = u32::from(self.granule.max(1));
        let first = (g * granule) / size + 1;
        let last = ((g + 1) * granule - 1) / size + 1;
        (
            first.min(u32::from(self.nb_frag)) as u16,
            last.min(u32::from(self.nb_frag)) as u16,
        )
    }

    /// The first and last granule of fragment `n`.
    fn edge_granules(&self, n: u16) -> (u32, u32) {
        let size = u32::from(self.frag_size.max(1));
        let granule = u32::from(self.granule.max(1));
        let start = u32::from(n.saturating_sub(1)) * size;
        (start / granule, (start + size - 1) / granule)
    }

    /// True if every fragment sharing an edge granule with `n` (and `n`) is known.
    fn is_durable(&self, n: u16, known: &impl Fn(u16) -> bool) -> bool {
        let (g0, g1) = self.edge_granules(n);
        [g0, g1].into_iter().all(|g| {
            let (first, last) = self.fragments_of_granule(g);
            (first..=last).all(known)
        })
    }
}

/// Records a journal write produces (at most two: a window left, and a window filled).
pub(crate) type Appends = heapless::Vec<[u8; FRAGMENT_RECORD_LEN], 4>;

/// Turns "fragment n is known now" into window records; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct JournalWriter {
    pending: Option<WindowRecord>,
}

impl JournalWriter {
    /// Uncoded fragment `n` just became known (`known` tells the decoder's view, `n`
    /// included): the records to append now.
    pub fn fragment_known(
        &mut self,
        n: u16,
        epoch: u8,
        geometry: &BlockGeometry,
        known: impl Fn(u16) -> bool,
    ) -> Appends {
        let mut out = Appends::new();
        if n == 0 || n > geometry.nb_frag {
            return out;
        }
        // n and the fragments sharing its edge granules may have become durable.
        let (g0, g1) = geometry.edge_granules(n);
        let (first, _) = geometry.fragments_of_granule(g0);
        let (_, last) = geometry.fragments_of_granule(g1);
        for candidate in first..=last {
            let shares_edge = candidate == n || {
                let (c0, c1) = geometry.edge_granules(candidate);
                [c0, c1].iter().any(|g| *g == g0 || *g == g1)
            };
            if shares_edge && known(candidate) && geometry.is_durable(candidate, &known) {
                self.mark(candidate, epoch, geometry.nb_frag, &mut out);
            }
        }
        out
    }

    fn mark(&mut self, number: u16, epoch: u8, nb_frag: u16, out: &mut Appends) {
        let window = WindowRecord::window_of(number);
        if let Some(pending) = self.pending {
            if pending.window != window || pending.epoch != epoch {
                let _ = out.push(pending.encode());
                self.pending = None;
            }
        }
        let record = self.pending.get_or_insert(WindowRecord {
            epoch,
            window,
            bits: 0,
        });
        record.bits |= 1 << ((number - 1) % WINDOW_FRAGMENTS);
        let window_end = (u32::from(window) + 1) * u32::from(WINDOW_FRAGMENTS);
        let in_window = window_end
            .min(u32::from(nb_frag))
            .saturating_sub(u32::from(window) * u32::from(WINDOW_FRAGMENTS));
        if record.bits.count_ones() == in_window {
            let _ = out.push(record.encode());
            self.pending = None;
        }
    }

    /// The window held in RAM, to append before a reboot or a restart of the node.
    pub fn flush(&mut self) -> Option<[u8; FRAGMENT_RECORD_LEN]> {
        self.pending.take().map(|record| record.encode())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    #[test]
    fn records_round_trip_and_torn_ones_are_refused() {
        let record = WindowRecord {
            epoch: 3,
            window: 409,
            bits: 0xAB_CDEF_0123,
        };
        let bytes = record.encode();
        assert_eq!(WindowRecord::decode(&bytes), Some(record));
        for i in 0..64 {
            let mut torn = bytes;
            torn[i / 8] ^= 1 << (i % 8);
            assert_eq!(WindowRecord::decode(&torn), None, "bit {i}");
        }
        assert_eq!(WindowRecord::decode(&[0xFF; 8]), None);
        let fragments: Vec<u16> = WindowRecord {
            epoch: 0,
            window: 1,
            bits: 0b101,
        }
        .fragments(100)
        .collect();
        assert_eq!(fragments, [41, 43]);
    }

    /// Feeds `order` (with `lost` never arriving) and returns the journaled set and the
    /// number of records.
    fn journal(geometry: BlockGeometry, order: &[u16]) -> (BTreeSet<u16>, usize) {
        let mut known = BTreeSet::new();
        let mut writer = JournalWriter::default();
        let mut records = Vec::new();
        for &n in order {
            known.insert(n);
            records.extend(writer.fragment_known(n, 1, &geometry, |c| known.contains(&c)));
        }
        records.extend(writer.flush());
        let mut journaled = BTreeSet::new();
        for bytes in &records {
            let record = WindowRecord::decode(bytes).expect("valid");
            journaled.extend(record.fragments(geometry.nb_frag));
        }
        (journaled, records.len())
    }

    fn durable_set(geometry: BlockGeometry, received: &BTreeSet<u16>) -> BTreeSet<u16> {
        received
            .iter()
            .copied()
            .filter(|&n| geometry.is_durable(n, &|c| received.contains(&c)))
            .collect()
    }

    #[test]
    fn exactly_the_durable_fragments_are_journaled_whatever_the_order() {
        for frag_size in [3u16, 6, 48, 50, 232] {
            let geometry = BlockGeometry {
                nb_frag: 500,
                frag_size,
                granule: 8,
            };
            let mut seed = u64::from(frag_size) * 7919 + 1;
            let mut rng = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut order: Vec<u16> = (1..=500).filter(|_| rng() % 10 != 0).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, (rng() % (i as u64 + 1)) as usize);
            }
            let received: BTreeSet<u16> = order.iter().copied().collect();
            let (journaled, _) = journal(geometry, &order);
            assert_eq!(journaled, durable_set(geometry, &received), "S={frag_size}");
            if frag_size.is_multiple_of(8) {
                assert_eq!(journaled, received);
            }
        }
    }

    #[test]
    fn the_largest_block_in_order_fits_the_4_kb_journal() {
        // NbFrag 16383 (the TS004 maximum), in order, 10 % lost.
        for frag_size in [5u16, 48] {
            let geometry = BlockGeometry {
                nb_frag: 16_383,
                frag_size,
                granule: 8,
            };
            let order: Vec<u16> = (1..=16_383).filter(|n| n % 10 != 7).collect();
            let (journaled, records) = journal(geometry, &order);
            assert!(
                records * FRAGMENT_RECORD_LEN <= 4096,
                "S={frag_size}: {records} records"
            );
            let received: BTreeSet<u16> = order.iter().copied().collect();
            assert_eq!(journaled, durable_set(geometry, &received));
        }
    }
}
