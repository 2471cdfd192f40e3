//! Prints what a full-size update costs the flash on the STM32WL55JC layout: pages
//! erased, double-words programmed and bytes read, phase by phase, for an image of
//! about 95 KB (the largest the layout allows is 96 256 bytes) received over TS004
//! with FEC, installed, and confirmed; and for a revert.
//!
//! Run: `cargo run -p fuota-boot --features sim --example update_flash_cost`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::fec_download::download_with_fec;
use common::{signing_key, Device, ImageSpec};
use fuota_boot::sim::FlashCounters;
use fuota_boot::STM32WL55JC;

fn row(phase: &str, c: FlashCounters) {
    println!(
        "{phase:<44} {:>7} {:>9} {:>10} {:>10}",
        c.pages_erased,
        c.double_words_programmed,
        c.bytes_programmed(),
        c.bytes_read
    );
}

fn measure(device: &mut Device, phase: &str, action: impl FnOnce(&mut Device)) -> FlashCounters {
    device.flash.reset_counters();
    action(device);
    let counters = device.flash.counters();
    row(phase, counters);
    counters
}

fn add(a: FlashCounters, b: FlashCounters) -> FlashCounters {
    FlashCounters {
        reads: a.reads + b.reads,
        bytes_read: a.bytes_read + b.bytes_read,
        double_words_programmed: a.double_words_programmed + b.double_words_programmed,
        program_calls: a.program_calls + b.program_calls,
        pages_erased: a.pages_erased + b.pages_erased,
        torn_reads: a.torn_reads + b.torn_reads,
    }
}

/// The image with a 0x200-byte header and a body with no 0xFF double-words, so that
/// every double-word is programmed (real firmware has some 0xFF padding, which the
/// swap skips).
fn dense(spec: ImageSpec) -> ImageSpec {
    let mut spec = spec.with_header_size(0x200);
    let mut x = 0x1234_5678u32 ^ spec.body.len() as u32;
    for byte in spec.body.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *byte = ((x >> 24) as u8) & 0xFE;
    }
    spec
}

fn main() {
    let key = signing_key(1);
    let old = dense(ImageSpec::new(1, 0, 90_000, 1)).sign(&key);
    let new = dense(ImageSpec::new(1, 1, 95_000, 2)).sign(&key);
    println!(
        "STM32WL55JC layout, running image {} bytes, new image {} bytes (largest allowed {})",
        old.len(),
        new.len(),
        STM32WL55JC.max_image_len()
    );
    println!("(pseudo-random bodies without erased-looking runs: the most a swap programs)\n");
    println!(
        "{:<44} {:>7} {:>9} {:>10} {:>10}",
        "phase", "erases", "dw progs", "bytes prog", "bytes read"
    );

    let mut device = Device::new(STM32WL55JC, &key, &old);
    let mut total = FlashCounters::default();
    let mut download = None;
    total = add(
        total,
        measure(
            &mut device,
            "node: TS004 download, FEC (S=48, 10% loss)",
            |d| {
                download = Some(download_with_fec(d, &new, 48, 400, 10, 7));
            },
        ),
    );
    total = add(
        total,
        measure(&mut device, "node: request update", |d| d.request_update()),
    );
    let before_install = device.clone();
    total = add(
        total,
        measure(&mut device, "boot: verify, swap, start trial", |d| {
            d.boot_to_jump();
        }),
    );
    total = add(
        total,
        measure(&mut device, "app: confirm", |d| {
            d.confirm();
        }),
    );
    total = add(
        total,
        measure(&mut device, "boot: verify, start confirmed image", |d| {
            d.boot_to_jump();
        }),
    );
    println!("{:-<84}", "");
    row("whole update", total);

    let mut reverting = before_install;
    reverting.boot_to_jump();
    println!();
    measure(
        &mut reverting,
        "revert: trial not confirmed, swap back",
        |d| {
            d.boot_to_jump();
        },
    );

    if let Some(report) = download {
        println!(
            "\nTS004: M = {} fragments of 48 bytes, {} sent, {} lost, FEC log used {} bytes of {}",
            report.nb_frag, report.sent, report.lost, report.log_used, STM32WL55JC.fec_log.len
        );
    }
    let page = STM32WL55JC.page_size as usize;
    let erases = device.flash.page_erase_counts();
    let slots =
        STM32WL55JC.primary.start as usize / page..STM32WL55JC.download.end() as usize / page;
    let state =
        STM32WL55JC.boot_state.start as usize / page..STM32WL55JC.boot_state.end() as usize / page;
    println!(
        "most erases of one slot page in this update: {}; of one boot state page: {}",
        erases[slots].iter().max().copied().unwrap_or(0),
        erases[state].iter().max().copied().unwrap_or(0),
    );
}
