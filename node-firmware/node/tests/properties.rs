//! Property: whatever the fragment size, version, delivery order and loss, and wherever
//! a power cut falls, the node rebuilds exactly the block the agent encoded, programs no
//! granule twice and never erases the slot after setup — given enough coded fragments.

mod support;

use fuota_node::Instant;
use lorawan_fuota::codec::fragmentation::{Downlink, FragSessionSetup, SessionSetupV2};
use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::crypto::data_block_mic::{data_block_int_key, data_block_mic};
use lorawan_fuota::crypto::Key128;
use lorawan_fuota::fec::FragmentEncoder;
use proptest::prelude::*;
use support::{config, downlink, uplinks, Device, TestRng};

const T: Instant = Instant::from_secs(1);

fn run(frag_size: usize, v2: bool, seed: u64, block_len: usize, cut_at: Option<usize>) {
    let version = if v2 {
        PackageVersion::V2
    } else {
        PackageVersion::V1
    };
    let mut rng = TestRng(seed | 1);
    let block: Vec<u8> = (0..block_len).map(|_| rng.next_u32_byte()).collect();
    let encoder = FragmentEncoder::new(&block, frag_size, version).unwrap();
    let m = encoder.nb_frag();
    let descriptor = [1, 2, 3, 4];
    let setup = FragSessionSetup {
        frag_index: 0,
        mc_group_bit_mask: 0,
        nb_frag: m,
        frag_size: frag_size as u8,
        frag_algo: 0,
        block_ack_delay: 0,
        padding: encoder.padding() as u8,
        descriptor,
        v2: v2.then(|| SessionSetupV2 {
            ack_reception: false,
            session_cnt: 1,
            mic: data_block_mic(
                &data_block_int_key(&Key128::from_bytes(support::GEN_APP_KEY)),
                1,
                0,
                descriptor,
                &block,
            ),
        }),
    };
    let fragment = |n: u16| {
        let mut data = vec![0u8; frag_size];
        encoder.fragment(u32::from(n), &mut data).unwrap();
        downlink(&[Downlink::DataFragment {
            frag_index: 0,
            fragment_number: n,
            data: &data,
        }])
    };
    // Shuffled uncoded and coded fragments, 10 % lost.
    let coded = (m / 4).max(10);
    let mut schedule: Vec<u16> = (1..=m + coded).collect();
    rng.shuffle(&mut schedule);
    schedule.retain(|_| rng.below(10) != 0);

    let mut device = Device::new(config(version), 8 * 1024, 16 * 1024);
    let mut workspace = vec![0u8; 8192];
    let (mut node, _) = device.boot(&mut workspace, T);
    uplinks(&mut node, T);
    node.handle_downlink(T, 201, &downlink(&[Downlink::FragSessionSetupReq(setup)]));
    let erases = device.slot.erase_count();
    let cut_at = cut_at.map(|c| c % schedule.len().max(1));
    for (index, &n) in schedule.iter().enumerate() {
        if Some(index) == cut_at {
            drop(node);
            node = device.boot(&mut workspace, T).0;
        }
        node.handle_downlink(T, 201, &fragment(n));
    }
    // More coded fragments until complete (bounded), as an agent's follow-up would.
    let mut extra = m + coded + 1;
    while !node.fragmentation_progress().unwrap().complete && extra < m * 3 + 40 {
        node.handle_downlink(T, 201, &fragment(extra));
        extra += 1;
    }
    let progress = node.fragmentation_progress().unwrap();
    assert!(progress.complete, "{progress:?}");
    assert!(!progress.memory_error);
    assert_eq!(node.stats().fragmentation.flash_errors, 0);
    if v2 {
        assert_eq!(progress.mic, Some(fuota_node::MicCheck::Passed));
    }
    assert_eq!(device.slot.read_bytes(0..block_len), block);
    assert_eq!(device.slot.erase_count(), erases);
}

trait ByteSource {
    fn next_u32_byte(&mut self) -> u8;
}
impl ByteSource for TestRng {
    fn next_u32_byte(&mut self) -> u8 {
        use fuota_node::RandomSource;
        (self.next_u32() >> 24) as u8
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_order_loss_and_power_cut_rebuilds_the_block(
        frag_size in prop::sample::select(vec![48usize, 50, 232, 13]),
        v2 in any::<bool>(),
        seed in any::<u64>(),
        block_len in 1500usize..4000,
        cut_at in prop::option::of(any::<usize>()),
    ) {
        run(frag_size, v2, seed, block_len, cut_at);
    }
}
