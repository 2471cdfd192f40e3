//! How many fragments beyond M a device must receive before the TS004 parity code
//! decodes: the figure the agent's campaign planner sizes its decode margin on.
//!
//! Each trial sends the M uncoded fragments and then coded ones in order, loses each
//! independently with probability `loss`, and counts the fragments received until the
//! received rows span all M columns (GF(2) rank M). Printed: the mean overhead and the
//! share of trials needing more than k extra fragments.
//!
//! Run: `cargo run --release -p lorawan-fuota --example fec_overhead_report`.

use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::fec::parity::{parity_row, row_bytes};

/// Small deterministic generator (xorshift64*): the report is the same on every run.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Incremental GF(2) elimination: rows reduced by the pivots found so far.
struct Span {
    words: usize,
    pivots: Vec<Option<Vec<u64>>>,
    rank: usize,
}

impl Span {
    fn new(columns: usize) -> Self {
        Span {
            words: columns.div_ceil(64),
            pivots: vec![None; columns],
            rank: 0,
        }
    }

    /// Adds a row; true if it raised the rank.
    fn add(&mut self, mut row: Vec<u64>) -> bool {
        for word in 0..self.words {
            while row[word] != 0 {
                let column = word * 64 + row[word].trailing_zeros() as usize;
                match &self.pivots[column] {
                    Some(pivot) => {
                        for (r, p) in row.iter_mut().zip(pivot) {
                            *r ^= p;
                        }
                    }
                    None => {
                        self.pivots[column] = Some(row);
                        self.rank += 1;
                        return true;
                    }
                }
            }
        }
        false
    }
}

fn row_of(n: u32, m: u16, version: PackageVersion, words: usize) -> Vec<u64> {
    let mut row = vec![0u64; words];
    if n <= u32::from(m) {
        let column = (n - 1) as usize;
        row[column / 64] |= 1 << (column % 64);
        return row;
    }
    let mut bitmap = vec![0u8; row_bytes(m)];
    if parity_row(n - u32::from(m), m, version, &mut bitmap).is_err() {
        return row;
    }
    for (i, byte) in bitmap.iter().enumerate() {
        row[i / 8] |= u64::from(*byte) << ((i % 8) * 8);
    }
    row
}

fn main() {
    let trials = 400;
    println!("Fragments received beyond M before the block decodes ({trials} trials each)\n");
    println!(
        "{:>6} {:>3} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>5}",
        "M", "ver", "loss", "mean", ">2", ">4", ">6", ">8", "max"
    );
    for m in [50u16, 106, 420, 1000] {
        for version in [PackageVersion::V1, PackageVersion::V2] {
            for loss in [0.01, 0.1, 0.3] {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(m));
                let words = usize::from(m).div_ceil(64);
                let rows: Vec<Vec<u64>> = (1..=u32::from(m) * 3)
                    .map(|n| row_of(n, m, version, words))
                    .collect();
                let mut overheads = Vec::with_capacity(trials);
                for _ in 0..trials {
                    let mut span = Span::new(usize::from(m));
                    let mut received = 0usize;
                    for row in &rows {
                        if rng.next_f64() < loss {
                            continue;
                        }
                        received += 1;
                        span.add(row.clone());
                        if span.rank == usize::from(m) {
                            break;
                        }
                    }
                    overheads.push(received.saturating_sub(usize::from(m)));
                }
                let share = |k: usize| {
                    100.0 * overheads.iter().filter(|&&o| o > k).count() as f64 / trials as f64
                };
                let mean = overheads.iter().sum::<usize>() as f64 / trials as f64;
                let version_number = match version {
                    PackageVersion::V1 => 1,
                    PackageVersion::V2 => 2,
                };
                println!(
                    "{m:>6} {version_number:>3} {:>5.0}% {mean:>6.2} {:>6.1}% {:>6.1}% {:>6.1}% {:>6.1}% {:>5}",
                    loss * 100.0,
                    share(2),
                    share(4),
                    share(6),
                    share(8),
                    overheads.iter().max().copied().unwrap_or(0),
                );
            }
        }
    }
}
