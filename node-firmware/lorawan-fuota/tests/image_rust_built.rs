//! Images built and signed in Rust (tests/common/image_builder.rs): they verify, every
//! malformed TLV layout is a clean error, random mutations never panic and never verify,
//! and chunked verification through `ImageSource` equals whole-slice verification.

#[path = "common/image_builder.rs"]
mod image_builder;

use image_builder::{
    assemble, pseudo_random_body, test_key, tlv_area, trusted, ImageBuilder, KeyTlv,
    PROTECTED_MAGIC, UNPROTECTED_MAGIC,
};
use lorawan_fuota::image::{
    verify, verify_source, verify_source_with_buffer, Image, ImageError, ImageRegion, ImageSource,
    ImageVersion, SourceError, VerifyOptions, TLV_ECDSA_SIG, TLV_HARDWARE_VERSION, TLV_KEYHASH,
    TLV_PUBKEY, TLV_SHA256,
};
use proptest::prelude::*;

fn opts() -> VerifyOptions {
    VerifyOptions::new()
}

fn builder() -> ImageBuilder {
    ImageBuilder::new(pseudo_random_body(1000, 1)).hardware_version(0x0042_0001)
}

/// A flash slot read in pages of an odd size: each read is served page by page, and
/// every read is checked to stay inside the slot.
struct PagedFlash<'a> {
    data: &'a [u8],
    page: usize,
    reads: usize,
    fail_at: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlashError(u32);

impl std::fmt::Display for FlashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flash read error at {}", self.0)
    }
}

impl ImageSource for PagedFlash<'_> {
    type Error = FlashError;

    fn size(&self) -> u32 {
        self.data.len() as u32
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        let start = offset as usize;
        assert!(
            start + buf.len() <= self.data.len(),
            "read outside the slot"
        );
        if let Some(bad) = self.fail_at {
            if (offset..offset + buf.len() as u32).contains(&bad) {
                return Err(FlashError(bad));
            }
        }
        self.reads += 1;
        let mut done = 0;
        while done < buf.len() {
            let at = start + done;
            let page_end = (at / self.page + 1) * self.page;
            let n = (page_end - at).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&self.data[at..at + n]);
            done += n;
        }
        Ok(())
    }
}

fn flash(data: &[u8], page: usize) -> PagedFlash<'_> {
    PagedFlash {
        data,
        page,
        reads: 0,
        fail_at: None,
    }
}

#[test]
fn rust_built_images_verify() {
    let key = test_key(1);
    let keys = [trusted(&key)];
    for key_tlv in [KeyTlv::Hash, KeyTlv::Full, KeyTlv::None] {
        for pad_sig in [false, true] {
            let mut b = builder();
            b.key_tlv = key_tlv;
            b.pad_sig = pad_sig;
            b.version = ImageVersion::new(3, 0, 65535, u32::MAX);
            let image = b.sign(&key);
            let verified = verify(&image, &keys, &opts()).expect("verify");
            assert_eq!(verified.version(), b.version);
            assert_eq!(verified.ts006_version(), 0x0300_ffff);
            assert_eq!(verified.hardware_version(), Some(0x0042_0001));
            assert_eq!(Image::parse(&image).unwrap().body(), &b.body[..]);
        }
    }
}

#[test]
fn unprotected_area_rules() {
    let key = test_key(2);
    let keys = [trusted(&key)];
    let b = builder();
    let hashed = b.hashed_region();
    let tlvs = b.unprotected_tlvs(&key);
    let without = |kind: u16| -> Vec<(u16, Vec<u8>)> {
        tlvs.iter().filter(|(k, _)| *k != kind).cloned().collect()
    };
    let with_extra = |extra: (u16, Vec<u8>)| -> Vec<(u16, Vec<u8>)> {
        let mut t = tlvs.clone();
        t.insert(1, extra);
        t
    };
    let check =
        |unprotected: &[(u16, Vec<u8>)]| verify(&assemble(&hashed, unprotected), &keys, &opts());

    assert!(check(&tlvs).is_ok());
    assert_eq!(check(&without(TLV_SHA256)), Err(ImageError::MissingHash));
    assert_eq!(
        check(&without(TLV_ECDSA_SIG)),
        Err(ImageError::MissingSignature)
    );
    // No key TLV: the signature alone decides.
    assert!(check(&without(TLV_KEYHASH)).is_ok());
    for kind in [TLV_SHA256, TLV_KEYHASH, TLV_ECDSA_SIG] {
        let duplicate = tlvs.iter().find(|(k, _)| *k == kind).unwrap().clone();
        assert_eq!(
            check(&with_extra(duplicate)),
            Err(ImageError::DuplicateTlv { kind })
        );
    }
    // Anything but hash, key and signature must be protected, the hardware version first.
    assert_eq!(
        check(&with_extra((TLV_HARDWARE_VERSION, vec![0, 0x42, 0, 1]))),
        Err(ImageError::UnprotectedTlv {
            kind: TLV_HARDWARE_VERSION
        })
    );
    assert_eq!(
        check(&with_extra((0x50, vec![0; 4]))),
        Err(ImageError::UnprotectedTlv { kind: 0x50 })
    );
    // Wrong lengths.
    let mut short_sha = tlvs.clone();
    short_sha[0].1.pop();
    assert_eq!(
        check(&short_sha),
        Err(ImageError::BadTlvLength {
            kind: TLV_SHA256,
            len: 31
        })
    );
    let mut long_sig = tlvs.clone();
    long_sig[2].1.resize(73, 0);
    assert_eq!(
        check(&long_sig),
        Err(ImageError::BadTlvLength {
            kind: TLV_ECDSA_SIG,
            len: 73
        })
    );
    let mut empty_sig = tlvs.clone();
    empty_sig[2].1.clear();
    assert_eq!(
        check(&empty_sig),
        Err(ImageError::BadTlvLength {
            kind: TLV_ECDSA_SIG,
            len: 0
        })
    );
    let mut padded_junk = tlvs.clone();
    padded_junk[2].1.push(0x01);
    assert_eq!(check(&padded_junk), Err(ImageError::MalformedSignature));
    let mut odd_pubkey = tlvs.clone();
    odd_pubkey[1] = (TLV_PUBKEY, vec![0; 33]);
    assert_eq!(check(&odd_pubkey), Err(ImageError::KeyNotTrusted));
    // Both key forms present: both must name the same trusted key.
    let mut both = tlvs.clone();
    both.insert(2, (TLV_PUBKEY, image_builder::spki_der(&key)));
    assert!(check(&both).is_ok());
    both[2] = (TLV_PUBKEY, image_builder::spki_der(&test_key(3)));
    assert_eq!(check(&both), Err(ImageError::KeyNotTrusted));
    // Signature of another key, no key TLV.
    let other = test_key(3);
    let mut foreign = without(TLV_KEYHASH);
    foreign[1].1 = image_builder::der_signature(
        &other,
        b.unprotected_tlvs(&key)[0].1[..].try_into().unwrap(),
    );
    assert_eq!(check(&foreign), Err(ImageError::BadSignature));
}

#[test]
fn protected_area_rules() {
    let key = test_key(4);
    let keys = [trusted(&key)];
    let mut b = builder();
    b.protected.push((TLV_HARDWARE_VERSION, vec![0, 0, 0, 2]));
    assert_eq!(
        verify(&b.sign(&key), &keys, &opts()),
        Err(ImageError::DuplicateTlv {
            kind: TLV_HARDWARE_VERSION
        })
    );
    for len in [0usize, 3, 5, 8] {
        let mut b = ImageBuilder::new(vec![1, 2, 3]);
        b.protected.push((TLV_HARDWARE_VERSION, vec![0; len]));
        assert_eq!(
            verify(&b.sign(&key), &keys, &opts()),
            Err(ImageError::BadTlvLength {
                kind: TLV_HARDWARE_VERSION,
                len: len as u16
            })
        );
    }
    // Unknown protected TLVs are signed, hence harmless, and ignored.
    let mut b = builder();
    b.protected.insert(0, (0x1234, b"anything".to_vec()));
    b.protected.push((0x50, vec![1, 0, 0, 0]));
    assert_eq!(
        verify(&b.sign(&key), &keys, &opts())
            .unwrap()
            .hardware_version(),
        Some(0x0042_0001)
    );
    // An empty but present protected area (info header only) is fine.
    let mut hashed = ImageBuilder::new(vec![9; 10]).hashed_region();
    hashed[10..12].copy_from_slice(&4u16.to_le_bytes());
    hashed.extend_from_slice(&tlv_area(PROTECTED_MAGIC, &[]));
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&hashed).into();
    let tlvs = vec![
        (TLV_SHA256, digest.to_vec()),
        (TLV_ECDSA_SIG, image_builder::der_signature(&key, &digest)),
    ];
    assert!(verify(&assemble(&hashed, &tlvs), &keys, &opts()).is_ok());
}

#[test]
fn malformed_layouts_are_clean_errors() {
    let key = test_key(5);
    let keys = [trusted(&key)];
    let good = builder().sign(&key);
    let layout = *Image::parse(&good).unwrap().layout();
    let prot = layout.protected.offset as usize;
    let unprot = layout.unprotected.offset as usize;
    let patched = |at: usize, bytes: &[u8]| {
        let mut image = good.clone();
        image[at..at + bytes.len()].copy_from_slice(bytes);
        verify(&image, &keys, &opts())
    };

    assert_eq!(patched(0, &[0, 0, 0, 0]), Err(ImageError::BadMagic(0)));
    assert_eq!(
        patched(8, &31u16.to_le_bytes()),
        Err(ImageError::HeaderTooSmall(31))
    );
    assert_eq!(
        patched(16, &4u32.to_le_bytes()),
        Err(ImageError::UnsupportedFlags(4))
    );
    assert_eq!(
        patched(12, &u32::MAX.to_le_bytes()),
        Err(ImageError::Truncated {
            region: ImageRegion::Body,
            needed: 0x200 + u64::from(u32::MAX),
            available: good.len() as u32
        })
    );
    assert_eq!(
        patched(8, &u16::MAX.to_le_bytes()),
        Err(ImageError::Truncated {
            region: ImageRegion::Header,
            needed: 0xffff,
            available: good.len() as u32
        })
    );
    assert_eq!(
        patched(prot, &UNPROTECTED_MAGIC.to_le_bytes()),
        Err(ImageError::BadTlvInfoMagic {
            region: ImageRegion::ProtectedTlvs,
            found: UNPROTECTED_MAGIC
        })
    );
    assert_eq!(
        patched(unprot, &PROTECTED_MAGIC.to_le_bytes()),
        Err(ImageError::BadTlvInfoMagic {
            region: ImageRegion::UnprotectedTlvs,
            found: PROTECTED_MAGIC
        })
    );
    assert_eq!(
        patched(unprot + 2, &3u16.to_le_bytes()),
        Err(ImageError::BadTlvTotal {
            region: ImageRegion::UnprotectedTlvs,
            tlv_tot: 3
        })
    );
    assert!(matches!(
        patched(unprot + 2, &u16::MAX.to_le_bytes()),
        Err(ImageError::Truncated {
            region: ImageRegion::UnprotectedTlvs,
            ..
        })
    ));
    // Header claims no protected area although there is one.
    assert_eq!(
        patched(10, &0u16.to_le_bytes()),
        Err(ImageError::BadTlvInfoMagic {
            region: ImageRegion::UnprotectedTlvs,
            found: PROTECTED_MAGIC
        })
    );
    // A TLV length running past its area, and a stray partial TLV header.
    assert_eq!(
        patched(unprot + 4 + 2, &u16::MAX.to_le_bytes()),
        Err(ImageError::TlvOverflow {
            region: ImageRegion::UnprotectedTlvs,
            offset: unprot as u32 + 4
        })
    );
    let mut image = good.clone();
    image.extend_from_slice(&[0x10, 0x00]);
    let tot = (image.len() - unprot) as u16;
    image[unprot + 2..unprot + 4].copy_from_slice(&tot.to_le_bytes());
    assert_eq!(
        verify(&image, &keys, &opts()),
        Err(ImageError::TlvOverflow {
            region: ImageRegion::UnprotectedTlvs,
            offset: good.len() as u32
        })
    );
    assert!(matches!(
        patched(prot + 4 + 2, &200u16.to_le_bytes()),
        Err(ImageError::TlvOverflow {
            region: ImageRegion::ProtectedTlvs,
            ..
        })
    ));
    // Every error has a message.
    assert_eq!(
        patched(prot + 4 + 2, &200u16.to_le_bytes())
            .unwrap_err()
            .to_string(),
        format!(
            "TLV at offset {} runs past the end of the protected TLV area",
            prot + 4
        )
    );
}

#[test]
fn chunked_verification_with_odd_pages_and_buffers() {
    let key = test_key(6);
    let keys = [trusted(&key)];
    let image = builder().sign(&key);
    let mut slot = image.clone();
    slot.resize(8192, 0xff); // the rest of the flash slot
    let whole = verify(&image, &keys, &opts());
    assert!(whole.is_ok());
    for page in [1, 3, 7, 13, 64, 251, 4096] {
        let mut source = flash(&slot, page);
        assert_eq!(
            verify_source(&mut source, &keys, &opts()).map_err(|_| ()),
            whole.map_err(|_| ())
        );
        for chunk in [0usize, 1, 5, 17, 100, 1023] {
            let mut buf = vec![0u8; chunk];
            let mut source = flash(&slot, page);
            let chunked = verify_source_with_buffer(&mut source, &keys, &opts(), &mut buf);
            assert_eq!(
                chunked.map_err(|_| ()),
                whole.map_err(|_| ()),
                "page {page}, chunk {chunk}"
            );
        }
    }
    // A corrupted slot gives the same error either way.
    let mut bad = slot.clone();
    bad[0x300] ^= 1;
    let mut source = flash(&bad, 13);
    assert_eq!(
        verify_source(&mut source, &keys, &opts()),
        Err(SourceError::Image(ImageError::HashMismatch))
    );
}

#[test]
fn read_errors_are_reported_as_such() {
    let key = test_key(7);
    let keys = [trusted(&key)];
    let image = builder().sign(&key);
    for fail_at in [0u32, 100, 0x200, 0x200 + 999, image.len() as u32 - 1] {
        let mut source = flash(&image, 7);
        source.fail_at = Some(fail_at);
        let result = verify_source(&mut source, &keys, &opts());
        assert_eq!(result, Err(SourceError::Read(FlashError(fail_at))));
        assert_eq!(
            result.unwrap_err().to_string(),
            format!("reading the image failed: flash read error at {fail_at}")
        );
    }
}

#[test]
fn wrong_hardware_only_after_authenticity() {
    let key = test_key(8);
    let keys = [trusted(&key)];
    let image = builder().sign(&key);
    let device = VerifyOptions::new().require_hardware(0x0042_0002);
    assert_eq!(
        verify(&image, &keys, &device),
        Err(ImageError::WrongHardware {
            image: 0x0042_0001,
            device: 0x0042_0002
        })
    );
    // Signed by someone else: not authentic, so not "wrong hardware".
    let other = [trusted(&test_key(9))];
    assert_eq!(
        verify(&image, &other, &device),
        Err(ImageError::KeyNotTrusted)
    );
}

/// Mutations of a valid image.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn apply(image: &mut Vec<u8>, m: &Mutation) {
    if image.is_empty() {
        return;
    }
    match *m {
        Mutation::Flip(i, x) => {
            let n = image.len();
            image[i % n] ^= x;
        }
        Mutation::Truncate(i) => image.truncate(i % image.len()),
        Mutation::Insert(i, b) => {
            let n = image.len();
            image.insert(i % (n + 1), b);
        }
        Mutation::Remove(i) => {
            let n = image.len();
            image.remove(i % n);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any image the builder makes verifies, chunked or whole, with what was put in.
    #[test]
    fn built_images_verify(
        body in proptest::collection::vec(any::<u8>(), 0..1500),
        version in (any::<u8>(), any::<u8>(), any::<u16>(), any::<u32>()),
        header_size in 32u16..0x400,
        hardware in proptest::option::of(any::<u32>()),
        key_tlv in prop_oneof![Just(KeyTlv::Hash), Just(KeyTlv::Full), Just(KeyTlv::None)],
        pad_sig in any::<bool>(),
        extra in proptest::collection::vec((0xa1u16..=0xfffe, proptest::collection::vec(any::<u8>(), 0..20)), 0..3),
        page in 1usize..300,
        chunk in 1usize..300,
        seed in 1u8..50,
    ) {
        let key = test_key(seed);
        let keys = [trusted(&key)];
        let mut b = ImageBuilder::new(body);
        b.version = ImageVersion::new(version.0, version.1, version.2, version.3);
        b.header_size = header_size;
        b.key_tlv = key_tlv;
        b.pad_sig = pad_sig;
        b.protected = extra;
        if let Some(hw) = hardware {
            b = b.hardware_version(hw);
        }
        let image = b.sign(&key);
        let verified = verify(&image, &keys, &opts()).expect("verify");
        prop_assert_eq!(verified.version(), b.version);
        prop_assert_eq!(verified.ts006_version(), b.version.to_ts006());
        prop_assert_eq!(verified.hardware_version(), hardware);
        let mut buf = vec![0u8; chunk];
        let mut source = flash(&image, page);
        let chunked = verify_source_with_buffer(&mut source, &keys, &opts(), &mut buf);
        prop_assert_eq!(chunked, Ok(verified));
    }

    /// Random mutations never panic and never verify.
    #[test]
    fn mutations_never_verify(
        mutations in proptest::collection::vec(mutation(), 1..6),
        chunk in 1usize..64,
    ) {
        let key = test_key(10);
        let keys = [trusted(&key)];
        let original = builder().sign(&key);
        let mut image = original.clone();
        for m in &mutations {
            apply(&mut image, m);
        }
        // Bytes after the image (an insert at the very end) are not part of it: the slot
        // beyond the TLV area is ignored by design, so that image is still intact.
        prop_assume!(!image.starts_with(&original));
        prop_assert!(verify(&image, &keys, &opts()).is_err());
        let _ = Image::parse(&image);
        let mut buf = vec![0u8; chunk];
        let mut source = flash(&image, 5);
        prop_assert!(verify_source_with_buffer(&mut source, &keys, &opts(), &mut buf).is_err());
    }

    /// Arbitrary bytes behind a valid magic (so the TLV walk is reached) never panic.
    #[test]
    fn arbitrary_images_never_panic(
        header in proptest::collection::vec(any::<u8>(), 28),
        hdr_size in 32u16..64,
        img_size in 0u32..64,
        tail in proptest::collection::vec(any::<u8>(), 0..300),
        magics in proptest::collection::vec(any::<bool>(), 2),
    ) {
        let key = test_key(11);
        let keys = [trusted(&key)];
        let mut image = lorawan_fuota::image::IMAGE_MAGIC.to_le_bytes().to_vec();
        image.extend_from_slice(&header);
        image[8..10].copy_from_slice(&hdr_size.to_le_bytes());
        image[12..16].copy_from_slice(&img_size.to_le_bytes());
        image[16..20].copy_from_slice(&0u32.to_le_bytes());
        image.resize(usize::from(hdr_size) + img_size as usize, 0);
        let mut tail = tail;
        // Sometimes give the TLV areas their magics so parsing goes deeper.
        if magics[0] && tail.len() >= 4 {
            tail[0..2].copy_from_slice(&PROTECTED_MAGIC.to_le_bytes());
            let tot = u16::from_le_bytes([tail[2], tail[3]]) % 64;
            tail[2..4].copy_from_slice(&tot.to_le_bytes());
            image[10..12].copy_from_slice(&tot.to_le_bytes());
        } else {
            image[10..12].copy_from_slice(&0u16.to_le_bytes());
        }
        if magics[1] && tail.len() >= 4 {
            let at = if magics[0] { usize::from(u16::from_le_bytes([tail[2], tail[3]])) } else { 0 };
            if at + 4 <= tail.len() {
                tail[at..at + 2].copy_from_slice(&UNPROTECTED_MAGIC.to_le_bytes());
            }
        }
        image.extend_from_slice(&tail);
        prop_assert!(verify(&image, &keys, &opts()).is_err());
        if let Ok(parsed) = Image::parse(&image) {
            // Iteration over a parsed image is total.
            let _ = parsed.protected_tlvs().count() + parsed.unprotected_tlvs().count();
        }
    }

    /// Completely random bytes never panic.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let keys = [trusted(&test_key(12))];
        prop_assert!(verify(&bytes, &keys, &opts()).is_err());
        let _ = Image::parse(&bytes);
    }
}
