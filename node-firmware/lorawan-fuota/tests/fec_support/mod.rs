//! Test support for the FEC decoder: a flash region that enforces and records the
//! programming rules, and an independent GF(2) rank computation.
#![allow(dead_code)]

use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::fec::{parity_row, FlashRegion};

/// Why the checked flash refused an operation (the test then fails on the decoder's
/// `Flash(..)` error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckedFlashError {
    OutOfBounds { offset: usize, length: usize },
    Misaligned { offset: usize, length: usize },
    ProgrammedTwice { offset: usize },
}

/// NOR flash model: erased 0xFF, aligned granule programming, and a record of which
/// bytes were programmed, so programming a granule twice is caught even when it held
/// 0xFF (which a plain erased-check would miss).
#[derive(Debug, Clone)]
pub struct CheckedFlash {
    pub bytes: Vec<u8>,
    pub programmed: Vec<bool>,
    pub granule: usize,
    pub writes: usize,
}

impl CheckedFlash {
    pub fn erased(size: usize, granule: usize) -> Self {
        CheckedFlash {
            bytes: vec![0xFF; size],
            programmed: vec![false; size],
            granule,
            writes: 0,
        }
    }

    /// True if every byte of `range` was programmed (exactly once: twice is an error at
    /// write time).
    pub fn all_programmed(&self, range: std::ops::Range<usize>) -> bool {
        self.programmed[range].iter().all(|&p| p)
    }

    pub fn programmed_count(&self) -> usize {
        self.programmed.iter().filter(|&&p| p).count()
    }
}

impl FlashRegion for &mut CheckedFlash {
    type Error = CheckedFlashError;

    fn write_granule(&self) -> usize {
        self.granule
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }

    fn read(&mut self, offset: usize, buffer: &mut [u8]) -> Result<(), Self::Error> {
        let end = offset + buffer.len();
        if end > self.bytes.len() {
            return Err(CheckedFlashError::OutOfBounds {
                offset,
                length: buffer.len(),
            });
        }
        buffer.copy_from_slice(&self.bytes[offset..end]);
        Ok(())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Self::Error> {
        if !offset.is_multiple_of(self.granule) || !data.len().is_multiple_of(self.granule) {
            return Err(CheckedFlashError::Misaligned {
                offset,
                length: data.len(),
            });
        }
        let end = offset + data.len();
        if end > self.bytes.len() {
            return Err(CheckedFlashError::OutOfBounds {
                offset,
                length: data.len(),
            });
        }
        if let Some(i) = (offset..end).find(|&i| self.programmed[i]) {
            return Err(CheckedFlashError::ProgrammedTwice { offset: i });
        }
        self.bytes[offset..end].copy_from_slice(data);
        self.programmed[offset..end].fill(true);
        self.writes += 1;
        Ok(())
    }
}

/// Row of fragment `n` over M columns, as u64 words (identity for n ≤ M).
pub fn row_words(n: u16, m: u16, version: PackageVersion) -> Vec<u64> {
    let words = usize::from(m).div_ceil(64);
    let mut row = vec![0u64; words];
    if n <= m {
        let c = usize::from(n - 1);
        row[c / 64] |= 1 << (c % 64);
    } else {
        let mut bitmap = vec![0u8; usize::from(m).div_ceil(8)];
        parity_row(u32::from(n - m), m, version, &mut bitmap).unwrap();
        for c in 0..usize::from(m) {
            if bitmap[c / 8] >> (c % 8) & 1 == 1 {
                row[c / 64] |= 1 << (c % 64);
            }
        }
    }
    row
}

/// Rank over GF(2) of the rows of the fragments `received`, by plain Gaussian
/// elimination on a dense matrix (independent of the decoder's bookkeeping).
pub fn rank_of(received: &[u16], m: u16, version: PackageVersion) -> usize {
    let mut basis: Vec<Vec<u64>> = Vec::new();
    let mut pivots: Vec<usize> = Vec::new();
    for &n in received {
        let mut row = row_words(n, m, version);
        for (b, &p) in basis.iter().zip(&pivots) {
            if row[p / 64] >> (p % 64) & 1 == 1 {
                for (x, y) in row.iter_mut().zip(b) {
                    *x ^= y;
                }
            }
        }
        if let Some(p) = (0..usize::from(m)).find(|&c| row[c / 64] >> (c % 64) & 1 == 1) {
            // Keep the basis fully reduced on column p.
            for b in basis.iter_mut() {
                if b[p / 64] >> (p % 64) & 1 == 1 {
                    for (x, y) in b.iter_mut().zip(&row) {
                        *x ^= y;
                    }
                }
            }
            basis.push(row);
            pivots.push(p);
        }
    }
    basis.len()
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
