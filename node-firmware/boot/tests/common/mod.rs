//! Test support: signed MCUboot images built in Rust (the approach of lorawan-fuota's
//! `tests/common/image_builder.rs`: p256 with deterministic signatures, no Python), and
//! a simulated device (a `SimFlash` with a layout, the trusted key and a watchdog probe)
//! that boots, requests updates and confirms like the real binaries do.
#![allow(dead_code)]

pub mod fec_download;

use fuota_boot::sim::{SimFlash, SimFlashError};
use fuota_boot::{
    boot, confirm_image, read_boot_state, request_update, BootConfig, BootDecision, BootError,
    BootFlash, BootReport, BootState, Confirmation, Layout, Watchdog,
};
use lorawan_fuota::image::{
    encode_hardware_version, ImageVersion, TrustedKey, IMAGE_MAGIC, TLV_ECDSA_SIG,
    TLV_HARDWARE_VERSION, TLV_KEYHASH, TLV_SHA256,
};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

/// An image to build: imgtool's layout with a KEYHASH TLV.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Header version.
    pub version: ImageVersion,
    /// `hdr_size` (header plus 0xFF padding).
    pub header_size: u16,
    /// Firmware body.
    pub body: Vec<u8>,
    /// Hardware version TLV (protected), if any.
    pub hardware: Option<u32>,
}

impl ImageSpec {
    /// A `body_len`-byte pseudo-random body, 32-byte header, version `major.minor.0`.
    pub fn new(major: u8, minor: u8, body_len: usize, seed: u32) -> Self {
        Self {
            version: ImageVersion::new(major, minor, 0, u32::from(major)),
            header_size: 32,
            body: pseudo_random(body_len, seed),
            hardware: None,
        }
    }

    /// With imgtool's usual 0x200-byte header.
    pub fn with_header_size(mut self, header_size: u16) -> Self {
        self.header_size = header_size;
        self
    }

    /// With a hardware-version TLV.
    pub fn for_hardware(mut self, hardware: u32) -> Self {
        self.hardware = Some(hardware);
        self
    }

    fn protected_area(&self) -> Vec<u8> {
        match self.hardware {
            None => Vec::new(),
            Some(hw) => tlv_area(
                0x6908,
                &[(TLV_HARDWARE_VERSION, encode_hardware_version(hw).to_vec())],
            ),
        }
    }

    /// Header, body, protected TLVs.
    pub fn hashed_region(&self) -> Vec<u8> {
        let protected = self.protected_area();
        let mut out = Vec::new();
        out.extend_from_slice(&IMAGE_MAGIC.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.header_size.to_le_bytes());
        out.extend_from_slice(&(protected.len() as u16).to_le_bytes());
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.push(self.version.major);
        out.push(self.version.minor);
        out.extend_from_slice(&self.version.revision.to_le_bytes());
        out.extend_from_slice(&self.version.build.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.resize(usize::from(self.header_size), 0xFF);
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&protected);
        out
    }

    /// The signed image.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let hashed = self.hashed_region();
        let digest: [u8; 32] = Sha256::digest(&hashed).into();
        let spki = key
            .verifying_key()
            .to_public_key_der()
            .expect("DER public key")
            .as_bytes()
            .to_vec();
        let signature: Signature = key.sign_prehash(&digest).expect("sign");
        let tlvs = [
            (TLV_SHA256, digest.to_vec()),
            (TLV_KEYHASH, Sha256::digest(&spki).to_vec()),
            (TLV_ECDSA_SIG, signature.to_der().as_bytes().to_vec()),
        ];
        let mut out = hashed;
        out.extend_from_slice(&tlv_area(0x6907, &tlvs));
        out
    }
}

/// A TLV area: info header then TLVs.
fn tlv_area(magic: u16, tlvs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, value) in tlvs {
        body.extend_from_slice(&kind.to_le_bytes());
        body.extend_from_slice(&(value.len() as u16).to_le_bytes());
        body.extend_from_slice(value);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Deterministic pseudo-random bytes, with 0xFF runs (real firmware has them: erased
/// padding, constant tables) so copies must not confuse data with erased flash.
pub fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if (i / 64) % 5 == 3 {
                0xFF
            } else {
                (x >> 24) as u8
            }
        })
        .collect()
}

/// A deterministic signing key.
pub fn signing_key(seed: u8) -> SigningKey {
    let mut bytes = [seed; 32];
    bytes[0] = 0x01;
    SigningKey::from_slice(&bytes).expect("valid scalar")
}

/// The trusted key for a signing key.
pub fn trusted(key: &SigningKey) -> TrustedKey {
    let point = key.verifying_key().to_sec1_point(false);
    TrustedKey::from_sec1_bytes(point.as_bytes()).expect("valid key")
}

/// Counts watchdog starts.
#[derive(Debug, Default, Clone, Copy)]
pub struct WatchdogProbe {
    pub starts: u32,
}

impl Watchdog for WatchdogProbe {
    fn start(&mut self) {
        self.starts += 1;
    }
}

/// The small geometry of the exhaustive tests: 256-byte pages, 5-page slots.
pub fn small_layout() -> Layout {
    Layout::small(256, 5)
}

/// A simulated device: flash, layout, the bootloader's key, a watchdog probe.
#[derive(Debug, Clone)]
pub struct Device {
    pub flash: SimFlash,
    pub layout: Layout,
    pub keys: Vec<TrustedKey>,
    pub hardware: Option<u32>,
    pub watchdog: WatchdogProbe,
}

impl Device {
    /// A device with `layout`, trusting `key`, with `factory_image` in the primary slot.
    pub fn new(layout: Layout, key: &SigningKey, factory_image: &[u8]) -> Self {
        let mut flash = SimFlash::for_layout(&layout);
        flash.load(layout.primary.start, factory_image);
        Self {
            flash,
            layout,
            keys: vec![trusted(key)],
            hardware: None,
            watchdog: WatchdogProbe::default(),
        }
    }

    /// Runs the bootloader once.
    pub fn boot(&mut self) -> Result<BootReport, BootError<SimFlashError>> {
        let mut config = BootConfig::new(self.layout, &self.keys);
        if let Some(hw) = self.hardware {
            config.verify_options = config.verify_options.require_hardware(hw);
        }
        boot(&mut self.flash, &config, &mut self.watchdog)
    }

    /// What the node does: erase the download image area and program `image` into it
    /// (through the flash trait, so it is counted).
    pub fn download(&mut self, image: &[u8]) {
        let area = self.layout.download_image();
        let mut offset = 0;
        while offset < area.len {
            self.flash.erase_page(area.start + offset).expect("erase");
            offset += self.layout.page_size;
        }
        let mut padded = image.to_vec();
        padded.resize(image.len().div_ceil(8) * 8, 0xFF);
        self.flash.program(area.start, &padded).expect("program");
    }

    /// The application asks for the update.
    pub fn request_update(&mut self) {
        request_update(&mut self.flash, &self.layout).expect("request update");
    }

    /// The application confirms itself.
    pub fn confirm(&mut self) -> Confirmation {
        confirm_image(&mut self.flash, &self.layout).expect("confirm")
    }

    /// The boot state.
    pub fn state(&mut self) -> BootState {
        read_boot_state(&mut self.flash, &self.layout)
    }

    /// True if the primary slot starts with `image`.
    pub fn primary_holds(&self, image: &[u8]) -> bool {
        let start = self.layout.primary.start as usize;
        self.flash.contents()[start..start + image.len()] == *image
    }

    /// Boots until the bootloader jumps (power stays on); returns the last report and
    /// the number of boots it took. Panics if it halts or fails.
    pub fn boot_to_jump(&mut self) -> BootReport {
        let report = self.boot().expect("boot with power on");
        match report.decision {
            BootDecision::Jump { .. } => report,
            BootDecision::Halt(reason) => panic!("bootloader halted: {reason:?}"),
        }
    }
}

/// The version of a jump decision's image (panics on a halt).
pub fn jumped_version(report: &BootReport) -> ImageVersion {
    match report.decision {
        BootDecision::Jump { image, .. } => image.version,
        BootDecision::Halt(reason) => panic!("halted: {reason:?}"),
    }
}

/// True if the report is a jump into an image on trial.
pub fn is_trial(report: &BootReport) -> bool {
    matches!(report.decision, BootDecision::Jump { trial: true, .. })
}
