//! TS004 forward error correction (FragAlgo / FragmentationMatrix 0).
//!
//! A block is cut into M uncoded fragments B₁…B_M of FragSize bytes (the last one padded
//! with zeros). Fragment N ≤ M carries B_N; fragment N = M + n carries the XOR of the
//! uncoded fragments selected by parity row C(n, M). This module owns:
//!
//! - [`parity`]: the PRBS-23 generator and parity rows, with the v1 rule (M/2 draws,
//!   repeats allowed) and the v2 rule (M/2 distinct columns): mixing them corrupts data
//!   silently, so every function takes the negotiated [`PackageVersion`].
//! - [`encoder`]: a streaming encoder that produces any fragment N of a block on demand.
//! - [`decoder`]: an incremental GF(2) decoder that writes the block straight into flash,
//!   each byte exactly once, with RAM fixed at construction.
//! - [`storage`]: the flash-region trait the decoder writes through, and a slice-backed
//!   implementation for hosts.
//!
//! Limits shared by all of them: N is 14 bits, so M plus the coded fragments sent must
//! stay ≤ [`MAX_FRAGMENT_INDEX`] (16383).
//!
//! [`PackageVersion`]: crate::codec::PackageVersion

pub mod decoder;
pub mod encoder;
pub mod parity;
pub mod storage;

pub use decoder::{Decoder, DecoderError, DecoderSizing, FragmentOutcome};
pub use encoder::FragmentEncoder;
pub use parity::{parity_row, ParityRowError};
pub use storage::{FlashRegion, SliceFlash};

/// Highest fragment counter N that fits the 14-bit field of DataFragment.
pub const MAX_FRAGMENT_INDEX: u16 = 16383;

/// Number of uncoded fragments for a block of `block_len` bytes cut into `frag_size`
/// pieces, and the padding of the last one; `None` if `frag_size` is 0 or the block
/// needs more than [`MAX_FRAGMENT_INDEX`] fragments.
pub fn fragment_count(block_len: usize, frag_size: usize) -> Option<(u16, usize)> {
    if frag_size == 0 || block_len == 0 {
        return None;
    }
    let count = block_len.div_ceil(frag_size);
    let padding = count * frag_size - block_len;
    match u16::try_from(count) {
        Ok(count) if count <= MAX_FRAGMENT_INDEX => Some((count, padding)),
        _ => None,
    }
}
