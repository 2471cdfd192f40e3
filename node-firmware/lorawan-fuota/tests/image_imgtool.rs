//! Images built and signed in Rust are accepted by `imgtool verify` (PyPI imgtool,
//! pinned in tests/fixtures/images/make-fixtures.sh), and tampered ones are not.
//!
//! imgtool is needed at test time only here. Without it the test is skipped with a
//! message, except in CI (`CI=true`), where a missing imgtool fails the test.

#[path = "common/image_builder.rs"]
mod image_builder;

use std::path::{Path, PathBuf};
use std::process::Command;

use image_builder::{pseudo_random_body, ImageBuilder, KeyTlv};
use lorawan_fuota::image::{verify, ImageVersion, TrustedKey, VerifyOptions};
use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;

const KEY_PEM: &str = include_str!("fixtures/images/key.pem");
const PUBKEY_DER: &[u8] = include_bytes!("fixtures/images/pubkey.der");

/// Whether an imgtool-dependent test runs: `Ok(true)` run, `Ok(false)` skip (not in
/// CI), `Err` fail (in CI, a missing tool must not pass silently).
fn tool_policy(tool: &str, available: bool, ci: Option<&str>) -> Result<bool, String> {
    match (available, ci) {
        (true, _) => Ok(true),
        (false, Some("true")) => Err(format!(
            "{tool} is required when CI=true but is not installed (pip install imgtool==2.5.0)"
        )),
        (false, _) => Ok(false),
    }
}

/// Runs `<tool> version`; true if it ran successfully.
fn tool_available(tool: &str) -> bool {
    Command::new(tool)
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Applies [`tool_policy`] to the real environment: panics in CI without the tool.
fn require_tool(tool: &str) -> bool {
    let ci = std::env::var("CI").ok();
    match tool_policy(tool, tool_available(tool), ci.as_deref()) {
        Ok(true) => true,
        Ok(false) => {
            eprintln!("SKIPPED: {tool} not installed (pip install imgtool==2.5.0); set CI=true to make this fail");
            false
        }
        Err(message) => panic!("{message}"),
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lorawan-fuota-image-imgtool-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn imgtool_verify(pubkey: &Path, image: &Path) -> (bool, String) {
    let out = Command::new("imgtool")
        .arg("verify")
        .arg("-k")
        .arg(pubkey)
        .arg(image)
        .output()
        .expect("run imgtool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn ci_without_imgtool_fails_instead_of_skipping() {
    assert!(tool_policy("imgtool", false, Some("true")).is_err());
    assert_eq!(tool_policy("imgtool", false, None), Ok(false));
    assert_eq!(tool_policy("imgtool", false, Some("false")), Ok(false));
    assert_eq!(tool_policy("imgtool", true, Some("true")), Ok(true));
    assert_eq!(tool_policy("imgtool", true, None), Ok(true));
    // And the real lookup: a tool that does not exist is not available.
    assert!(!tool_available("imgtool-that-does-not-exist-1e4f"));
    let forced = std::panic::catch_unwind(|| {
        match tool_policy(
            "imgtool-that-does-not-exist-1e4f",
            tool_available("imgtool-that-does-not-exist-1e4f"),
            Some("true"),
        ) {
            Err(message) => panic!("{message}"),
            Ok(run) => run,
        }
    });
    assert!(forced.is_err(), "a missing tool in CI must fail the test");
}

#[test]
fn imgtool_verify_accepts_rust_built_images() {
    if !require_tool("imgtool") {
        return;
    }
    let key = SigningKey::from_pkcs8_pem(KEY_PEM).expect("fixture key");
    let trusted = [TrustedKey::from_spki_der(PUBKEY_DER).expect("fixture public key")];
    let pubkey = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/pubkey.pem");
    let dir = scratch_dir();

    let variants = [
        ("keyhash-hw", KeyTlv::Hash, false, Some(0x0001_0203)),
        ("pubkey-hw", KeyTlv::Full, false, Some(0x00ab_cd01)),
        ("keyhash-padsig", KeyTlv::Hash, true, None),
    ];
    for (name, key_tlv, pad_sig, hardware) in variants {
        let mut b = ImageBuilder::new(pseudo_random_body(2345, 7));
        b.version = ImageVersion::new(4, 5, 678, 9);
        b.key_tlv = key_tlv;
        b.pad_sig = pad_sig;
        if let Some(hw) = hardware {
            b = b.hardware_version(hw);
        }
        let image = b.sign(&key);
        let verified = verify(&image, &trusted, &VerifyOptions::new()).expect("our verify");

        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, &image).expect("write image");
        let (ok, text) = imgtool_verify(&pubkey, &path);
        assert!(ok, "imgtool refused {name}: {text}");
        assert!(
            text.contains("Image was correctly validated"),
            "{name}: {text}"
        );
        assert!(text.contains("Image version: 4.5.678+9"), "{name}: {text}");
        let digest: String = verified
            .digest()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            text.contains(&format!("Image digest: {digest}")),
            "{name}: {text}"
        );

        // A tampered body is refused by imgtool too.
        let mut tampered = image.clone();
        tampered[0x200 + 100] ^= 1;
        std::fs::write(&path, &tampered).expect("write image");
        let (ok, text) = imgtool_verify(&pubkey, &path);
        assert!(!ok, "imgtool accepted a tampered {name}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
