//! The application-layer cryptography of FUOTA: TS005 multicast keys and the TS004 v2
//! data-block MIC.
//!
//! - [`Key128`]: an AES-128 key whose `Debug` output is redacted, plus the two one-block
//!   primitives everything else is built from ([`aes128_encrypt`], [`aes128_decrypt`]).
//! - [`multicast`]: the TS005 key hierarchy, McRootKey → McKEKey → McKey (wire
//!   encryption both ways) → McAppSKey / McNwkSKey.
//! - [`data_block_mic`]: the TS004 v2 DataBlockIntKey and the 4-byte MIC over a whole
//!   data block, one-shot or incremental (for a device reading its flash in chunks).
//!
//! Everything here is allocation-free and panic-free; the byte-level reference is
//! `shared/reference/applayer.md` §2.4 and §3.8.

mod keys;

pub mod data_block_mic;
pub mod multicast;

pub use keys::{aes128_decrypt, aes128_encrypt, Key128};
