//! Byte-exact vectors for the TS005 multicast key hierarchy and the TS004 v2 data-block
//! MIC, from `shared/reference/test-vectors.md` §3.1, §3.2 and §4.5, plus the pitfalls of
//! applayer.md §7 items 6, 11 and 12.

use lorawan_fuota::crypto::data_block_mic::{
    b0_block, data_block_int_key, data_block_mic, DataBlockMic,
};
use lorawan_fuota::crypto::multicast::{
    decrypt_mc_key_from_wire, encrypt_mc_key_for_wire, mc_app_s_key, mc_ke_key, mc_nwk_s_key,
    mc_root_key, mc_root_key_from_app_key, mc_root_key_from_gen_app_key, LorawanVersion,
};
use lorawan_fuota::crypto::Key128;

fn bytes16(hex_str: &str) -> [u8; 16] {
    let v = hex::decode(hex_str.replace(' ', "")).expect("hex");
    v.try_into().expect("16 bytes")
}

fn key(hex_str: &str) -> Key128 {
    Key128::from_bytes(bytes16(hex_str))
}

fn hex_of(key: &Key128) -> String {
    hex::encode(key.as_bytes())
}

// ---------------------------------------------------------------------------------------
// §3.1 lrwn unit-test vectors
// ---------------------------------------------------------------------------------------

#[test]
fn s3_1_mc_root_key_from_gen_app_key() {
    let gen_app_key = key("03 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10");
    assert_eq!(
        hex_of(&mc_root_key_from_gen_app_key(&gen_app_key)),
        "55344e82570eaec8bf03b99962d1f445"
    );
    assert_eq!(
        hex_of(&mc_root_key(LorawanVersion::V1_0, &gen_app_key)),
        "55344e82570eaec8bf03b99962d1f445"
    );
}

#[test]
fn s3_1_mc_root_key_from_app_key() {
    let app_key = key("02 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10");
    assert_eq!(
        hex_of(&mc_root_key_from_app_key(&app_key)),
        "264fd859583fcc670241ac071cc9f5bb"
    );
    assert_eq!(
        hex_of(&mc_root_key(LorawanVersion::V1_1, &app_key)),
        "264fd859583fcc670241ac071cc9f5bb"
    );
}

#[test]
fn s3_1_mc_ke_key() {
    let mc_root_key = key("04 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10");
    assert_eq!(
        hex_of(&mc_ke_key(&mc_root_key)),
        "9083bebf704257883160dbfcde33ad71"
    );
}

#[test]
fn s3_1_mc_session_keys() {
    let mc_key = key("01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10");
    assert_eq!(
        hex_of(&mc_app_s_key(&mc_key, 0x0102_0304)),
        "95cb4518ee375606735bbacbdce837fa"
    );
    assert_eq!(
        hex_of(&mc_nwk_s_key(&mc_key, 0x0102_0304)),
        "c3f6b388bad6c000b23291ad52c11c7b"
    );
}

#[test]
fn s3_1_mc_key_wire_encryption_both_ways() {
    let kek = Key128::from_bytes([0x01; 16]);
    let mc_key = Key128::from_bytes([0x02; 16]);
    let wire = encrypt_mc_key_for_wire(&kek, &mc_key);
    assert_eq!(hex::encode(wire), "3437d6e231d702419b51b4947271b611");
    assert_eq!(
        hex_of(&decrypt_mc_key_from_wire(&kek, &wire)),
        "02020202020202020202020202020202"
    );
}

// ---------------------------------------------------------------------------------------
// §3.2 end-to-end chain, both LoRaWAN versions
// ---------------------------------------------------------------------------------------

const E2E_ROOT: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const E2E_MC_KEY: &str = "0f0e0d0c0b0a09080706050403020100";
const E2E_MC_ADDR: u32 = 0x2601_1234;

/// McGroupSetupReq (CID 0x02 included), built by hand: McGroupIDHeader, McAddr LE,
/// McKey_encrypted, minMcFCnt LE, maxMcFCnt LE.
fn mc_group_setup_req(group_id: u8, mc_addr: u32, mc_key_encrypted: [u8; 16]) -> Vec<u8> {
    let mut frame = vec![0x02, group_id & 0x03];
    frame.extend_from_slice(&mc_addr.to_le_bytes());
    frame.extend_from_slice(&mc_key_encrypted);
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&u32::MAX.to_le_bytes());
    frame
}

struct ChainVector {
    version: LorawanVersion,
    mc_root_key: &'static str,
    mc_ke_key: &'static str,
    mc_key_encrypted: &'static str,
    setup_req: &'static str,
}

const CHAIN: [ChainVector; 2] = [
    ChainVector {
        version: LorawanVersion::V1_0,
        mc_root_key: "7df76b0c1ab899b33e42f047b91b546f",
        mc_ke_key: "8cb8665e0c0e0b645b2ed9e48a19277c",
        mc_key_encrypted: "54d3d7a0b563b5dd91650ec5b8554af7",
        setup_req: "02 00 34120126 54d3d7a0b563b5dd91650ec5b8554af7 00000000 ffffffff",
    },
    ChainVector {
        version: LorawanVersion::V1_1,
        mc_root_key: "5d1539a60f06115c5b0b01f03e17afd6",
        mc_ke_key: "3592a5d88f2f38da211c1bb5649baf3f",
        mc_key_encrypted: "feb0de53397546349b0284d13dbcaa54",
        setup_req: "02 00 34120126 feb0de53397546349b0284d13dbcaa54 00000000 ffffffff",
    },
];

#[test]
fn s3_2_end_to_end_chain_both_versions() {
    let root = key(E2E_ROOT);
    let mc_key = key(E2E_MC_KEY);
    for v in &CHAIN {
        // Server side.
        let root_key = mc_root_key(v.version, &root);
        assert_eq!(hex_of(&root_key), v.mc_root_key, "{:?}", v.version);
        let kek = mc_ke_key(&root_key);
        assert_eq!(hex_of(&kek), v.mc_ke_key, "{:?}", v.version);
        let wire = encrypt_mc_key_for_wire(&kek, &mc_key);
        assert_eq!(hex::encode(wire), v.mc_key_encrypted, "{:?}", v.version);

        let frame = mc_group_setup_req(0, E2E_MC_ADDR, wire);
        assert_eq!(frame.len(), 1 + 29);
        assert_eq!(
            hex::encode(&frame),
            v.setup_req.replace(' ', ""),
            "{:?}",
            v.version
        );

        // Device side: parse the 29 payload bytes by hand and recover the keys.
        let payload = &frame[1..];
        let mc_addr = u32::from_le_bytes(payload[1..5].try_into().unwrap());
        assert_eq!(mc_addr, E2E_MC_ADDR);
        let received: [u8; 16] = payload[5..21].try_into().unwrap();
        let device_kek = mc_ke_key(&mc_root_key(v.version, &root));
        let recovered = decrypt_mc_key_from_wire(&device_kek, &received);
        assert_eq!(recovered, mc_key);
        assert_eq!(
            hex_of(&mc_app_s_key(&recovered, mc_addr)),
            "55406d882f633e62f3d3b2672b00e78f"
        );
        assert_eq!(
            hex_of(&mc_nwk_s_key(&recovered, mc_addr)),
            "285b09a05c308baf3fc3e3fa02178853"
        );
    }
}

#[test]
fn s3_2_session_keys_depend_only_on_mc_key_and_mc_addr() {
    let mc_key = key(E2E_MC_KEY);
    assert_eq!(
        hex_of(&mc_app_s_key(&mc_key, E2E_MC_ADDR)),
        "55406d882f633e62f3d3b2672b00e78f"
    );
    assert_eq!(
        hex_of(&mc_nwk_s_key(&mc_key, E2E_MC_ADDR)),
        "285b09a05c308baf3fc3e3fa02178853"
    );
}

// ---------------------------------------------------------------------------------------
// Pitfalls (applayer.md §7)
// ---------------------------------------------------------------------------------------

/// §7 item 6: 1.0.x (GenAppKey, 0x00) and 1.1 (AppKey, 0x20) give different root keys, and
/// a server using the wrong scheme sends a McKey the device decrypts to garbage.
#[test]
fn pitfall_6_lorawan_1_0_and_1_1_root_keys_differ() {
    let root = key(E2E_ROOT);
    let r10 = mc_root_key(LorawanVersion::V1_0, &root);
    let r11 = mc_root_key(LorawanVersion::V1_1, &root);
    assert_ne!(r10, r11);

    let mc_key = key(E2E_MC_KEY);
    let wire_for_1_1 = encrypt_mc_key_for_wire(&mc_ke_key(&r11), &mc_key);
    let device_1_0 = decrypt_mc_key_from_wire(&mc_ke_key(&r10), &wire_for_1_1);
    assert_ne!(device_1_0, mc_key);
}

/// §7 item 11: McAddr is written little-endian into the derivation block; big-endian gives
/// different session keys.
#[test]
fn pitfall_11_mc_addr_big_endian_gives_different_keys() {
    let mc_key = key(E2E_MC_KEY);
    let swapped = E2E_MC_ADDR.swap_bytes(); // what writing 0x26011234 big-endian amounts to
    assert_ne!(
        hex_of(&mc_app_s_key(&mc_key, swapped)),
        "55406d882f633e62f3d3b2672b00e78f"
    );
    assert_ne!(
        hex_of(&mc_nwk_s_key(&mc_key, swapped)),
        "285b09a05c308baf3fc3e3fa02178853"
    );
    // Same with the lrwn vector: McAddr 0x01020304 → block 01 04 03 02 01 00...
    let lrwn_mc_key = key("0102030405060708090a0b0c0d0e0f10");
    assert_ne!(
        hex_of(&mc_app_s_key(&lrwn_mc_key, 0x0403_0201)),
        "95cb4518ee375606735bbacbdce837fa"
    );
}

// ---------------------------------------------------------------------------------------
// §4.5 TS004 v2 DataBlockIntKey and MIC
// ---------------------------------------------------------------------------------------

#[test]
fn s4_5_data_block_int_key() {
    assert_eq!(
        hex_of(&data_block_int_key(&key(E2E_ROOT))),
        "7ac47c65fe259bb654bd263519f89c8e"
    );
}

struct MicVector {
    session_cnt: u16,
    frag_index: u8,
    descriptor: [u8; 4],
    block: Vec<u8>,
    b0: &'static str,
    mic: [u8; 4],
}

fn mic_vectors() -> [MicVector; 2] {
    [
        MicVector {
            session_cnt: 1,
            frag_index: 0,
            descriptor: [0x01, 0x02, 0x03, 0x04],
            block: (0u8..100).collect(),
            b0: "49 0100 00 01020304 00000000 64000000",
            mic: [0x85, 0x38, 0xf3, 0x0c],
        },
        MicVector {
            session_cnt: 0x1234,
            frag_index: 2,
            descriptor: [0xa1, 0xb2, 0xc3, 0xd4],
            block: b"hello fuota".to_vec(),
            b0: "49 3412 02 a1b2c3d4 00000000 0b000000",
            mic: [0x86, 0x93, 0x5c, 0x99],
        },
    ]
}

#[test]
fn s4_5_b0_and_mic_both_rows() {
    let int_key = data_block_int_key(&key(E2E_ROOT));
    for v in mic_vectors() {
        let len = v.block.len() as u32;
        assert_eq!(
            hex::encode(b0_block(v.session_cnt, v.frag_index, v.descriptor, len)),
            v.b0.replace(' ', "")
        );
        assert_eq!(
            data_block_mic(
                &int_key,
                v.session_cnt,
                v.frag_index,
                v.descriptor,
                &v.block
            ),
            v.mic
        );

        let mut incremental =
            DataBlockMic::new(&int_key, v.session_cnt, v.frag_index, v.descriptor, len);
        for chunk in v.block.chunks(7) {
            incremental.update(chunk);
        }
        assert!(incremental.clone().verify(&v.mic));
        assert_eq!(incremental.finalize(), Some(v.mic));
    }
}

/// §7 item 12: the MIC covers the unpadded block; over the padded NbFrag × FragSize bytes
/// it is different. Row 2 of §4.5 as 2 fragments of 8 bytes (Padding = 5).
#[test]
fn pitfall_12_mic_over_padded_block_differs() {
    let int_key = data_block_int_key(&key(E2E_ROOT));
    let descriptor = [0xa1, 0xb2, 0xc3, 0xd4];
    let unpadded = b"hello fuota".to_vec();
    let mut padded = unpadded.clone();
    padded.resize(16, 0);

    let good = data_block_mic(&int_key, 0x1234, 2, descriptor, &unpadded);
    assert_eq!(good, [0x86, 0x93, 0x5c, 0x99]);
    assert_ne!(
        data_block_mic(&int_key, 0x1234, 2, descriptor, &padded),
        good
    );

    // A device that announces the unpadded length but then feeds the padding too is
    // caught by the length check rather than producing a MIC.
    let mut device = DataBlockMic::new(&int_key, 0x1234, 2, descriptor, 11);
    device.update(&padded);
    assert_eq!(device.finalize(), None);
}
