//! Fuzzes `FuotaNode::handle_multicast_frame`: the device is in multicast group 0
//! (set up by McGroupSetupReq with a known McKey); the input is a sequence of events
//! (`[kind, length, bytes…]`): a raw PHYPayload from the air, an authentic multicast
//! frame built with the group's keys (FPort and FRMPayload from the input, so the
//! fragmentation package sees arbitrary commands), a unicast TS004/TS005 downlink (to
//! set sessions up), or time passing. Nothing may panic; a raw frame is never accepted
//! unless it was built with the group's keys.
#![no_main]

#[path = "node_harness.rs"]
mod harness;

use fuota_node::{FuotaNode, Instant};
use harness::Service;
use libfuzzer_sys::fuzz_target;
use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::parser::FCtrl;
use lorawan_fuota::codec::encode_all;
use lorawan_fuota::codec::multicast_setup::Downlink as Ts005;
use lorawan_fuota::crypto::multicast::{
    encrypt_mc_key_for_wire, mc_app_s_key, mc_ke_key, mc_nwk_s_key, mc_root_key, LorawanVersion,
};
use lorawan_fuota::crypto::Key128;

const MC_ADDR: u32 = 0x2601_1234;
const MC_KEY: [u8; 16] = [0x5c; 16];

fn group_setup() -> Vec<u8> {
    let kek = mc_ke_key(&mc_root_key(
        LorawanVersion::V1_0,
        &Key128::from_bytes(harness::GEN_APP_KEY),
    ));
    let mut out = [0u8; 32];
    let len = encode_all(
        &[Ts005::McGroupSetupReq {
            mc_group_id: 0,
            mc_addr: MC_ADDR,
            mc_key_encrypted: encrypt_mc_key_for_wire(&kek, &Key128::from_bytes(MC_KEY)),
            min_mc_fcnt: 0,
            max_mc_fcnt: u32::MAX,
        }],
        &mut out,
    )
    .expect("encodable");
    out[..len].to_vec()
}

fn authentic_frame(fcnt: u32, fport: u8, payload: &[u8]) -> Option<Vec<u8>> {
    let key = Key128::from_bytes(MC_KEY);
    let nwk = *mc_nwk_s_key(&key, MC_ADDR).as_bytes();
    let app = *mc_app_s_key(&key, MC_ADDR).as_bytes();
    // lorawan 0.9's DataPayloadCreator panics (slice index) on an FRMPayload longer
    // than its 256-byte buffer allows instead of returning an error; LoRaWAN allows at
    // most 242 bytes anyway.
    if payload.len() > 242 {
        return None;
    }
    let mut creator = DataPayloadCreator::new();
    creator
        .set_confirmed(false)
        .set_uplink(false)
        .set_dev_addr(&MC_ADDR.to_le_bytes())
        .set_fctrl(&FCtrl::new(0, false))
        .set_fcnt(fcnt)
        .set_f_port(fport);
    creator
        .build(payload, &[], &NewSKey::from(nwk), &AppSKey::from(app))
        .ok()
        .map(|frame| frame.to_vec())
}

fuzz_target!(|input: &[u8]| {
    let mut workspace = vec![0u8; 4096];
    let mut parts = harness::fresh_parts();
    let mut rest = input;
    let mut now_ms = 1_000u64;
    let mut fcnt = 0u32;
    let mut first_start = true;
    'power: loop {
        let (mut node, _) = FuotaNode::start(parts, &mut workspace, Instant::from_millis(now_ms));
        if first_start {
            node.handle_downlink(Instant::from_millis(now_ms), 200, &group_setup());
            assert!(node.multicast_group(0).is_some(), "group set up");
            first_start = false;
        }
        loop {
            let [kind, len, tail @ ..] = rest else {
                return;
            };
            let len = usize::from(*len).min(tail.len());
            let (bytes, next) = tail.split_at(len);
            rest = next;
            let now = Instant::from_millis(now_ms);
            match kind % 4 {
                0 => {
                    // Frames not built with the group's keys never pass (a forged MIC
                    // passes with probability 2^-32 per try).
                    let accepted = node.handle_multicast_frame(now, bytes).is_ok();
                    assert!(
                        !accepted,
                        "a frame not built with the group's keys was accepted"
                    );
                }
                1 => {
                    fcnt = fcnt.wrapping_add(1 + u32::from(kind >> 2));
                    let (fport, payload) = match bytes {
                        [fport, payload @ ..] => (*fport, payload),
                        [] => (201, &[][..]),
                    };
                    let fport = if fport & 1 == 0 { 201 } else { fport };
                    if let Some(frame) = authentic_frame(fcnt, fport, payload) {
                        let _ = node.handle_multicast_frame(now, &frame);
                    }
                }
                2 => {
                    let fport = if kind & 4 == 0 { 201 } else { 200 };
                    let _ = node.handle_downlink(now, fport, bytes);
                }
                _ => now_ms += u64::from(kind >> 2) * 3_001,
            }
            match harness::service(&mut node, Instant::from_millis(now_ms)) {
                Service::Continue => {}
                Service::Recycle => {
                    parts = node.into_parts();
                    continue 'power;
                }
                Service::Reboot => {
                    parts = harness::rebooted_parts(node);
                    continue 'power;
                }
            }
        }
    }
});
