//! Prints the FEC decoder's RAM and flash-log needs for a grid of sessions, beside the
//! Semtech reference decoder's RAM formula ((L>>3)+1)·L + 2M.
//!
//! Run: `cargo run -p lorawan-fuota --example fec_ram_report`.

use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::fec::decoder::{semtech_reference_ram, DecoderConfig};
use lorawan_fuota::fec::{Decoder, SliceFlash};

fn main() {
    let targets: [(u16, u16, u16, &str); 2] = [
        (2000, 48, 400, "~96 KB image, EU868 DR0-2, 20 % redundancy"),
        (420, 232, 84, "~97 KB image, EU868 DR5, 20 % redundancy"),
    ];
    println!("Decoder RAM (write granule 8 bytes; host pointers, a Cortex-M needs less)\n");
    println!(
        "{:>6} {:>5} {:>6} {:>10} {:>10} {:>7} {:>12} {:>10}",
        "M", "S", "L_max", "ours (B)", "Semtech", "ratio", "log rsv (B)", "held"
    );
    let mut grid: Vec<(u16, u16, u16)> = targets.iter().map(|&(m, s, l, _)| (m, s, l)).collect();
    for m in [100u16, 500, 1000, 2000, 4000, 8000, 16383] {
        for percent in [10u32, 20] {
            let l = (u32::from(m) * percent / 100) as u16;
            grid.push((m, 48, l));
            grid.push((m, 50, l));
        }
    }
    for (m, s, l) in grid {
        let config = DecoderConfig {
            nb_frag: m,
            frag_size: s,
            max_lost: l,
            version: PackageVersion::V2,
        };
        match Decoder::<SliceFlash, SliceFlash>::sizing(&config, 8) {
            Ok(sizing) => {
                let reference = semtech_reference_ram(m, l);
                println!(
                    "{m:>6} {s:>5} {l:>6} {:>10} {reference:>10} {:>6.0}% {:>12} {:>10}",
                    sizing.ram_bytes,
                    100.0 * sizing.ram_bytes as f64 / reference as f64,
                    sizing.log_reserved_bytes,
                    sizing.held_granule_capacity,
                );
            }
            Err(e) => println!("{m:>6} {s:>5} {l:>6} error: {e}"),
        }
    }
    println!();
    for (m, s, l, what) in targets {
        println!("target M={m} S={s} L_max={l}: {what}");
    }
}
