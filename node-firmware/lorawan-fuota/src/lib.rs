//! `lorawan-fuota`: the LoRaWAN FUOTA application layer, shared by both ends.
//!
//! The gateway agent (`fuota-agent`, std) and the STM32WL node firmware (no_std, no heap)
//! link this one crate, so both ends speak a single implementation of:
//!
//! - [`codec`]: every command of TS003 clock sync, TS004 fragmentation, TS005 multicast
//!   setup (v1 and v2) and TS006 firmware management, encoded and decoded in both
//!   directions. Decoders never panic: malformed input is a [`codec::DecodeError`].
//! - [`fec`]: the TS004 forward-error-correction code: parity rows (v1 and v2 rules), a
//!   streaming encoder and a flash-friendly incremental decoder with RAM fixed at
//!   construction.
//! - [`crypto`]: multicast key derivation (TS005) and the TS004 v2 data-block MIC.
//! - [`gps_time`]: GPS-epoch time with leap seconds.
//! - [`checksum`]: the CRC-32 of the records the device keeps in flash.
//! - [`image`]: the signed firmware image format (MCUboot header and TLVs, SHA-256,
//!   ECDSA P-256), and the one mapping between MCUboot and TS006 versions.
//!
//! The byte-level reference for everything here is `shared/reference/applayer.md`.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod checksum;
pub mod codec;
pub mod crypto;
pub mod fec;
pub mod gps_time;
pub mod image;
