//! ChirpStack's `lrwn` FEC encoder as an oracle: our coded fragments equal its output
//! for v1 and v2, and our decoder rebuilds blocks from its fragments.

mod fec_support;

use fec_support::{rank_of, CheckedFlash};
use lorawan_fuota::codec::PackageVersion::{self, V1, V2};
use lorawan_fuota::fec::decoder::DecoderConfig;
use lorawan_fuota::fec::{Decoder, FragmentEncoder};
use proptest::prelude::*;

fn lrwn_encode(
    version: PackageVersion,
    block: &[u8],
    frag_size: usize,
    coded: usize,
) -> Vec<Vec<u8>> {
    match version {
        V1 => lrwn::applayer::fragmentation::v1::encode(block, frag_size, coded).unwrap(),
        V2 => lrwn::applayer::fragmentation::v2::encode(block, frag_size, coded).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn coded_fragments_equal_lrwn(
        m in 1usize..300,
        frag_size in 1usize..64,
        coded in 0usize..120,
        v2 in any::<bool>(),
        seed in any::<u8>(),
    ) {
        let version = if v2 { V2 } else { V1 };
        // lrwn wants a whole number of fragments.
        let block: Vec<u8> = (0..m * frag_size).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let theirs = lrwn_encode(version, &block, frag_size, coded);
        let encoder = FragmentEncoder::new(&block, frag_size, version).unwrap();
        prop_assert_eq!(theirs.len(), m + coded);
        let mut ours = vec![0u8; frag_size];
        for (i, fragment) in theirs.iter().enumerate() {
            encoder.fragment(i as u32 + 1, &mut ours).unwrap();
            prop_assert_eq!(&ours, fragment, "N={}", i + 1);
        }
    }

    #[test]
    fn decoder_rebuilds_blocks_from_lrwn_fragments(
        m in 2usize..150,
        frag_size in prop::sample::select(vec![8usize, 10, 48, 50]),
        v2 in any::<bool>(),
        lose_every in 3usize..10,
    ) {
        let version = if v2 { V2 } else { V1 };
        let block: Vec<u8> = (0..m * frag_size).map(|i| (i * 7 + 3) as u8).collect();
        let fragments = lrwn_encode(version, &block, frag_size, m);
        let config = DecoderConfig {
            nb_frag: m as u16,
            frag_size: frag_size as u16,
            max_lost: m as u16,
            version,
        };
        let mut flash = CheckedFlash::erased((m * frag_size).next_multiple_of(8), 8);
        let mut log = CheckedFlash::erased(1 << 20, 8);
        let sizing = Decoder::<&mut CheckedFlash, &mut CheckedFlash>::sizing(&config, 8).unwrap();
        let mut workspace = vec![0u8; sizing.workspace_bytes];
        let mut decoder = Decoder::new(config, &mut flash, &mut log, &mut workspace).unwrap();
        let mut received = Vec::new();
        for (i, fragment) in fragments.iter().enumerate() {
            if i % lose_every != 0 {
                decoder.push(i as u16 + 1, fragment).unwrap();
                received.push(i as u16 + 1);
            }
        }
        let complete = decoder.is_complete();
        prop_assert_eq!(complete, rank_of(&received, m as u16, version) == m);
        if complete {
            prop_assert_eq!(&flash.bytes[..block.len()], block.as_slice());
        }
    }
}
