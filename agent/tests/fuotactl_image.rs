//! `fuotactl image sign` and `fuotactl image verify` as a technician runs them: human
//! and JSON output, exit codes (0 ok, 1 refused, 2 usage/file errors), and no output
//! file left behind when signing fails.

mod common;

use std::path::{Path, PathBuf};

use common::{fuotactl, text};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../node-firmware/lorawan-fuota/tests/fixtures/images"
);

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn sign_then_verify_in_human_and_json_output() {
    let directory = tempfile::tempdir().unwrap();
    let signed = directory.path().join("app-1.3.0.img");
    let output = fuotactl(&[
        "image",
        "sign",
        "--key",
        path(&fixture("key.pem")),
        "--version",
        "1.3.0+7",
        "--hardware-version",
        "0x00010002",
        path(&fixture("body.bin")),
        path(&signed),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("version 1.3.0+7"), "{stdout}");
    assert!(stdout.contains("TS006 0x01030000"), "{stdout}");
    assert!(stdout.contains("hardware 0x00010002"), "{stdout}");

    let output = fuotactl(&[
        "image",
        "verify",
        "--key",
        path(&fixture("pubkey.pem")),
        path(&signed),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains(": valid, version 1.3.0+7"), "{stdout}");
    assert!(stdout.contains("signed by pubkey.pem"), "{stdout}");

    let output = fuotactl(&[
        "--json",
        "image",
        "verify",
        "--key",
        path(&fixture("other-pubkey.pem")),
        "--key",
        path(&fixture("pubkey.der")),
        "--hardware-version",
        "65538",
        path(&signed),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["ts006_version"], 0x0103_0000);
    assert_eq!(json["hardware_version"], 0x0001_0002);
    assert_eq!(json["signed_by"], "pubkey.der");
}

#[test]
fn refusals_exit_1_and_say_why() {
    let directory = tempfile::tempdir().unwrap();
    let signed = directory.path().join("app.img");
    let output = fuotactl(&[
        "image",
        "sign",
        "-k",
        path(&fixture("other-key.pem")),
        "-v",
        "2.0.0",
        "--hardware-version",
        "7",
        path(&fixture("body.bin")),
        path(&signed),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    // Signed by a key that is not trusted.
    let output = fuotactl(&[
        "image",
        "verify",
        "-k",
        path(&fixture("pubkey.pem")),
        path(&signed),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("refused"),
        "{}",
        text(&output.stderr)
    );

    // Built for other hardware.
    let output = fuotactl(&[
        "--json",
        "image",
        "verify",
        "-k",
        path(&fixture("other-pubkey.pem")),
        "--hardware-version",
        "8",
        path(&signed),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert!(json["reason"].as_str().unwrap().contains('7'), "{json}");

    // A damaged image.
    let mut bytes = std::fs::read(&signed).unwrap();
    bytes[0x300] ^= 1;
    std::fs::write(&signed, &bytes).unwrap();
    let output = fuotactl(&[
        "image",
        "verify",
        "-k",
        path(&fixture("other-pubkey.pem")),
        path(&signed),
    ]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn usage_and_file_errors_exit_2_and_leave_no_output() {
    let directory = tempfile::tempdir().unwrap();
    let signed = directory.path().join("out.img");
    let key = fixture("key.pem");
    let public_key = fixture("pubkey.pem");
    let body = fixture("body.bin");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "image",
                "sign",
                "-k",
                path(&key),
                "-v",
                "1.2.x",
                path(&body),
                path(&signed),
            ],
            "invalid version",
        ),
        (
            vec![
                "image",
                "sign",
                "-k",
                path(&public_key),
                "-v",
                "1.0.0",
                path(&body),
                path(&signed),
            ],
            "this is a public key",
        ),
        (
            vec![
                "image",
                "sign",
                "-k",
                path(&key),
                "-v",
                "1.0.0",
                "missing.bin",
                path(&signed),
            ],
            "cannot read missing.bin",
        ),
        (
            vec![
                "image",
                "sign",
                "-k",
                path(&key),
                "-v",
                "1.0.0",
                "--header-size",
                "0x10000",
                path(&body),
                path(&signed),
            ],
            "does not fit in 16 bits",
        ),
        (
            vec!["image", "verify", "-k", path(&key), path(&body)],
            "this is a private key",
        ),
    ];
    for (args, expected) in cases {
        let output = fuotactl(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!signed.exists(), "{args:?} left an output file");
    }
    // An output directory that does not exist: error, and no partial file anywhere.
    let output = fuotactl(&[
        "image",
        "sign",
        "-k",
        path(&key),
        "-v",
        "1.0.0",
        path(&body),
        path(&directory.path().join("missing/out.img")),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0);
}
