//! FEC against the reference vectors (test-vectors.md §4.2–4.4): parity rows for v1 and
//! v2, the full encode of a 100-byte block, and the documented decode sequences.

mod fec_support;

use fec_support::CheckedFlash;
use lorawan_fuota::codec::PackageVersion::{self, V1, V2};
use lorawan_fuota::fec::decoder::DecoderConfig;
use lorawan_fuota::fec::{parity_row, Decoder, FragmentEncoder, FragmentOutcome};

fn row_string(n: u32, m: u16, version: PackageVersion) -> String {
    let mut row = vec![0u8; usize::from(m).div_ceil(8)];
    parity_row(n, m, version, &mut row).unwrap();
    (0..usize::from(m))
        .map(|i| {
            if row[i / 8] >> (i % 8) & 1 == 1 {
                '1'
            } else {
                '0'
            }
        })
        .collect()
}

fn rows(m: u16, count: u32, version: PackageVersion) -> Vec<String> {
    (1..=count).map(|n| row_string(n, m, version)).collect()
}

#[test]
fn parity_rows_m10_v1_and_v2() {
    let v1 = [
        "0010010000",
        "1010110001",
        "0101011100",
        "1110100000",
        "0001010110",
        "0101110000",
        "0000101110",
        "0000101011",
        "0100110011",
        "0000100011",
    ];
    let v2 = [
        "0111010001",
        "1010110001",
        "0101011100",
        "1110100001",
        "0001110110",
        "0101110100",
        "0001101110",
        "0000101111",
        "0100110011",
        "0001101011",
    ];
    assert_eq!(rows(10, 10, V1), v1);
    assert_eq!(rows(10, 10, V2), v2);
}

#[test]
fn parity_rows_power_of_two_m8() {
    assert_eq!(
        rows(8, 4, V1),
        ["11001010", "10001001", "11010010", "00101100"]
    );
    assert_eq!(
        rows(8, 4, V2),
        ["11001010", "10011001", "11010010", "00101110"]
    );
}

#[test]
fn parity_rows_small_m_are_equal_in_both_versions() {
    let expected: [(u16, [&str; 6]); 4] = [
        (5, ["10100", "10100", "01010", "01100", "10010", "01010"]),
        (4, ["1010", "1010", "0101", "0110", "1001", "0101"]),
        (3, ["010", "100", "100", "010", "010", "100"]),
        (2, ["01", "10", "10", "01", "01", "10"]),
    ];
    for (m, want) in expected {
        assert_eq!(rows(m, 6, V1), want, "v1 M={m}");
        assert_eq!(rows(m, 6, V2), want, "v2 M={m}");
    }
    assert_eq!(rows(1, 6, V1), vec!["0"; 6]);
}

const CODED_V1: [&str; 10] = [
    "262622222e2e22222626",
    "5455565758596a6b7c7d",
    "5c5d6e6f101102030405",
    "363632323e3e22223636",
    "3a3a0e0e0a0a06060a0a",
    "0e0e3232363622223e3e",
    "02020e0e727276766262",
    "1e1e1a1a66665a5a4e4e",
    "1a1b1c1d1e1f30312223",
    "22232425262718190a0b",
];
const CODED_V2: [&str; 10] = [
    "686952535c5d76777071",
    "5455565758596a6b7c7d",
    "5c5d6e6f101102030405",
    "6c6d6e6f606142435455",
    "12132425262728293a3b",
    "48497a7b7c7d6e6f7071",
    "1c1d2e2f505152534445",
    "585952532c2d16170001",
    "1a1b1c1d1e1f30312223",
    "00013a3b44457e7f6869",
];

#[test]
fn full_encode_of_100_bytes_matches_the_lrwn_vectors() {
    let block: Vec<u8> = (0u8..100).collect();
    for (version, expected) in [(V1, CODED_V1), (V2, CODED_V2)] {
        let encoder = FragmentEncoder::new(&block, 10, version).unwrap();
        assert_eq!(encoder.nb_frag(), 10);
        assert_eq!(encoder.padding(), 0);
        let mut out = [0u8; 10];
        for n in 1..=10u32 {
            encoder.fragment(n, &mut out).unwrap();
            assert_eq!(
                out.as_slice(),
                &block[(n as usize - 1) * 10..n as usize * 10]
            );
        }
        for (i, want) in expected.iter().enumerate() {
            encoder.fragment(11 + i as u32, &mut out).unwrap();
            assert_eq!(hex::encode(out), *want, "{version:?} N={}", 11 + i);
        }
    }
}

/// Runs a decode, returning each fragment's outcome and the final block region.
fn decode(
    block: &[u8],
    frag_size: u16,
    version: PackageVersion,
    max_lost: u16,
    order: &[u16],
) -> (Vec<FragmentOutcome>, CheckedFlash) {
    let encoder = FragmentEncoder::new(block, usize::from(frag_size), version).unwrap();
    let config = DecoderConfig {
        nb_frag: encoder.nb_frag(),
        frag_size,
        max_lost,
        version,
    };
    let mut flash = CheckedFlash::erased(block.len().next_multiple_of(8) + 64, 8);
    let mut log = CheckedFlash::erased(4096, 8);
    let sizing = Decoder::<&mut CheckedFlash, &mut CheckedFlash>::sizing(&config, 8).unwrap();
    let mut workspace = vec![0u8; sizing.workspace_bytes];
    let mut decoder = Decoder::new(config, &mut flash, &mut log, &mut workspace).unwrap();
    let mut outcomes = Vec::new();
    let mut fragment = vec![0u8; usize::from(frag_size)];
    for &n in order {
        encoder.fragment(u32::from(n), &mut fragment).unwrap();
        outcomes.push(decoder.push(n, &fragment).unwrap());
    }
    (outcomes, flash)
}

#[test]
fn losing_2_5_9_completes_at_n15_in_both_versions() {
    let block: Vec<u8> = (0u8..100).collect();
    let order: Vec<u16> = (1..=20).filter(|n| ![2, 5, 9].contains(n)).collect();
    for version in [V1, V2] {
        let (outcomes, flash) = decode(&block, 10, version, 10, &order);
        let completed_at = outcomes
            .iter()
            .position(|o| *o == FragmentOutcome::Completed)
            .unwrap();
        assert_eq!(order[completed_at], 15, "{version:?}");
        assert_eq!(completed_at + 1, 12, "12 fragments received");
        assert!(outcomes[completed_at + 1..]
            .iter()
            .all(|o| *o == FragmentOutcome::AlreadyComplete));
        assert_eq!(&flash.bytes[..100], block.as_slice());
        assert!(flash.all_programmed(0..100));
    }
}

#[test]
fn worked_example_m4_fragsize_2() {
    // Block 1122 3344 5566 7788; rows n=1..4 are 1010 1010 0101 0110 in both versions.
    let block = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    let encoder = FragmentEncoder::new(&block, 2, V1).unwrap();
    let mut coded = Vec::new();
    for n in 5..=8 {
        let mut out = [0u8; 2];
        encoder.fragment(n, &mut out).unwrap();
        coded.push(hex::encode(out));
    }
    assert_eq!(coded, ["4444", "4444", "44cc", "6622"]);

    use FragmentOutcome::*;
    for version in [V1, V2] {
        let (outcomes, flash) = decode(&block, 2, version, 4, &[2, 4, 5, 6, 7, 8]);
        // Rank 1, 2, 3, 3, 3, 4 in the reference's counting.
        assert_eq!(
            outcomes,
            [
                Stored,
                Stored,
                Accepted,
                NoNewInformation,
                NoNewInformation,
                Completed
            ]
        );
        assert_eq!(&flash.bytes[..8], &block);
        assert!(flash.all_programmed(0..8));
    }
}
