//! Making signed images on the gateway or a build machine: MCUboot images from a raw
//! firmware binary (what `fuota-agent image sign` does, laid out as `imgtool sign` lays
//! them out, so `imgtool verify` accepts them), and detached signatures for opaque images.
//!
//! Keys are P-256 private keys in PEM, as `imgtool keygen -t ecdsa-p256` or
//! `openssl ecparam -name prime256v1 -genkey` write them (PKCS#8 `PRIVATE KEY` or SEC1
//! `EC PRIVATE KEY`). Signing is deterministic (RFC 6979): the same key, binary and
//! parameters always give the same image.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use lorawan_fuota::image::{
    encode_hardware_version, ImageVersion, IMAGE_HEADER_LEN, IMAGE_MAGIC, TLV_ECDSA_SIG,
    TLV_HARDWARE_VERSION, TLV_KEYHASH, TLV_PUBKEY, TLV_SHA256,
};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

use super::hex;

/// Magic of the protected TLV area's info header.
const PROTECTED_TLV_MAGIC: u16 = 0x6908;
/// Magic of the unprotected TLV area's info header.
const UNPROTECTED_TLV_MAGIC: u16 = 0x6907;
/// Default `hdr_size`: the header padded to 512 bytes (imgtool's usual `--header-size
/// 0x200`, and what the STM32WL layout's application link address assumes).
pub const DEFAULT_HEADER_SIZE: u16 = 0x200;
/// Largest body an image can describe (`img_size` is 32 bits; we stay far below).
const MAX_BODY_LEN: usize = 16 * 1024 * 1024;

/// A signing key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The file could not be read.
    #[error("cannot read signing key {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a P-256 private key in PEM.
    #[error(
        "{origin} is not a P-256 private key in PEM (expected \"-----BEGIN PRIVATE KEY-----\" \
         or \"-----BEGIN EC PRIVATE KEY-----\", e.g. from `imgtool keygen -t ecdsa-p256`){hint}"
    )]
    NotAPrivateKey {
        /// Where the text came from.
        origin: String,
        /// A hint when the mistake is recognisable.
        hint: &'static str,
    },
}

/// An image could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignImageError {
    /// The firmware binary is empty.
    #[error("the firmware binary is empty")]
    EmptyBody,
    /// The firmware binary is too large.
    #[error("the firmware binary is {len} bytes; at most {MAX_BODY_LEN} can be signed")]
    BodyTooLarge {
        /// Its length.
        len: usize,
    },
    /// The header size cannot hold the header.
    #[error("header size {header_size} is smaller than the {IMAGE_HEADER_LEN}-byte image header")]
    HeaderTooSmall {
        /// The requested `hdr_size`.
        header_size: u16,
    },
    /// The header size is not a multiple of 4 (MCUboot aligns the body).
    #[error("header size {header_size} is not a multiple of 4")]
    HeaderMisaligned {
        /// The requested `hdr_size`.
        header_size: u16,
    },
}

/// How an image names the key that signed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyIdentification {
    /// KEYHASH: SHA-256 of the public key (imgtool's default; 36 bytes).
    #[default]
    Hash,
    /// PUBKEY: the whole public key (`--public-key-format full`; 95 bytes).
    Full,
}

/// What goes into an image besides the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSpec {
    /// The version in the header (its major.minor.revision becomes the TS006 version).
    pub version: ImageVersion,
    /// The hardware version the image is for, as a protected TLV; devices of other
    /// hardware refuse it.
    pub hardware_version: Option<u32>,
    /// `hdr_size`: the header with its padding; the body starts here.
    pub header_size: u16,
    /// `load_addr` (0: executed in place from the primary slot).
    pub load_address: u32,
    /// KEYHASH or PUBKEY.
    pub key_identification: KeyIdentification,
}

impl ImageSpec {
    /// An image of `version` with the defaults: 512-byte header, no hardware version,
    /// KEYHASH.
    pub fn new(version: ImageVersion) -> Self {
        ImageSpec {
            version,
            hardware_version: None,
            header_size: DEFAULT_HEADER_SIZE,
            load_address: 0,
            key_identification: KeyIdentification::Hash,
        }
    }
}

/// A version on the command line (`1.2.3`, `1.2.3+4`, `1.2`), as imgtool writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionArgument(pub ImageVersion);

impl FromStr for VersionArgument {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |why: String| {
            format!("invalid version {text:?}: {why}; expected major.minor.revision[+build], e.g. 1.2.3+4")
        };
        let (numbers, build) = match text.split_once('+') {
            Some((numbers, build)) => (numbers, Some(build)),
            None => (text, None),
        };
        let parts: Vec<&str> = numbers.split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return Err(invalid(format!("{} dot-separated numbers", parts.len())));
        }
        let number = |index: usize, max: u64, name: &str| -> Result<u64, String> {
            let Some(part) = parts.get(index) else {
                return Ok(0);
            };
            let value: u64 = part
                .parse()
                .map_err(|_| invalid(format!("{name} {part:?} is not a number")))?;
            if value > max {
                return Err(invalid(format!("{name} {value} is above {max}")));
            }
            Ok(value)
        };
        let major = number(0, u64::from(u8::MAX), "major")?;
        let minor = number(1, u64::from(u8::MAX), "minor")?;
        let revision = number(2, u64::from(u16::MAX), "revision")?;
        let build = match build {
            None => 0,
            Some(build) => build
                .parse::<u32>()
                .map_err(|_| invalid(format!("build {build:?} is not a 32-bit number")))?,
        };
        // The bounds were checked above, so the conversions cannot truncate.
        Ok(VersionArgument(ImageVersion::new(
            major as u8,
            minor as u8,
            revision as u16,
            build,
        )))
    }
}

/// A P-256 private key that signs images.
pub struct ImageSigner {
    key: SigningKey,
    public_key_der: Vec<u8>,
}

impl fmt::Debug for ImageSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageSigner")
            .field("key_hash", &hex(&self.key_hash()))
            .finish_non_exhaustive()
    }
}

impl ImageSigner {
    /// A signer from a private key.
    pub fn new(key: SigningKey) -> Self {
        let public_key_der = key
            .verifying_key()
            .to_public_key_der()
            .map(|document| document.as_bytes().to_vec())
            // Encoding a valid P-256 point as SubjectPublicKeyInfo cannot fail.
            .unwrap_or_default();
        ImageSigner {
            key,
            public_key_der,
        }
    }

    /// Reads a PEM private key file.
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| SigningKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&text, &path.display().to_string())
    }

    /// A signer from PEM text; `origin` names it in errors.
    pub fn from_pem(text: &str, origin: &str) -> Result<Self, SigningKeyError> {
        if let Ok(key) = SigningKey::from_pkcs8_pem(text) {
            return Ok(Self::new(key));
        }
        if let Ok(secret) = p256::SecretKey::from_sec1_pem(text) {
            return Ok(Self::new(SigningKey::from(secret)));
        }
        let hint = if text.contains("PUBLIC KEY") {
            ": this is a public key; signing needs the private key"
        } else if text.contains("ENCRYPTED PRIVATE KEY") {
            ": the key is encrypted; decrypt it first (openssl pkcs8 -in key.pem -out plain.pem)"
        } else {
            ""
        };
        Err(SigningKeyError::NotAPrivateKey {
            origin: origin.to_string(),
            hint,
        })
    }

    /// The public half as DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// The public half as PEM (`-----BEGIN PUBLIC KEY-----`), for a trust store.
    pub fn public_key_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// MCUboot's KEYHASH of the public key.
    pub fn key_hash(&self) -> [u8; 32] {
        Sha256::digest(&self.public_key_der).into()
    }

    /// A DER ECDSA signature of a SHA-256 digest.
    fn sign_digest(&self, digest: &[u8; 32]) -> Vec<u8> {
        match self.key.sign_prehash(digest) {
            Ok(signature) => {
                let signature: Signature = signature;
                signature.to_der().as_bytes().to_vec()
            }
            // A 32-byte prehash is always accepted for P-256.
            Err(_) => Vec::new(),
        }
    }

    /// A detached signature for an opaque image: DER ECDSA P-256 over the SHA-256 of
    /// `bytes` (what `openssl dgst -sha256 -sign key.pem` writes).
    pub fn sign_detached(&self, bytes: &[u8]) -> Vec<u8> {
        self.sign_digest(&Sha256::digest(bytes).into())
    }

    /// A signed MCUboot image of `body`.
    pub fn sign_image(&self, body: &[u8], spec: &ImageSpec) -> Result<Vec<u8>, SignImageError> {
        if body.is_empty() {
            return Err(SignImageError::EmptyBody);
        }
        if body.len() > MAX_BODY_LEN {
            return Err(SignImageError::BodyTooLarge { len: body.len() });
        }
        if usize::from(spec.header_size) < IMAGE_HEADER_LEN {
            return Err(SignImageError::HeaderTooSmall {
                header_size: spec.header_size,
            });
        }
        if !spec.header_size.is_multiple_of(4) {
            return Err(SignImageError::HeaderMisaligned {
                header_size: spec.header_size,
            });
        }

        let protected_tlvs: Vec<(u16, Vec<u8>)> = spec
            .hardware_version
            .map(|hardware| {
                (
                    TLV_HARDWARE_VERSION,
                    encode_hardware_version(hardware).to_vec(),
                )
            })
            .into_iter()
            .collect();
        let protected_area = if protected_tlvs.is_empty() {
            Vec::new()
        } else {
            tlv_area(PROTECTED_TLV_MAGIC, &protected_tlvs)
        };

        // The body length was bounded above, and the protected area holds one 8-byte TLV.
        let body_len = body.len() as u32;
        let protected_len = protected_area.len() as u16;
        let mut image = Vec::with_capacity(usize::from(spec.header_size) + body.len() + 256);
        image.extend_from_slice(&IMAGE_MAGIC.to_le_bytes());
        image.extend_from_slice(&spec.load_address.to_le_bytes());
        image.extend_from_slice(&spec.header_size.to_le_bytes());
        image.extend_from_slice(&protected_len.to_le_bytes());
        image.extend_from_slice(&body_len.to_le_bytes());
        image.extend_from_slice(&0u32.to_le_bytes()); // flags
        image.push(spec.version.major);
        image.push(spec.version.minor);
        image.extend_from_slice(&spec.version.revision.to_le_bytes());
        image.extend_from_slice(&spec.version.build.to_le_bytes());
        image.extend_from_slice(&0u32.to_le_bytes()); // reserved
                                                      // imgtool pads the header with the erased-flash value.
        image.resize(usize::from(spec.header_size), 0xff);
        image.extend_from_slice(body);
        image.extend_from_slice(&protected_area);

        let digest: [u8; 32] = Sha256::digest(&image).into();
        let mut unprotected = vec![(TLV_SHA256, digest.to_vec())];
        match spec.key_identification {
            KeyIdentification::Hash => {
                unprotected.push((TLV_KEYHASH, self.key_hash().to_vec()));
            }
            KeyIdentification::Full => {
                unprotected.push((TLV_PUBKEY, self.public_key_der.clone()));
            }
        }
        unprotected.push((TLV_ECDSA_SIG, self.sign_digest(&digest)));
        image.extend_from_slice(&tlv_area(UNPROTECTED_TLV_MAGIC, &unprotected));
        Ok(image)
    }
}

/// A TLV area: info header (magic, total length including the header), then each TLV
/// as type, length, value. Every value here is far below 64 KiB.
fn tlv_area(magic: u16, tlvs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut area = Vec::new();
    area.extend_from_slice(&magic.to_le_bytes());
    area.extend_from_slice(&[0, 0]);
    for (kind, value) in tlvs {
        area.extend_from_slice(&kind.to_le_bytes());
        area.extend_from_slice(&(value.len() as u16).to_le_bytes());
        area.extend_from_slice(value);
    }
    let total = area.len() as u16;
    area[2..4].copy_from_slice(&total.to_le_bytes());
    area
}
