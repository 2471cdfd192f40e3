//! The firmware cache and image signing, as an operator uses them: sign a binary with a
//! key file, import it (and imgtool-signed images), import it again, refuse what is not
//! trusted or not whole, survive a damaged disk and an interrupted import.

use std::path::{Path, PathBuf};
use std::process::Command;

use fuota_agent::clock::WallTime;
use fuota_agent::firmware::signing::VersionArgument;
use fuota_agent::firmware::{
    CacheError, FirmwareCache, ImageSigner, ImageSpec, ImportOutcome, KeyIdentification,
    OpaqueImage, SignImageError, TrustStore, TrustStoreError,
};
use fuota_agent::storage::{EventKind, FirmwareImageKind, Storage};
use lorawan_fuota::image::{verify, ImageError, ImageVersion, VerifyOptions};
use sha2::{Digest, Sha256};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../node-firmware/lorawan-fuota/tests/fixtures/images"
);

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn at() -> WallTime {
    WallTime::from_unix_seconds(1_790_000_000)
}

struct Setup {
    _directory: tempfile::TempDir,
    storage: Storage,
    cache_dir: PathBuf,
    cache: FirmwareCache,
    signer: ImageSigner,
}

/// A database, a cache trusting the fixture key, and a signer with that key.
fn setup() -> Setup {
    let directory = tempfile::tempdir().unwrap();
    let storage = Storage::open(&directory.path().join("agent.db")).unwrap();
    let cache_dir = directory.path().join("images");
    let trust = TrustStore::load(&[fixture("pubkey.pem")]).unwrap();
    let cache = FirmwareCache::open(&cache_dir, trust).unwrap();
    let signer = ImageSigner::load(&fixture("key.pem")).unwrap();
    Setup {
        _directory: directory,
        storage,
        cache_dir,
        cache,
        signer,
    }
}

fn body(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn spec(version: &str) -> ImageSpec {
    let VersionArgument(version) = version.parse().unwrap();
    let mut spec = ImageSpec::new(version);
    spec.hardware_version = Some(0x0001_0002);
    spec
}

fn files_in(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn events_of(storage: &Storage, kind: EventKind) -> usize {
    storage
        .events_after(0, 1000)
        .unwrap()
        .iter()
        .filter(|event| event.kind == kind)
        .count()
}

#[test]
fn a_signed_binary_verifies_with_the_signers_public_key() {
    let signer = ImageSigner::load(&fixture("key.pem")).unwrap();
    let trust = TrustStore::load(&[fixture("pubkey.pem")]).unwrap();
    let image = signer.sign_image(&body(5000, 1), &spec("2.1.7+9")).unwrap();
    let verified = verify(&image, trust.keys(), &VerifyOptions::new()).unwrap();
    assert_eq!(verified.version(), ImageVersion::new(2, 1, 7, 9));
    assert_eq!(verified.ts006_version(), 0x0201_0007);
    assert_eq!(verified.hardware_version(), Some(0x0001_0002));
    assert_eq!(verified.header().hdr_size, 0x200);
    assert_eq!(&image[0x200..0x200 + 5000], &body(5000, 1)[..]);
    // Deterministic: the same inputs give the same image.
    assert_eq!(
        signer.sign_image(&body(5000, 1), &spec("2.1.7+9")).unwrap(),
        image
    );
    // The key hash is MCUboot's (SHA-256 of the DER public key), as in the fixture.
    let expected_hash = std::fs::read(fixture("pubkey.sha256")).unwrap();
    assert_eq!(expected_hash, signer.key_hash());
}

#[test]
fn full_public_key_images_and_images_without_hardware_version_verify() {
    let signer = ImageSigner::load(&fixture("key.pem")).unwrap();
    let trust = TrustStore::load(&[fixture("pubkey.der")]).unwrap();
    let mut spec = ImageSpec::new(ImageVersion::new(1, 0, 0, 0));
    spec.key_identification = KeyIdentification::Full;
    let image = signer.sign_image(&body(100, 2), &spec).unwrap();
    let verified = verify(&image, trust.keys(), &VerifyOptions::new()).unwrap();
    assert_eq!(verified.hardware_version(), None);
    // Another key's trust store refuses it.
    let other = TrustStore::load(&[fixture("other-pubkey.pem")]).unwrap();
    assert!(verify(&image, other.keys(), &VerifyOptions::new()).is_err());
}

#[test]
fn bad_signing_inputs_are_refused_with_reasons() {
    let signer = ImageSigner::load(&fixture("key.pem")).unwrap();
    let mut spec = ImageSpec::new(ImageVersion::new(1, 0, 0, 0));
    assert_eq!(
        signer.sign_image(&[], &spec),
        Err(SignImageError::EmptyBody)
    );
    spec.header_size = 16;
    assert_eq!(
        signer.sign_image(&[1], &spec),
        Err(SignImageError::HeaderTooSmall { header_size: 16 })
    );
    spec.header_size = 0x202;
    assert!(matches!(
        signer.sign_image(&[1], &spec),
        Err(SignImageError::HeaderMisaligned { .. })
    ));

    let public = ImageSigner::from_pem(
        &std::fs::read_to_string(fixture("pubkey.pem")).unwrap(),
        "pubkey.pem",
    )
    .unwrap_err()
    .to_string();
    assert!(public.contains("this is a public key"), "{public}");
    let garbage = ImageSigner::from_pem("hello", "x.pem")
        .unwrap_err()
        .to_string();
    assert!(
        garbage.contains("x.pem is not a P-256 private key"),
        "{garbage}"
    );

    // A SEC1 "EC PRIVATE KEY" (openssl ecparam -genkey) is accepted too.
    let sec1 = p256::SecretKey::from_slice(&[7u8; 32])
        .unwrap()
        .to_sec1_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    assert!(ImageSigner::from_pem(&sec1, "sec1.pem").is_ok());
}

#[test]
fn version_arguments_parse_like_imgtool_and_refuse_overflow() {
    let parse = |text: &str| text.parse::<VersionArgument>().map(|v| v.0);
    assert_eq!(parse("1.2.3+4"), Ok(ImageVersion::new(1, 2, 3, 4)));
    assert_eq!(parse("1.2"), Ok(ImageVersion::new(1, 2, 0, 0)));
    assert_eq!(
        parse("255.255.65535+4294967295").unwrap().to_ts006(),
        u32::MAX
    );
    for bad in ["256.0.0", "1.2.65536", "1.x.3", "1.2.3.4", "1.2.3+-1", ""] {
        let error = parse(bad).unwrap_err();
        assert!(
            error.contains("expected major.minor.revision"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn trust_store_refuses_private_keys_garbage_and_duplicates() {
    let error = TrustStore::load(&[fixture("key.pem")]).unwrap_err();
    assert!(matches!(error, TrustStoreError::NotAPublicKey { .. }));
    assert!(
        error.to_string().contains("this is a private key"),
        "{error}"
    );
    let error = TrustStore::load(&[fixture("body.bin")]).unwrap_err();
    assert!(matches!(error, TrustStoreError::NotAPublicKey { .. }));
    let error = TrustStore::load(&[fixture("pubkey.pem"), fixture("pubkey.der")]).unwrap_err();
    assert!(
        matches!(error, TrustStoreError::Duplicate { .. }),
        "{error}"
    );
    let error = TrustStore::load(&[fixture("missing.pem")]).unwrap_err();
    assert!(matches!(error, TrustStoreError::Read { .. }));
}

#[test]
fn import_caches_a_signed_image_once_by_content() {
    let mut s = setup();
    let image = s
        .signer
        .sign_image(&body(20_000, 3), &spec("1.4.0"))
        .unwrap();
    let outcome = s
        .cache
        .import_mcuboot(&mut s.storage, &image, "app-1.4.0.bin", at())
        .unwrap();
    let ImportOutcome::Imported(record) = outcome else {
        panic!("first import must import: {outcome:?}");
    };
    let sha256 = hex(&Sha256::digest(&image));
    assert_eq!(record.sha256, sha256);
    assert_eq!(record.kind, FirmwareImageKind::Mcuboot);
    assert_eq!(record.size, image.len() as u64);
    assert_eq!(record.version.as_deref(), Some("1.4.0+0"));
    assert_eq!(record.ts006_version, Some(0x0104_0000));
    assert_eq!(record.hardware_version, Some(0x0001_0002));
    assert_eq!(record.signer_key_hash, hex(&s.signer.key_hash()));
    assert_eq!(files_in(&s.cache_dir), vec![format!("{sha256}.img")]);
    assert_eq!(std::fs::read(s.cache.image_path(&sha256)).unwrap(), image);

    // The same bytes again (under another name): nothing changes.
    let again = s
        .cache
        .import_mcuboot(&mut s.storage, &image, "copy.bin", at())
        .unwrap();
    assert_eq!(again, ImportOutcome::AlreadyCached(record.clone()));
    assert_eq!(events_of(&s.storage, EventKind::ImageImported), 1);
    assert_eq!(s.storage.firmware_images().unwrap(), vec![record.clone()]);

    let loaded = s.cache.load(&s.storage, &sha256).unwrap();
    assert_eq!(loaded.bytes, image);
    assert_eq!(loaded.record, record);
}

#[test]
fn imgtool_signed_fixtures_import() {
    let mut s = setup();
    for name in [
        "signed-hw-keyhash.bin",
        "signed-hw-pubkey.bin",
        "signed-no-hw.bin",
    ] {
        let outcome = s
            .cache
            .import_mcuboot_file(&mut s.storage, &fixture(name), at())
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(outcome.record().name, name);
    }
    assert_eq!(s.storage.firmware_images().unwrap().len(), 3);
}

#[test]
fn refused_images_leave_nothing_behind() {
    let mut s = setup();
    let image = s.signer.sign_image(&body(3000, 4), &spec("1.0.0")).unwrap();

    let mut tampered = image.clone();
    tampered[0x200 + 10] ^= 0x01;
    let error = s
        .cache
        .import_mcuboot(&mut s.storage, &tampered, "t", at())
        .unwrap_err();
    assert!(
        matches!(error, CacheError::InvalidImage(ImageError::HashMismatch)),
        "{error}"
    );

    let error = s
        .cache
        .import_mcuboot(&mut s.storage, &image[..image.len() - 20], "t", at())
        .unwrap_err();
    assert!(
        matches!(
            error,
            CacheError::InvalidImage(ImageError::Truncated { .. })
        ),
        "{error}"
    );

    let other = ImageSigner::load(&fixture("other-key.pem")).unwrap();
    let foreign = other.sign_image(&body(3000, 4), &spec("1.0.0")).unwrap();
    let error = s
        .cache
        .import_mcuboot(&mut s.storage, &foreign, "t", at())
        .unwrap_err();
    assert!(
        matches!(error, CacheError::InvalidImage(ImageError::KeyNotTrusted)),
        "{error}"
    );
    assert!(
        error.to_string().starts_with("refused MCUboot image: "),
        "{error}"
    );

    let mut trailing = image.clone();
    trailing.extend_from_slice(&[0xff, 0xff, 0x00]);
    let error = s
        .cache
        .import_mcuboot(&mut s.storage, &trailing, "t", at())
        .unwrap_err();
    assert!(
        matches!(error, CacheError::TrailingData { trailing: 3, .. }),
        "{error}"
    );

    let error = s
        .cache
        .import_mcuboot(&mut s.storage, &[], "t", at())
        .unwrap_err();
    assert!(matches!(error, CacheError::Empty));
    let error = s
        .cache
        .import_mcuboot(&mut s.storage, b"not an image at all", "t", at())
        .unwrap_err();
    assert!(matches!(error, CacheError::InvalidImage(_)), "{error}");

    assert!(files_in(&s.cache_dir).is_empty());
    assert!(s.storage.firmware_images().unwrap().is_empty());
    assert_eq!(events_of(&s.storage, EventKind::ImageImported), 0);
}

#[test]
fn erased_flash_padding_after_an_image_is_dropped() {
    let mut s = setup();
    let image = s.signer.sign_image(&body(3000, 5), &spec("1.0.1")).unwrap();
    let mut padded = image.clone();
    padded.resize(image.len() + 4096, 0xff);
    let outcome = s
        .cache
        .import_mcuboot(&mut s.storage, &padded, "padded", at())
        .unwrap();
    assert_eq!(outcome.record().size, image.len() as u64);
    assert_eq!(outcome.record().sha256, hex(&Sha256::digest(&image)));
}

#[test]
fn no_trusted_keys_means_no_image_is_accepted() {
    let directory = tempfile::tempdir().unwrap();
    let mut storage = Storage::open(&directory.path().join("agent.db")).unwrap();
    let cache =
        FirmwareCache::open(&directory.path().join("images"), TrustStore::default()).unwrap();
    let signer = ImageSigner::load(&fixture("key.pem")).unwrap();
    let image = signer.sign_image(&body(100, 6), &spec("1.0.0")).unwrap();
    let error = cache
        .import_mcuboot(&mut storage, &image, "x", at())
        .unwrap_err();
    assert!(matches!(error, CacheError::NoTrustedKeys));
    assert!(error.to_string().contains("trusted_keys"), "{error}");
}

#[test]
fn opaque_images_need_a_trusted_detached_signature() {
    let mut s = setup();
    let sfb = body(7000, 7);
    let signature = s.signer.sign_detached(&sfb);
    fn opaque<'a>(sfb: &'a [u8], signature: &'a [u8]) -> OpaqueImage<'a> {
        OpaqueImage {
            bytes: sfb,
            signature,
            name: "app.sfb",
            ts006_version: Some(0x0102_0003),
            hardware_version: None,
        }
    }
    // A raw r||s signature of other bytes, and another key's signature: refused.
    let wrong = s.signer.sign_detached(b"other bytes");
    assert!(matches!(
        s.cache
            .import_opaque(&mut s.storage, opaque(&sfb, &wrong), at()),
        Err(CacheError::UntrustedSignature)
    ));
    let other = ImageSigner::load(&fixture("other-key.pem")).unwrap();
    assert!(matches!(
        s.cache.import_opaque(
            &mut s.storage,
            opaque(&sfb, &other.sign_detached(&sfb)),
            at()
        ),
        Err(CacheError::UntrustedSignature)
    ));
    assert!(files_in(&s.cache_dir).is_empty());

    let record = s
        .cache
        .import_opaque(&mut s.storage, opaque(&sfb, &signature), at())
        .unwrap()
        .record()
        .clone();
    assert_eq!(record.kind, FirmwareImageKind::Opaque);
    assert_eq!(record.sha256, hex(&Sha256::digest(&sfb)));
    assert_eq!(record.ts006_version, Some(0x0102_0003));
    assert_eq!(s.cache.load(&s.storage, &record.sha256).unwrap().bytes, sfb);

    // The raw 64-byte form of the same signature is accepted as well.
    let raw = p256::ecdsa::Signature::from_der(&signature)
        .unwrap()
        .to_bytes();
    let again = s
        .cache
        .import_opaque(&mut s.storage, opaque(&sfb, &raw), at())
        .unwrap();
    assert!(matches!(again, ImportOutcome::AlreadyCached(_)));
}

#[test]
fn a_damaged_or_missing_file_is_detected_and_repaired_by_reimport() {
    let mut s = setup();
    let image = s.signer.sign_image(&body(4000, 8), &spec("3.0.0")).unwrap();
    let sha256 = s
        .cache
        .import_mcuboot(&mut s.storage, &image, "a", at())
        .unwrap()
        .record()
        .sha256
        .clone();
    let path = s.cache.image_path(&sha256);

    let mut damaged = image.clone();
    damaged[100] ^= 0x80;
    std::fs::write(&path, &damaged).unwrap();
    assert!(matches!(
        s.cache.load(&s.storage, &sha256),
        Err(CacheError::Damaged { .. })
    ));
    assert!(matches!(
        s.cache.import_mcuboot(&mut s.storage, &image, "a", at()),
        Ok(ImportOutcome::AlreadyCached(_))
    ));
    assert_eq!(s.cache.load(&s.storage, &sha256).unwrap().bytes, image);

    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        s.cache.load(&s.storage, &sha256),
        Err(CacheError::Damaged { .. })
    ));
    s.cache
        .import_mcuboot(&mut s.storage, &image, "a", at())
        .unwrap();
    assert_eq!(s.cache.load(&s.storage, &sha256).unwrap().bytes, image);
}

#[test]
fn an_image_whose_key_was_withdrawn_is_not_loaded() {
    let mut s = setup();
    let image = s.signer.sign_image(&body(4000, 9), &spec("3.1.0")).unwrap();
    let sha256 = s
        .cache
        .import_mcuboot(&mut s.storage, &image, "a", at())
        .unwrap()
        .record()
        .sha256
        .clone();
    let rotated = FirmwareCache::open(
        &s.cache_dir,
        TrustStore::load(&[fixture("other-pubkey.pem")]).unwrap(),
    )
    .unwrap();
    let error = rotated.load(&s.storage, &sha256).unwrap_err();
    assert!(
        matches!(error, CacheError::NoLongerTrusted { .. }),
        "{error}"
    );
}

#[test]
fn interrupted_imports_and_removals_are_cleaned_up() {
    let mut s = setup();
    let image = s
        .signer
        .sign_image(&body(4000, 10), &spec("1.0.0"))
        .unwrap();
    let sha256 = s
        .cache
        .import_mcuboot(&mut s.storage, &image, "kept", at())
        .unwrap()
        .record()
        .sha256
        .clone();
    // A crash mid-write leaves a partial file; a crash before the commit an orphan.
    std::fs::write(
        s.cache_dir.join(format!("{}.img.partial", "ab".repeat(32))),
        b"half",
    )
    .unwrap();
    std::fs::write(
        s.cache_dir.join(format!("{}.img", "cd".repeat(32))),
        b"orphan",
    )
    .unwrap();
    let reopened = FirmwareCache::open(&s.cache_dir, s.cache.trust_store().clone()).unwrap();
    assert_eq!(reopened.collect_garbage(&s.storage).unwrap(), 1);
    assert_eq!(files_in(&s.cache_dir), vec![format!("{sha256}.img")]);

    assert!(reopened.remove(&mut s.storage, &sha256, at()).unwrap());
    assert!(!reopened.remove(&mut s.storage, &sha256, at()).unwrap());
    assert!(files_in(&s.cache_dir).is_empty());
    assert_eq!(events_of(&s.storage, EventKind::ImageRemoved), 1);
    assert!(matches!(
        reopened.load(&s.storage, &sha256),
        Err(CacheError::NotCached(_))
    ));
}

/// imgtool (PyPI) accepts images signed here. Skipped without imgtool, except in CI.
#[test]
fn imgtool_verify_accepts_agent_signed_images() {
    let available = Command::new("imgtool")
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !available {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "imgtool is required when CI=true (pip install imgtool==2.5.0)"
        );
        eprintln!("SKIPPED: imgtool not installed");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let signer = ImageSigner::load(&fixture("key.pem")).unwrap();
    for (index, identification) in [KeyIdentification::Hash, KeyIdentification::Full]
        .into_iter()
        .enumerate()
    {
        let mut spec = spec("1.2.3+4");
        spec.key_identification = identification;
        let image = signer.sign_image(&body(10_000, 11), &spec).unwrap();
        let path = directory.path().join(format!("image-{index}.bin"));
        std::fs::write(&path, &image).unwrap();
        let output = Command::new("imgtool")
            .args(["verify", "-k"])
            .arg(fixture("key.pem"))
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("Image was correctly validated"),
            "imgtool verify refused {identification:?}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
