//! Decoding speed of the TS004 FEC decoder on a realistic session: M = 2151 fragments of
//! 240 bytes (a 516 KB block), 10 % of all fragments lost, coded fragments sent in order
//! after the uncoded ones until the block completes.
//!
//! Run: `cargo bench -p lorawan-fuota --bench fec_decode`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::fec::decoder::DecoderConfig;
use lorawan_fuota::fec::{Decoder, FragmentEncoder, SliceFlash};

const NB_FRAG: usize = 2151;
const FRAG_SIZE: usize = 240;
const MAX_LOST: u16 = 330;
const LOSS_PERCENT: u64 = 10;

/// The fragments a device receives: each N kept with probability 90 %, from a fixed
/// pseudo-random sequence so every run decodes the same session.
fn received_fragments(version: PackageVersion) -> (Vec<u8>, Vec<(u16, Vec<u8>)>) {
    let block: Vec<u8> = (0..NB_FRAG * FRAG_SIZE)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let encoder = FragmentEncoder::new(&block, FRAG_SIZE, version).expect("valid block");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut received = Vec::new();
    for n in 1..=(NB_FRAG as u32 + NB_FRAG as u32 / 4) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if state % 100 < LOSS_PERCENT {
            continue;
        }
        let mut fragment = vec![0u8; FRAG_SIZE];
        encoder.fragment(n, &mut fragment).expect("n in range");
        received.push((n as u16, fragment));
    }
    (block, received)
}

fn decode_session(c: &mut Criterion) {
    let mut group = c.benchmark_group("fec_decode");
    group.sample_size(10);
    group.throughput(Throughput::Bytes((NB_FRAG * FRAG_SIZE) as u64));
    for version in [PackageVersion::V1, PackageVersion::V2] {
        let (block, received) = received_fragments(version);
        let config = DecoderConfig {
            nb_frag: NB_FRAG as u16,
            frag_size: FRAG_SIZE as u16,
            max_lost: MAX_LOST,
            version,
        };
        let sizing = Decoder::<SliceFlash, SliceFlash>::sizing(&config, 8).expect("valid session");
        group.bench_function(format!("M2151_S240_loss10_{version:?}"), |b| {
            b.iter_batched(
                || {
                    (
                        vec![0xFFu8; NB_FRAG * FRAG_SIZE],
                        vec![0xFFu8; sizing.log_reserved_bytes + 64 * 1024],
                        vec![0u8; sizing.workspace_bytes],
                    )
                },
                |(mut slot, mut log, mut workspace)| {
                    let mut decoder = Decoder::new(
                        config,
                        SliceFlash::new(&mut slot, 8),
                        SliceFlash::new(&mut log, 8),
                        &mut workspace,
                    )
                    .expect("sized");
                    for (n, fragment) in &received {
                        decoder.push(*n, fragment).expect("valid fragment");
                        if decoder.is_complete() {
                            break;
                        }
                    }
                    assert!(decoder.is_complete(), "session must complete");
                    assert!(slot == block, "block rebuilt");
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, decode_session);
criterion_main!(benches);
