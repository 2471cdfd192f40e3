//! Fuzzes `FuotaNode::handle_downlink` on every FPort: a sequence of downlinks
//! (`[selector, fport, length, payload…]`, the package ports most of the time), time
//! passing between them, the node's actions and uplinks taken as the firmware would,
//! workspace recycling and reboots (the node restarts from what it persisted). Nothing
//! may panic, and every uplink fits the configured payload limit.
#![no_main]

#[path = "node_harness.rs"]
mod harness;

use fuota_node::{FuotaNode, Instant};
use harness::Service;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut workspace = vec![0u8; 4096];
    let mut parts = harness::fresh_parts();
    let mut rest = input;
    let mut now_ms = 1_000u64;
    'power: loop {
        let (mut node, _) = FuotaNode::start(parts, &mut workspace, Instant::from_millis(now_ms));
        loop {
            let [selector, fport, len, tail @ ..] = rest else {
                return;
            };
            let len = usize::from(*len).min(tail.len());
            let (payload, next) = tail.split_at(len);
            rest = next;
            let fport = if selector & 1 == 1 {
                *fport
            } else {
                200 + fport % 4
            };
            now_ms += u64::from(selector >> 1) * 997;
            let now = Instant::from_millis(now_ms);
            let _ = node.handle_downlink(now, fport, payload);
            match harness::service(&mut node, now) {
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
