//! Test support: what the node does to receive an image over TS004. It erases the
//! download image area and the FEC log, then feeds fragments of the image (uncoded, then
//! coded, each lost with some probability) to `lorawan_fuota`'s FEC decoder, which
//! writes straight into the simulated flash through two `FlashWindow`s.

use std::cell::RefCell;

use fuota_boot::sim::SimFlash;
use fuota_boot::{BootFlash, FlashWindow};
use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::fec::decoder::DecoderConfig;
use lorawan_fuota::fec::{Decoder, FragmentEncoder};

use super::Device;

/// What a download cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadReport {
    /// M: uncoded fragments.
    pub nb_frag: u16,
    /// Fragments sent (uncoded and coded).
    pub sent: u32,
    /// Fragments lost.
    pub lost: u32,
    /// Bytes of FEC log used.
    pub log_used: usize,
}

/// Receives `image` into the device's download image area with FEC, `frag_size`-byte
/// fragments, `max_lost` = L_max, each fragment lost with probability
/// `loss_percent`/100. Panics if the block cannot be completed.
pub fn download_with_fec(
    device: &mut Device,
    image: &[u8],
    frag_size: u16,
    max_lost: u16,
    loss_percent: u64,
    seed: u64,
) -> DownloadReport {
    let layout = device.layout;
    let chip = RefCell::new(device.flash.clone());
    let mut slot = FlashWindow::new(&chip, layout.download_image());
    let mut log = FlashWindow::new(&chip, layout.fec_log);

    let encoder =
        FragmentEncoder::new(image, usize::from(frag_size), PackageVersion::V2).expect("encoder");
    let config = DecoderConfig {
        nb_frag: encoder.nb_frag(),
        frag_size,
        max_lost,
        version: PackageVersion::V2,
    };
    // Session setup: erase the pages the block covers, and the log.
    let block_len = u32::from(encoder.nb_frag()) * u32::from(frag_size);
    slot.erase_prefix(block_len).expect("erase slot");
    log.erase_prefix(u32::MAX).expect("erase log");

    type Window<'a> = FlashWindow<&'a RefCell<SimFlash>>;
    let sizing = Decoder::<Window, Window>::sizing(&config, 8).expect("sizing");
    let mut workspace = vec![0u8; sizing.workspace_bytes];
    let decoder = Decoder::new(config, slot, log, &mut workspace).expect("decoder");
    // The decoder (and the windows borrowing the chip) ends inside `feed`.
    let (sent, lost, log_used) = feed(decoder, &encoder, frag_size, loss_percent, seed);
    device.flash = chip.into_inner();
    assert_eq!(device.flash.page_size(), layout.page_size);
    DownloadReport {
        nb_frag: encoder.nb_frag(),
        sent,
        lost,
        log_used,
    }
}

/// Sends fragments 1, 2, … (each lost with probability `loss_percent`/100) until the
/// decoder completes the block; returns (sent, lost, log bytes used).
fn feed<B, L>(
    mut decoder: Decoder<'_, B, L>,
    encoder: &FragmentEncoder<'_>,
    frag_size: u16,
    loss_percent: u64,
    seed: u64,
) -> (u32, u32, usize)
where
    B: lorawan_fuota::fec::FlashRegion,
    L: lorawan_fuota::fec::FlashRegion<Error = B::Error>,
{
    let mut rng = seed | 1;
    let mut lost = |percent: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % 100 < percent
    };
    let mut fragment = vec![0u8; usize::from(frag_size)];
    let (mut sent, mut lost_count) = (0u32, 0u32);
    let mut n = 1u32;
    while !decoder.is_complete() {
        assert!(n < 16_000, "block not complete after {n} fragments");
        encoder.fragment(n, &mut fragment).expect("fragment");
        sent += 1;
        if lost(loss_percent) {
            lost_count += 1;
        } else {
            decoder.push(n as u16, &fragment).expect("decoder push");
        }
        n += 1;
    }
    (sent, lost_count, decoder.status().log_used)
}
