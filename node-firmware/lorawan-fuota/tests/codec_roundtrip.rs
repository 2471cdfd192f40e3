//! Property tests of the four package codecs: decode(encode(x)) == x for every command,
//! direction and version; concatenated commands come back as the same list through
//! `decode_all`; decoding arbitrary bytes never panics, and whatever decodes re-encodes
//! into something that decodes to the same value.

mod codec_strategies;

use core::fmt::Debug;

use codec_strategies::*;
use lorawan_fuota::codec::{
    clock_sync, decode_all, encode_all, firmware_management, fragmentation, multicast_setup,
    Command, PackageVersion,
};
use proptest::collection::vec;
use proptest::prelude::*;

const BUFFER: usize = 512;

/// Encodes one command alone.
fn encode_one<'a, C: Command<'a> + Debug>(command: &C) -> Vec<u8> {
    let mut out = [0u8; BUFFER];
    let length = command
        .encode_to(&mut out)
        .unwrap_or_else(|error| panic!("encoding {command:?}: {error}"));
    out[..length].to_vec()
}

fn roundtrip<C>(command: C, version: PackageVersion) -> Result<(), TestCaseError>
where
    C: for<'x> Command<'x> + PartialEq + Debug,
{
    let bytes = encode_one(&command);
    prop_assert_eq!(C::decode_single(&bytes, version), Ok(command));
    Ok(())
}

/// Encodes `commands` with `encode_all` and decodes them back with `decode_all`.
///
/// A short-form answer (no optional 3 bytes) followed by a tail of exactly 3 bytes, or for
/// TS004 v2 by three zero bytes, is ambiguous by design of the tolerant decoders (the tail
/// is taken as the optional fields); such lists are rejected, see the explicit tests.
fn concatenation<C>(
    commands: &[C],
    version: PackageVersion,
    short_form: impl Fn(&C) -> bool,
    zero_tail_rule: bool,
) -> Result<(), TestCaseError>
where
    C: for<'x> Command<'x> + PartialEq + Debug + Clone,
{
    let pieces: Vec<Vec<u8>> = commands.iter().map(encode_one).collect();
    for (index, command) in commands.iter().enumerate() {
        if short_form(command) {
            let tail: Vec<u8> = pieces[index + 1..].concat();
            prop_assume!(tail.len() != 3);
            prop_assume!(!(zero_tail_rule && tail.starts_with(&[0, 0, 0])));
        }
    }
    let mut frame = [0u8; BUFFER];
    let length = encode_all(commands, &mut frame).unwrap();
    prop_assert_eq!(&frame[..length], &pieces.concat()[..]);
    let decoded: Result<Vec<C>, _> = decode_all::<C>(&frame[..length], version).collect();
    prop_assert_eq!(decoded, Ok(commands.to_vec()));
    Ok(())
}

/// Decodes arbitrary bytes; every command that decodes must re-encode, and that encoding
/// must decode (alone) to the same command.
fn exercise<C>(bytes: &[u8], version: PackageVersion) -> Result<(), TestCaseError>
where
    C: for<'x> Command<'x> + PartialEq + Debug,
{
    let _ = C::decode_single(bytes, version);
    for command in decode_all::<C>(bytes, version).flatten() {
        let encoded = encode_one(&command);
        prop_assert_eq!(C::decode_single(&encoded, version), Ok(command));
    }
    Ok(())
}

fn exercise_fragmentation_downlink(
    bytes: &[u8],
    version: PackageVersion,
) -> Result<(), TestCaseError> {
    let _ = fragmentation::Downlink::decode_single(bytes, version);
    for command in decode_all::<fragmentation::Downlink>(bytes, version).flatten() {
        let encoded = encode_one(&command);
        prop_assert_eq!(
            fragmentation::Downlink::decode_single(&encoded, version),
            Ok(command)
        );
    }
    Ok(())
}

/// Random frames, biased towards starting with a CID that exists.
fn random_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..48),
        (0u8..9, vec(any::<u8>(), 0..48)).prop_map(|(cid, mut rest)| {
            rest.insert(0, cid);
            rest
        }),
        vec(prop_oneof![0u8..9, Just(0u8), any::<u8>()], 0..48),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    // ---------------------------------------------------------------- TS003

    #[test]
    fn clock_sync_downlink_roundtrip(command in clock_sync_downlink(), version in version()) {
        roundtrip(command, version)?;
    }

    #[test]
    fn clock_sync_uplink_roundtrip(command in clock_sync_uplink(), version in version()) {
        roundtrip(command, version)?;
    }

    // ---------------------------------------------------------------- TS005

    #[test]
    fn multicast_downlink_roundtrip(command in multicast_downlink(false), version in version()) {
        roundtrip(command, version)?;
    }

    #[test]
    fn multicast_uplink_v1_roundtrip(command in multicast_uplink(V1, AnswerForm::Any)) {
        roundtrip(command, V1)?;
    }

    #[test]
    fn multicast_uplink_v2_roundtrip(command in multicast_uplink(V2, AnswerForm::Any)) {
        roundtrip(command, V2)?;
    }

    // ---------------------------------------------------------------- TS004

    #[test]
    fn fragmentation_downlink_v1_roundtrip(command in frag_downlink(V1)) {
        let bytes = encode_one(&command.as_command());
        prop_assert_eq!(
            fragmentation::Downlink::decode_single(&bytes, V1),
            Ok(command.as_command())
        );
    }

    #[test]
    fn fragmentation_downlink_v2_roundtrip(command in frag_downlink(V2)) {
        let bytes = encode_one(&command.as_command());
        prop_assert_eq!(
            fragmentation::Downlink::decode_single(&bytes, V2),
            Ok(command.as_command())
        );
    }

    #[test]
    fn fragmentation_uplink_v1_roundtrip(command in frag_uplink(V1, AnswerForm::Any)) {
        roundtrip(command, V1)?;
    }

    #[test]
    fn fragmentation_uplink_v2_roundtrip(command in frag_uplink(V2, AnswerForm::Any)) {
        roundtrip(command, V2)?;
    }

    // ---------------------------------------------------------------- TS006

    #[test]
    fn firmware_downlink_roundtrip(command in firmware_downlink()) {
        roundtrip(command, V1)?;
    }

    #[test]
    fn firmware_uplink_roundtrip(command in firmware_uplink()) {
        roundtrip(command, V1)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn clock_sync_concatenations(
        downlinks in vec(clock_sync_downlink(), 1..8),
        uplinks in vec(clock_sync_uplink(), 1..8),
        version in version(),
    ) {
        concatenation(&downlinks, version, |_| false, false)?;
        concatenation(&uplinks, version, |_| false, false)?;
    }

    #[test]
    fn multicast_concatenations(
        downlinks in vec(multicast_downlink(false), 1..8),
        uplinks_v1 in vec(multicast_uplink(V1, AnswerForm::Canonical), 1..8),
        uplinks_v2 in vec(multicast_uplink(V2, AnswerForm::Canonical), 1..8),
        version in version(),
    ) {
        concatenation(&downlinks, version, |_| false, false)?;
        concatenation(&uplinks_v1, V1, multicast_short_form, false)?;
        concatenation(&uplinks_v2, V2, multicast_short_form, false)?;
    }

    #[test]
    fn multicast_uplink_tolerated_form_last_in_frame(
        uplinks_v1 in vec(multicast_uplink(V1, AnswerForm::Canonical), 0..6),
        last_v1 in multicast_uplink(V1, AnswerForm::Any),
        uplinks_v2 in vec(multicast_uplink(V2, AnswerForm::Canonical), 0..6),
        last_v2 in multicast_uplink(V2, AnswerForm::Any),
    ) {
        // The 4-byte form of an error answer is only recognisable at the end of a frame.
        for (mut uplinks, last, version) in [(uplinks_v1, last_v1, V1), (uplinks_v2, last_v2, V2)] {
            uplinks.push(last);
            concatenation(&uplinks, version, multicast_short_form, false)?;
        }
    }

    #[test]
    fn fragmentation_concatenations(
        uplinks_v1 in vec(frag_uplink(V1, AnswerForm::Canonical), 1..8),
        uplinks_v2 in vec(frag_uplink(V2, AnswerForm::Canonical), 1..8),
        last_v2 in frag_uplink(V2, AnswerForm::Any),
    ) {
        concatenation(&uplinks_v1, V1, |_| false, false)?;
        concatenation(&uplinks_v2, V2, frag_short_form, true)?;
        let mut with_tolerated_last = uplinks_v2.clone();
        with_tolerated_last.push(last_v2);
        concatenation(&with_tolerated_last, V2, frag_short_form, true)?;
    }

    #[test]
    fn fragmentation_downlink_concatenations(
        commands_v1 in vec(frag_downlink_command(V1), 0..8),
        commands_v2 in vec(frag_downlink_command(V2), 0..8),
        fragment in proptest::option::of(data_fragment()),
    ) {
        for (mut owned, version) in [(commands_v1, V1), (commands_v2, V2)] {
            // DataFragment takes the rest of the frame, so it can only come last.
            owned.extend(fragment.clone());
            if owned.is_empty() {
                continue;
            }
            let commands: Vec<fragmentation::Downlink<'_>> =
                owned.iter().map(FragDown::as_command).collect();
            let mut frame = [0u8; BUFFER];
            let length = encode_all(&commands, &mut frame).unwrap();
            let decoded: Result<Vec<_>, _> =
                decode_all::<fragmentation::Downlink>(&frame[..length], version).collect();
            prop_assert_eq!(decoded, Ok(commands));
        }
    }

    #[test]
    fn firmware_concatenations(
        downlinks in vec(firmware_downlink(), 1..8),
        uplinks in vec(firmware_uplink(), 1..8),
    ) {
        concatenation(&downlinks, V1, |_| false, false)?;
        concatenation(&uplinks, V1, |_| false, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Every (package, direction, version): arbitrary bytes never panic, and whatever
    /// decodes re-encodes to an equivalent command.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in random_frame(), version in version()) {
        exercise::<clock_sync::Downlink>(&bytes, version)?;
        exercise::<clock_sync::Uplink>(&bytes, version)?;
        exercise::<multicast_setup::Downlink>(&bytes, version)?;
        exercise::<multicast_setup::Uplink>(&bytes, version)?;
        exercise_fragmentation_downlink(&bytes, version)?;
        exercise::<fragmentation::Uplink>(&bytes, version)?;
        exercise::<firmware_management::Downlink>(&bytes, version)?;
        exercise::<firmware_management::Uplink>(&bytes, version)?;
    }
}
