//! Fuzzes the signed-image parser and verifier with whatever a download slot or a file
//! may hold. Seeds: the imgtool fixtures (`fuzz/corpus/image` is filled by CI from
//! `tests/fixtures/images`). Nothing may panic; whole-slice and chunked verification
//! must agree; and no mutated input may verify except the unmodified fixtures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorawan_fuota::image::{verify, verify_source_with_buffer, Image, TrustedKey, VerifyOptions};

const FIXTURE_KEY: &[u8] = include_bytes!("../../tests/fixtures/images/pubkey.der");

fuzz_target!(|input: &[u8]| {
    let Ok(key) = TrustedKey::from_spki_der(FIXTURE_KEY) else {
        panic!("fixture key must load");
    };
    if let Ok(image) = Image::parse(input) {
        // Walk every TLV of both areas.
        let _ = image
            .protected_tlvs()
            .chain(image.unprotected_tlvs())
            .count();
        let _ = image.hardware_version();
    }
    let keys = [key];
    let options = VerifyOptions::new().require_hardware(0x0001_0203);
    let whole = verify(input, &keys, &options);
    let chunk_len = input.first().map_or(1, |&b| usize::from(b % 61) + 1);
    let mut chunk = vec![0u8; chunk_len];
    let mut source = input;
    let chunked = verify_source_with_buffer(&mut source, &keys, &options, &mut chunk);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a.digest(), b.digest()),
        (Err(_), Err(_)) => {}
        _ => panic!("whole-slice {whole:?} and chunked {chunked:?} verification disagree"),
    }
});
