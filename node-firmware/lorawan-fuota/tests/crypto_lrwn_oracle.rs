//! ChirpStack's `lrwn` as an independent oracle for the multicast key hierarchy (TS005 v1
//! and v2 modules) and the TS004 v2 DataBlockIntKey / MIC, over random inputs; plus the
//! incremental MIC against the one-shot one for random chunkings.

use lorawan_fuota::crypto::data_block_mic::{data_block_int_key, data_block_mic, DataBlockMic};
use lorawan_fuota::crypto::multicast::{
    decrypt_mc_key_from_wire, encrypt_mc_key_for_wire, mc_app_s_key, mc_ke_key, mc_nwk_s_key,
    mc_root_key, mc_root_key_from_app_key, mc_root_key_from_gen_app_key, LorawanVersion,
};
use lorawan_fuota::crypto::Key128;
use lrwn::applayer::fragmentation::v2 as lrwn_frag_v2;
use lrwn::applayer::multicastsetup::{v1 as lrwn_mc_v1, v2 as lrwn_mc_v2};
use lrwn::{AES128Key, DevAddr};
use proptest::prelude::*;

fn lrwn_key(bytes: [u8; 16]) -> AES128Key {
    AES128Key::from_bytes(bytes)
}

/// McAddr as an lrwn `DevAddr` with the same numeric value.
fn lrwn_dev_addr(mc_addr: u32) -> DevAddr {
    DevAddr::from_be_bytes(mc_addr.to_be_bytes())
}

/// Splits `data` at the given cut points (taken modulo its length, sorted).
fn chunks_at(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points
        .windows(2)
        .map(|w| data[w[0]..w[1]].to_vec())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mc_root_keys_match_lrwn(root in any::<[u8; 16]>()) {
        let ours_10 = mc_root_key_from_gen_app_key(&Key128::from_bytes(root));
        let ours_11 = mc_root_key_from_app_key(&Key128::from_bytes(root));
        prop_assert_eq!(ours_10, mc_root_key(LorawanVersion::V1_0, &Key128::from_bytes(root)));
        prop_assert_eq!(ours_11, mc_root_key(LorawanVersion::V1_1, &Key128::from_bytes(root)));

        let theirs = [
            lrwn_mc_v1::get_mc_root_key_for_gen_app_key(lrwn_key(root)).unwrap().to_bytes(),
            lrwn_mc_v2::get_mc_root_key_for_gen_app_key(lrwn_key(root)).unwrap().to_bytes(),
        ];
        prop_assert_eq!([*ours_10.as_bytes(); 2], theirs);
        let theirs = [
            lrwn_mc_v1::get_mc_root_key_for_app_key(lrwn_key(root)).unwrap().to_bytes(),
            lrwn_mc_v2::get_mc_root_key_for_app_key(lrwn_key(root)).unwrap().to_bytes(),
        ];
        prop_assert_eq!([*ours_11.as_bytes(); 2], theirs);
    }

    #[test]
    fn mc_ke_key_and_wire_encryption_match_lrwn(
        mc_root in any::<[u8; 16]>(),
        mc_key in any::<[u8; 16]>(),
    ) {
        let kek = mc_ke_key(&Key128::from_bytes(mc_root));
        prop_assert_eq!(kek.as_bytes(), &lrwn_mc_v1::get_mc_ke_key(lrwn_key(mc_root)).unwrap().to_bytes());
        prop_assert_eq!(kek.as_bytes(), &lrwn_mc_v2::get_mc_ke_key(lrwn_key(mc_root)).unwrap().to_bytes());

        let wire = encrypt_mc_key_for_wire(&kek, &Key128::from_bytes(mc_key));
        let kek_lrwn = lrwn_key(*kek.as_bytes());
        prop_assert_eq!(wire, lrwn_mc_v1::encrypt_mc_key(kek_lrwn, lrwn_key(mc_key)));
        prop_assert_eq!(wire, lrwn_mc_v2::encrypt_mc_key(kek_lrwn, lrwn_key(mc_key)));
        // lrwn has no device-side function; ours must invert the server side.
        prop_assert_eq!(decrypt_mc_key_from_wire(&kek, &wire), Key128::from_bytes(mc_key));
    }

    #[test]
    fn mc_session_keys_match_lrwn(mc_key in any::<[u8; 16]>(), mc_addr in any::<u32>()) {
        let ours_app = mc_app_s_key(&Key128::from_bytes(mc_key), mc_addr);
        let ours_nwk = mc_nwk_s_key(&Key128::from_bytes(mc_key), mc_addr);
        let addr = lrwn_dev_addr(mc_addr);
        prop_assert_eq!(ours_app.as_bytes(), &lrwn_mc_v1::get_mc_app_s_key(lrwn_key(mc_key), addr).unwrap().to_bytes());
        prop_assert_eq!(ours_nwk.as_bytes(), &lrwn_mc_v1::get_mc_net_s_key(lrwn_key(mc_key), addr).unwrap().to_bytes());
        prop_assert_eq!(ours_app.as_bytes(), &lrwn_mc_v2::get_mc_app_s_key(lrwn_key(mc_key), addr).unwrap().to_bytes());
        prop_assert_eq!(ours_nwk.as_bytes(), &lrwn_mc_v2::get_mc_net_s_key(lrwn_key(mc_key), addr).unwrap().to_bytes());
    }

    #[test]
    fn data_block_int_key_matches_lrwn(root in any::<[u8; 16]>()) {
        prop_assert_eq!(
            *data_block_int_key(&Key128::from_bytes(root)).as_bytes(),
            lrwn_frag_v2::get_data_block_int_key(lrwn_key(root)).unwrap().to_bytes()
        );
    }

    #[test]
    fn data_block_mic_matches_lrwn_for_any_chunking(
        int_key in any::<[u8; 16]>(),
        session_cnt in any::<u16>(),
        frag_index in 0u8..4,
        descriptor in any::<[u8; 4]>(),
        data in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let key = Key128::from_bytes(int_key);
        let theirs = lrwn_frag_v2::calculate_mic(
            lrwn_key(int_key), session_cnt, frag_index, descriptor, &data,
        ).unwrap();
        let one_shot = data_block_mic(&key, session_cnt, frag_index, descriptor, &data);
        prop_assert_eq!(one_shot, theirs);

        let mut incremental =
            DataBlockMic::new(&key, session_cnt, frag_index, descriptor, data.len() as u32);
        for chunk in chunks_at(&data, &cuts) {
            incremental.update(&chunk);
        }
        prop_assert_eq!(incremental.bytes_fed(), data.len() as u64);
        prop_assert!(incremental.clone().verify(&theirs));
        prop_assert_eq!(incremental.finalize(), Some(theirs));
    }
}
