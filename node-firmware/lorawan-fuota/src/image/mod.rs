//! The signed firmware image format: MCUboot's image header and TLV trailer, checked
//! with SHA-256 and ECDSA P-256, so images signed with `imgtool` (PyPI) are accepted.
//!
//! # Layout (all integers little-endian)
//!
//! ```text
//! offset 0               header (32 bytes, see [`ImageHeader`]), padded to hdr_size
//! hdr_size               body (img_size bytes: the firmware itself)
//! hdr_size + img_size    protected TLV area (only when protect_tlv_size != 0):
//!                          info header: magic 0x6908 (u16), tlv_tot (u16) = protect_tlv_size
//!                          TLVs: type (u16), len (u16), value (len bytes), ...
//! .. + protect_tlv_size  unprotected TLV area:
//!                          info header: magic 0x6907 (u16), tlv_tot (u16)
//!                          TLVs: SHA256 (0x10), KEYHASH (0x01) or PUBKEY (0x02),
//!                                ECDSASIG (0x22)
//! ```
//!
//! `tlv_tot` counts the 4-byte info header itself. Everything before the unprotected
//! area (header with its padding, body, protected TLVs) is the *hashed region*: the
//! SHA256 TLV holds its SHA-256 digest, and the ECDSASIG TLV holds a DER-encoded ECDSA
//! P-256 signature of that same digest (imgtool signs the hashed region with
//! `ECDSA(SHA256)`, which is the same as signing the digest). KEYHASH is the SHA-256 of
//! the signer's public key as DER SubjectPublicKeyInfo; PUBKEY is that DER itself.
//!
//! # What lives where
//!
//! - [`header`]: the 32-byte image header.
//! - [`version`]: MCUboot versions and the one mapping to TS006's 32-bit version.
//! - [`tlv`]: TLV kinds, the hardware-version TLV, iteration without allocation.
//! - [`source`]: [`ImageSource`], reading an image in chunks (a flash slot, a slice).
//! - [`layout`]: where each region of an image lies, with every bound checked.
//! - [`key`]: trusted public keys and their MCUboot key hash.
//! - [`verify`](mod@verify): the checks: hash, key, signature, hardware version.
//! - [`error`]: what can be wrong with an image.
//!
//! Nothing here allocates or panics, whatever the input.

pub mod error;
pub mod header;
pub mod key;
pub mod layout;
mod signature;
pub mod source;
pub mod tlv;
pub mod verify;
pub mod version;

pub use error::{ImageError, ImageRegion, SourceError};
pub use header::{ImageHeader, IMAGE_HEADER_LEN, IMAGE_MAGIC};
pub use key::{InvalidKey, TrustedKey};
pub use layout::{Image, ImageLayout, TlvArea};
pub use source::ImageSource;
pub use tlv::{
    decode_hardware_version, encode_hardware_version, Tlv, TlvIter, TLV_ECDSA_SIG,
    TLV_HARDWARE_VERSION, TLV_KEYHASH, TLV_PUBKEY, TLV_SHA256,
};
pub use verify::{
    check_integrity_source, verify, verify_source, verify_source_with_buffer, CheckedImage,
    VerifiedImage, VerifyOptions, HASH_CHUNK_LEN,
};
pub use version::{compare_ts006, ImageVersion, VersionChange};
