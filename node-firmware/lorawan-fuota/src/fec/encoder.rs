//! Streaming TS004 fragment encoder: any fragment N of a block, on demand.
//!
//! The encoder borrows the unpadded block and never holds coded fragments: the agent asks
//! for fragment N when the scheduler is about to send it. Uncoded fragments are slices of
//! the block (the last one padded with zeros); coded fragment M + n is the XOR of the
//! uncoded fragments of parity row C(n, M).

use super::parity::{self, parity_row, set_columns};
use super::{fragment_count, MAX_FRAGMENT_INDEX};
use crate::codec::PackageVersion;
use core::fmt;

/// Why a fragment could not be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderError {
    /// The block is empty or FragSize is 0.
    EmptyBlock,
    /// The block needs more than 16383 fragments of this size.
    TooManyFragments {
        /// Fragments the block needs.
        needed: usize,
    },
    /// N is 0 or above 16383.
    FragmentIndexOutOfRange {
        /// The requested N.
        n: u32,
    },
    /// The output buffer is not FragSize bytes long.
    WrongOutputLength {
        /// FragSize.
        expected: usize,
        /// Length given.
        actual: usize,
    },
}

impl fmt::Display for EncoderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncoderError::EmptyBlock => f.write_str("empty block or fragment size 0"),
            EncoderError::TooManyFragments { needed } => write!(
                f,
                "the block needs {needed} fragments, more than the 16383 a session allows; \
                 use a larger fragment size or split the image"
            ),
            EncoderError::FragmentIndexOutOfRange { n } => {
                write!(f, "fragment counter {n} is outside 1..=16383")
            }
            EncoderError::WrongOutputLength { expected, actual } => write!(
                f,
                "fragment buffer of {actual} byte(s), the fragment size is {expected}"
            ),
        }
    }
}

impl core::error::Error for EncoderError {}

/// Produces the payload of any DataFragment N of one block.
#[derive(Debug, Clone, Copy)]
pub struct FragmentEncoder<'a> {
    block: &'a [u8],
    frag_size: usize,
    nb_frag: u16,
    padding: usize,
    version: PackageVersion,
}

impl<'a> FragmentEncoder<'a> {
    /// An encoder for `block` cut into `frag_size`-byte fragments, with the parity rows
    /// of TS004 `version`.
    pub fn new(
        block: &'a [u8],
        frag_size: usize,
        version: PackageVersion,
    ) -> Result<Self, EncoderError> {
        let (nb_frag, padding) = fragment_count(block.len(), frag_size).ok_or_else(|| {
            if block.is_empty() || frag_size == 0 {
                EncoderError::EmptyBlock
            } else {
                EncoderError::TooManyFragments {
                    needed: block.len().div_ceil(frag_size),
                }
            }
        })?;
        Ok(FragmentEncoder {
            block,
            frag_size,
            nb_frag,
            padding,
            version,
        })
    }

    /// M: the number of uncoded fragments (NbFrag).
    pub fn nb_frag(&self) -> u16 {
        self.nb_frag
    }

    /// Zero bytes added to the last uncoded fragment (Padding).
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// FragSize.
    pub fn frag_size(&self) -> usize {
        self.frag_size
    }

    /// How many coded fragments can follow the M uncoded ones within the 14-bit counter.
    pub fn max_coded_fragments(&self) -> u16 {
        MAX_FRAGMENT_INDEX - self.nb_frag
    }

    /// Writes fragment `n` (1-based; > M means coded) into `out` (FragSize bytes).
    pub fn fragment(&self, n: u32, out: &mut [u8]) -> Result<(), EncoderError> {
        if n == 0 || n > u32::from(MAX_FRAGMENT_INDEX) {
            return Err(EncoderError::FragmentIndexOutOfRange { n });
        }
        if out.len() != self.frag_size {
            return Err(EncoderError::WrongOutputLength {
                expected: self.frag_size,
                actual: out.len(),
            });
        }
        let m = u32::from(self.nb_frag);
        if n <= m {
            self.copy_uncoded(n as usize - 1, out);
            return Ok(());
        }
        // 16383 columns fit in 2048 bytes; the encoder runs on hosts, not on devices.
        let mut row = [0u8; 2048];
        parity_row(n - m, self.nb_frag, self.version, &mut row)
            .map_err(|_| EncoderError::FragmentIndexOutOfRange { n })?;
        out.fill(0);
        let mut uncoded = [0u8; 256];
        for column in set_columns(&row[..parity::row_bytes(self.nb_frag)]) {
            if self.frag_size <= uncoded.len() {
                let piece = &mut uncoded[..self.frag_size];
                self.copy_uncoded(column, piece);
                out.iter_mut().zip(piece.iter()).for_each(|(o, p)| *o ^= p);
            } else {
                // FragSize is one byte on air; this path only serves oversized host uses.
                let start = column * self.frag_size;
                for (i, o) in out.iter_mut().enumerate() {
                    *o ^= self.block.get(start + i).copied().unwrap_or(0);
                }
            }
        }
        Ok(())
    }

    /// Uncoded fragment `index` (0-based), zero-padded past the end of the block.
    fn copy_uncoded(&self, index: usize, out: &mut [u8]) {
        let start = index * self.frag_size;
        let end = (start + self.frag_size).min(self.block.len());
        let available = self.block.get(start..end).unwrap_or(&[]);
        out[..available.len()].copy_from_slice(available);
        out[available.len()..].fill(0);
    }
}
