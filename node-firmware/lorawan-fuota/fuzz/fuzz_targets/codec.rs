//! Fuzzes every application-layer decoder: the first byte picks the package, the
//! direction and the version; the rest is an FRMPayload. Decoding must never panic, and
//! every command decoded must encode and decode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorawan_fuota::codec::{
    clock_sync, decode_all, firmware_management, fragmentation, multicast_setup, Command,
    PackageVersion,
};

/// Decodes `payload` as commands of `$command`, re-encodes each and decodes it again.
/// (A macro, so each use infers its own lifetimes for borrowing command types.)
macro_rules! check {
    ($command:ty, $payload:expr, $version:expr) => {{
        // A command never encodes longer than the bytes it was decoded from.
        let mut buffer = vec![0u8; $payload.len()];
        for command in decode_all::<$command>($payload, $version) {
            let Ok(command) = command else {
                break;
            };
            let length = command
                .encode_to(&mut buffer)
                .unwrap_or_else(|e| panic!("decoded {command:?} does not encode: {e}"));
            let again = <$command>::decode_single(&buffer[..length], $version)
                .unwrap_or_else(|e| panic!("{command:?} does not decode again: {e}"));
            assert_eq!(again, command);
        }
    }};
}

fuzz_target!(|input: &[u8]| {
    let [selector, payload @ ..] = input else {
        return;
    };
    let version = if selector & 1 == 0 {
        PackageVersion::V1
    } else {
        PackageVersion::V2
    };
    match selector >> 1 & 7 {
        0 => check!(clock_sync::Downlink, payload, version),
        1 => check!(clock_sync::Uplink, payload, version),
        2 => check!(multicast_setup::Downlink, payload, version),
        3 => check!(multicast_setup::Uplink, payload, version),
        4 => check!(fragmentation::Downlink, payload, version),
        5 => check!(fragmentation::Uplink, payload, version),
        6 => check!(firmware_management::Downlink, payload, version),
        _ => check!(firmware_management::Uplink, payload, version),
    }
});
