// The image verification key the bootloader's build.rs builds in (it `include!`s this
// file; the application leaves the signature to the bootloader): `FUOTA_BOOT_PUBKEY`
// names a DER SubjectPublicKeyInfo file of an ECDSA P-256 key (`imgtool getpub -k
// your-key.pem -e raw > pubkey.der` writes one); unset, the project's **test key** is used
// (lorawan-fuota/tests/fixtures/images/pubkey.der, whose private half is committed:
// never ship firmware built with it).

/// DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Writes `$OUT_DIR/boot_key.rs` with `BOOT_KEY_SEC1`, the key's SEC1 point.
fn write_verification_key(out: &std::path::Path) {
    use std::path::PathBuf;
    let key_path = match std::env::var_os("FUOTA_BOOT_PUBKEY") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from("../../lorawan-fuota/tests/fixtures/images/pubkey.der"),
    };
    println!("cargo:rerun-if-env-changed=FUOTA_BOOT_PUBKEY");
    println!("cargo:rerun-if-changed={}", key_path.display());
    println!("cargo:rerun-if-changed=../build-support/verification_key.rs");
    let der = std::fs::read(&key_path).unwrap_or_else(|e| {
        panic!(
            "cannot read the verification key {}: {e}",
            key_path.display()
        )
    });
    if der.len() != 91 || der[..26] != P256_SPKI_PREFIX {
        panic!(
            "{} is not a DER SubjectPublicKeyInfo of an ECDSA P-256 key (91 bytes)",
            key_path.display()
        );
    }
    let point: Vec<String> = der[26..].iter().map(|b| format!("{b:#04x}")).collect();
    std::fs::write(
        out.join("boot_key.rs"),
        format!(
            "/// SEC1 uncompressed point of the verification key (from {}).\npub const BOOT_KEY_SEC1: [u8; 65] = [{}];\n",
            key_path.display(),
            point.join(", ")
        ),
    )
    .expect("write boot_key.rs");
}
