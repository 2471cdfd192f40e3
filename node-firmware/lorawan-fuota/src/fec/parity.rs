//! PRBS-23 and the TS004 parity rows C(n, M).
//!
//! Reference: `applayer.md` §3.7.2–3.7.3. Row n (n = N − M ≥ 1) starts from the seed
//! `1 + 1001·n` (not masked to 23 bits) and draws columns `x mod M'` with a PRBS-23,
//! rejecting draws ≥ M, where M' = M + 1 when M is a power of two (else M), until
//! ⌊M/2⌋ draws were counted:
//!
//! - v1 counts every draw, so a repeated column leaves the row lighter;
//! - v2 counts only distinct columns.
//!
//! Rows are bitmaps, column i (0-based, i.e. B_{i+1}) at bit `i % 8` of byte `i / 8`.

use crate::codec::PackageVersion;
use core::fmt;

/// One step of the PRBS-23 generator (x²³ + x¹⁸ + 1, right-shifting form).
pub const fn prbs23(x: u32) -> u32 {
    let feedback = (x ^ (x >> 5)) & 1;
    (x >> 1) | (feedback << 22)
}

/// Why a parity row could not be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParityRowError {
    /// M = 0: there is no block to protect.
    NoFragments,
    /// n = 0: coded fragments are numbered from 1 (N = M + 1).
    ZeroRowIndex,
    /// The bitmap is shorter than ⌈M/8⌉ bytes.
    RowBufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
}

impl fmt::Display for ParityRowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParityRowError::NoFragments => f.write_str("parity row for a block of 0 fragments"),
            ParityRowError::ZeroRowIndex => {
                f.write_str("parity row index 0: coded fragments start at n = 1 (N = M + 1)")
            }
            ParityRowError::RowBufferTooSmall { needed, available } => write!(
                f,
                "parity row buffer of {available} byte(s), {needed} needed"
            ),
        }
    }
}

impl core::error::Error for ParityRowError {}

/// Bytes of a bitmap with one bit per uncoded fragment.
pub const fn row_bytes(nb_frag: u16) -> usize {
    (nb_frag as usize).div_ceil(8)
}

/// Writes parity row C(n, M) as a bitmap into `row` (its first ⌈M/8⌉ bytes; bits past M
/// are zero).
///
/// For M = 1 the row is empty (⌊1/2⌋ = 0 columns): such coded fragments carry nothing.
pub fn parity_row(
    n: u32,
    nb_frag: u16,
    version: PackageVersion,
    row: &mut [u8],
) -> Result<(), ParityRowError> {
    if nb_frag == 0 {
        return Err(ParityRowError::NoFragments);
    }
    if n == 0 {
        return Err(ParityRowError::ZeroRowIndex);
    }
    let needed = row_bytes(nb_frag);
    let Some(row) = row.get_mut(..needed) else {
        return Err(ParityRowError::RowBufferTooSmall {
            needed,
            available: row.len(),
        });
    };
    row.fill(0);
    let m = u32::from(nb_frag);
    let modulus = if m.is_power_of_two() { m + 1 } else { m };
    // n ≤ 16383 in practice; wrapping keeps absurd callers panic-free.
    let mut x = 1u32.wrapping_add(1001u32.wrapping_mul(n));
    let mut counted = 0;
    while counted < m / 2 {
        let column = loop {
            x = prbs23(x);
            let r = x % modulus;
            if r < m {
                break r as usize;
            }
        };
        let byte = &mut row[column / 8];
        let bit = 1u8 << (column % 8);
        match version {
            PackageVersion::V1 => {
                *byte |= bit;
                counted += 1;
            }
            PackageVersion::V2 => {
                if *byte & bit == 0 {
                    *byte |= bit;
                    counted += 1;
                }
            }
        }
    }
    Ok(())
}

/// True if column `i` of a row bitmap is set.
#[inline]
pub fn bit(row: &[u8], i: usize) -> bool {
    row.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1)
}

/// Iterates the set columns of a row bitmap, in increasing order.
pub fn set_columns(row: &[u8]) -> impl Iterator<Item = usize> + '_ {
    row.iter().enumerate().flat_map(|(byte_index, &byte)| {
        (0..8).filter_map(move |b| (byte >> b & 1 == 1).then_some(byte_index * 8 + b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prbs_sequence_from_seed_1002() {
        let mut x = 1002;
        let mut seq = [0u32; 8];
        for v in &mut seq {
            x = prbs23(x);
            *v = x;
        }
        assert_eq!(
            seq,
            [4194805, 2097402, 5243005, 2621502, 5505055, 6946831, 7667719, 8028163]
        );
    }

    #[test]
    fn first_v1_and_v2_rows_differ_when_a_column_repeats() {
        // M = 10, n = 1: v1 0010010000 (B3, B6), v2 0111010001 (B2 B3 B4 B6 B10).
        let columns = |version| {
            let mut row = [0u8; 2];
            parity_row(1, 10, version, &mut row).unwrap();
            let mut set = [false; 10];
            for (i, s) in set.iter_mut().enumerate() {
                *s = bit(&row, i);
            }
            set
        };
        let v1 = columns(PackageVersion::V1);
        let v2 = columns(PackageVersion::V2);
        assert_eq!(v1.iter().filter(|&&b| b).count(), 2);
        assert!(v1[2] && v1[5]);
        assert_eq!(v2.iter().filter(|&&b| b).count(), 5);
        assert!(v2[1] && v2[2] && v2[3] && v2[5] && v2[9]);
    }

    #[test]
    fn errors_for_bad_arguments() {
        let mut row = [0u8; 1];
        assert_eq!(
            parity_row(0, 4, PackageVersion::V1, &mut row),
            Err(ParityRowError::ZeroRowIndex)
        );
        assert_eq!(
            parity_row(1, 0, PackageVersion::V1, &mut row),
            Err(ParityRowError::NoFragments)
        );
        assert_eq!(
            parity_row(1, 9, PackageVersion::V1, &mut row),
            Err(ParityRowError::RowBufferTooSmall {
                needed: 2,
                available: 1
            })
        );
    }
}
