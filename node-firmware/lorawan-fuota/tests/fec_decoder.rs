//! The FEC decoder as a device uses it: random losses, reordering, duplicates, every
//! byte of the block programmed exactly once, against an independent rank computation;
//! and each bounds problem as a clean error.

mod fec_support;

use fec_support::{pattern, rank_of, CheckedFlash, CheckedFlashError};
use lorawan_fuota::codec::PackageVersion::{self, V1, V2};
use lorawan_fuota::fec::decoder::{semtech_reference_ram, DecoderConfig, DecoderStatus};
use lorawan_fuota::fec::{Decoder, DecoderError, FragmentEncoder, FragmentOutcome};
use proptest::prelude::*;

type TestDecoder<'a, 'w> = Decoder<'w, &'a mut CheckedFlash, &'a mut CheckedFlash>;

struct Run {
    outcomes: Vec<Result<FragmentOutcome, DecoderError<CheckedFlashError>>>,
    status: DecoderStatus,
    block: CheckedFlash,
    log: CheckedFlash,
}

fn run(
    data: &[u8],
    frag_size: u16,
    version: PackageVersion,
    max_lost: u16,
    log_bytes: usize,
    order: &[u16],
) -> Run {
    let encoder = FragmentEncoder::new(data, usize::from(frag_size), version).unwrap();
    let config = DecoderConfig {
        nb_frag: encoder.nb_frag(),
        frag_size,
        max_lost,
        version,
    };
    let block_bytes = usize::from(encoder.nb_frag()) * usize::from(frag_size);
    let mut block = CheckedFlash::erased(block_bytes.next_multiple_of(8), 8);
    let mut log = CheckedFlash::erased(log_bytes, 8);
    let sizing = TestDecoder::sizing(&config, 8).unwrap();
    let mut workspace = vec![0u8; sizing.workspace_bytes];
    let mut decoder = Decoder::new(config, &mut block, &mut log, &mut workspace).unwrap();
    let mut fragment = vec![0u8; usize::from(frag_size)];
    let outcomes = order
        .iter()
        .map(|&n| {
            encoder.fragment(u32::from(n), &mut fragment).unwrap();
            decoder.push(n, &fragment)
        })
        .collect();
    let status = decoder.status();
    Run {
        outcomes,
        status,
        block,
        log,
    }
}

fn assert_block_written_once_and_correct(run: &Run, data: &[u8], frag_size: u16) {
    let m = data.len().div_ceil(usize::from(frag_size));
    let block_bytes = m * usize::from(frag_size);
    assert!(run
        .block
        .all_programmed(0..block_bytes.next_multiple_of(8).min(run.block.bytes.len())));
    assert_eq!(&run.block.bytes[..data.len()], data);
    assert!(
        run.block.bytes[data.len()..block_bytes]
            .iter()
            .all(|&b| b == 0),
        "padding"
    );
}

/// The order a lossy channel delivers: each N kept with probability 1 − loss, then a
/// shuffle of `window` neighbours and some duplicates.
fn delivery(total: u16, loss: f64, window: usize, duplicates: f64, seed: u64) -> Vec<u16> {
    let noise = pattern(usize::from(total) * 3 + 8, seed);
    let mut order: Vec<u16> = (1..=total)
        .filter(|&n| f64::from(noise[usize::from(n)]) / 256.0 >= loss)
        .collect();
    if window > 1 {
        for i in 0..order.len() {
            let j = (i + usize::from(noise[i % noise.len()]) % window).min(order.len() - 1);
            order.swap(i, j);
        }
    }
    let mut with_duplicates = Vec::new();
    for (i, &n) in order.iter().enumerate() {
        with_duplicates.push(n);
        if f64::from(noise[(i + 3) % noise.len()]) / 256.0 < duplicates {
            with_duplicates.push(n);
        }
    }
    with_duplicates
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// With room for every loss, the decoder completes exactly when the received rows
    /// have full rank, and then the block is right and written once.
    #[test]
    fn completes_exactly_at_full_rank(
        m in 1u16..120,
        frag_size in prop::sample::select(vec![1u16, 2, 5, 8, 10, 48, 50, 239]),
        v2 in any::<bool>(),
        loss in 0.0f64..0.6,
        redundancy in 0u16..80,
        window in 1usize..20,
        seed in any::<u64>(),
    ) {
        let version = if v2 { V2 } else { V1 };
        let data = pattern(usize::from(m) * usize::from(frag_size) - usize::from(frag_size) / 3, seed);
        let m = data.len().div_ceil(usize::from(frag_size)) as u16;
        let total = (m + redundancy).min(16383);
        let order = delivery(total, loss, window, 0.1, seed ^ 0x55);
        let result = run(&data, frag_size, version, m, 1 << 20, &order);
        let mut received = Vec::new();
        for (i, &n) in order.iter().enumerate() {
            received.push(n);
            let full_rank = rank_of(&received, m, version) == usize::from(m);
            let outcome = result.outcomes[i].as_ref().unwrap();
            let complete_now = matches!(outcome, FragmentOutcome::Completed | FragmentOutcome::AlreadyComplete);
            prop_assert_eq!(complete_now, full_rank, "after N={} ({} received)", n, i + 1);
        }
        prop_assert_eq!(result.status.complete, rank_of(&order, m, version) == usize::from(m));
        if result.status.complete {
            assert_block_written_once_and_correct(&result, &data, frag_size);
        } else {
            // Nothing claimed: missing fragments are still erased and never programmed.
            prop_assert!(result.status.missing > 0);
        }
    }

    /// In-order delivery (uncoded, then coded) with a decoder sized for L_max losses:
    /// complete iff full rank and the uncoded losses fit L_max.
    #[test]
    fn in_order_with_bounded_capacity(
        m in 8u16..200,
        frag_size in prop::sample::select(vec![8u16, 48, 50]),
        v2 in any::<bool>(),
        max_lost in 0u16..40,
        loss in 0.0f64..0.3,
        seed in any::<u64>(),
    ) {
        let version = if v2 { V2 } else { V1 };
        let data = pattern(usize::from(m) * usize::from(frag_size), seed);
        let total = (m + m / 2 + 10).min(16383);
        let order = delivery(total, loss, 1, 0.0, seed);
        let lost_uncoded = usize::from(m) - order.iter().filter(|&&n| n <= m).count();
        let log_bytes = 64 * 1024;
        let result = run(&data, frag_size, version, max_lost, log_bytes, &order);
        let expect = rank_of(&order, m, version) == usize::from(m) && lost_uncoded <= usize::from(max_lost);
        prop_assert_eq!(result.status.complete, expect, "lost {} of {}, L_max {}", lost_uncoded, m, max_lost);
        prop_assert!(result.outcomes.iter().all(|o| o.is_ok()));
        if expect {
            assert_block_written_once_and_correct(&result, &data, frag_size);
            prop_assert!(usize::from(result.status.slots_used) <= usize::from(max_lost));
        }
    }
}

#[test]
fn losses_at_the_end_of_the_uncoded_fragments_are_recovered() {
    let data = pattern(50 * 48, 7);
    for version in [V1, V2] {
        // The last five uncoded fragments never arrive; nothing follows them but coded.
        let order: Vec<u16> = (1..=45).chain(51..=70).collect();
        let result = run(&data, 48, version, 10, 4096, &order);
        assert!(result.status.complete, "{version:?}");
        assert_block_written_once_and_correct(&result, &data, 48);
    }
}

#[test]
fn coded_fragments_before_uncoded_ones_are_deferred_then_replayed() {
    // M = 60, L_max = 8: the coded fragments come first, when 60 columns are unknown.
    let data = pattern(60 * 50, 11);
    let mut order: Vec<u16> = (61..=90).collect();
    order.extend((1..=60).filter(|n| n % 13 != 0)); // 4 uncoded lost
    let result = run(&data, 50, V2, 8, 8192, &order);
    let deferred = result
        .outcomes
        .iter()
        .filter(|o| matches!(o, Ok(FragmentOutcome::Deferred)))
        .count();
    assert_eq!(deferred, 30, "every early coded fragment waits in the log");
    assert!(result.status.complete);
    assert_eq!(result.status.deferred, 0);
    assert_block_written_once_and_correct(&result, &data, 50);
    assert!(result.log.programmed_count() > 0);
}

#[test]
fn out_of_order_uncoded_fragments_spill_boundary_granules_to_the_log() {
    // FragSize 50 is not a multiple of 8. Odd fragments first leave a partial granule at
    // every boundary: far more than the RAM table (2·L_max + 2 = 6) holds.
    let data = pattern(100 * 50, 3);
    let order: Vec<u16> = (1..=100).step_by(2).chain((2..=100).step_by(2)).collect();
    let result = run(&data, 50, V1, 2, 16 * 1024, &order);
    assert!(result.outcomes.iter().all(|o| o.is_ok()));
    assert!(result.status.complete);
    assert!(result.status.log_used > 0, "spills went to the log");
    assert_block_written_once_and_correct(&result, &data, 50);
}

#[test]
fn a_full_log_refuses_the_fragment_without_writing_anything() {
    let data = pattern(100 * 50, 3);
    let config = DecoderConfig {
        nb_frag: 100,
        frag_size: 50,
        max_lost: 2,
        version: V1,
    };
    let mut block = CheckedFlash::erased(5000, 8);
    let sizing = TestDecoder::sizing(&config, 8).unwrap();
    // Exactly the pivot reservation: no room for spills.
    let mut log = CheckedFlash::erased(sizing.log_reserved_bytes, 8);
    let mut workspace = vec![0u8; sizing.workspace_bytes];
    let mut decoder = Decoder::new(config, &mut block, &mut log, &mut workspace).unwrap();
    let mut refused = None;
    for n in (1..=100u16).step_by(2) {
        let start = usize::from(n - 1) * 50;
        match decoder.push(n, &data[start..start + 50]) {
            Ok(_) => {}
            Err(e) => {
                refused = Some((n, e));
                break;
            }
        }
    }
    let (n, error) = refused.expect("the held-granule table overflows");
    assert_eq!(error, DecoderError::LogFull);
    let status = decoder.status();
    let start = usize::from(n - 1) * 50;
    assert!(block.programmed[start..start + 50].iter().all(|&p| !p));
    assert_eq!(status.missing, 100 - (n - 1) / 2);
}

#[test]
fn bounds_problems_are_clean_errors() {
    let config = DecoderConfig {
        nb_frag: 10,
        frag_size: 8,
        max_lost: 4,
        version: V1,
    };
    let sizing = TestDecoder::sizing(&config, 8).unwrap();
    let mut block = CheckedFlash::erased(80, 8);
    let mut log = CheckedFlash::erased(1024, 8);
    let mut workspace = vec![0u8; sizing.workspace_bytes];
    let mut decoder = Decoder::new(config, &mut block, &mut log, &mut workspace).unwrap();
    assert_eq!(
        decoder.push(0, &[0; 8]),
        Err(DecoderError::FragmentIndexOutOfRange { n: 0 })
    );
    assert_eq!(
        decoder.push(16384, &[0; 8]),
        Err(DecoderError::FragmentIndexOutOfRange { n: 16384 })
    );
    assert_eq!(
        decoder.push(3, &[0; 9]),
        Err(DecoderError::WrongFragmentLength {
            expected: 8,
            actual: 9
        })
    );
    // The highest counter is fine (a coded fragment).
    assert!(decoder.push(16383, &[0; 8]).is_ok());

    let mut small = vec![0u8; sizing.workspace_bytes - 1];
    let mut block = CheckedFlash::erased(80, 8);
    let mut log = CheckedFlash::erased(1024, 8);
    assert!(matches!(
        Decoder::new(config, &mut block, &mut log, &mut small),
        Err(DecoderError::WorkspaceTooSmall { .. })
    ));
    let mut short_block = CheckedFlash::erased(72, 8);
    assert!(matches!(
        Decoder::new(config, &mut short_block, &mut log, &mut workspace),
        Err(DecoderError::BlockRegionTooSmall {
            needed: 80,
            available: 72
        })
    ));
    let mut short_log = CheckedFlash::erased(8, 8);
    assert!(matches!(
        Decoder::new(config, &mut block, &mut short_log, &mut workspace),
        Err(DecoderError::LogRegionTooSmall { .. })
    ));
    for (nb_frag, frag_size) in [(0u16, 8u16), (16384, 8), (10, 0), (10, 256)] {
        let bad = DecoderConfig {
            nb_frag,
            frag_size,
            ..config
        };
        assert!(matches!(
            TestDecoder::sizing(&bad, 8),
            Err(DecoderError::InvalidConfig { .. })
        ));
    }
    assert!(matches!(
        TestDecoder::sizing(&config, 16),
        Err(DecoderError::UnsupportedWriteGranule { granule: 16 })
    ));
}

#[test]
fn ram_meets_the_budget_against_the_semtech_reference() {
    let config = DecoderConfig {
        nb_frag: 2000,
        frag_size: 48,
        max_lost: 400,
        version: V2,
    };
    let sizing = TestDecoder::sizing(&config, 8).unwrap();
    let reference = semtech_reference_ram(2000, 400);
    // The budget: at most 60 % of the reference decoder's RAM.
    assert!(
        sizing.ram_bytes * 100 <= reference * 60,
        "{} bytes vs reference {}",
        sizing.ram_bytes,
        reference
    );
    assert_eq!(
        sizing.held_granule_capacity, 0,
        "48-byte fragments are granule aligned"
    );
    assert_eq!(sizing.log_reserved_bytes, 400 * (8 + 48));
}

#[test]
fn a_lossless_session_completes_on_the_last_uncoded_fragment_without_the_log() {
    let data = pattern(33 * 239, 5);
    let order: Vec<u16> = (1..=33).collect();
    let result = run(&data, 239, V2, 5, 8192, &order);
    assert_eq!(
        result.outcomes.last(),
        Some(&Ok(FragmentOutcome::Completed))
    );
    assert_eq!(result.log.programmed_count(), 0);
    assert_block_written_once_and_correct(&result, &data, 239);
}
