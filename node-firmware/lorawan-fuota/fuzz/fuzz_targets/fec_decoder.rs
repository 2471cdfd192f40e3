//! Fuzzes the FEC decoder with the fragments a hostile or broken channel delivers.
//!
//! The first byte picks the session shape; the rest drives deliveries. Fragments come
//! from the real encoder (so a completed block must equal the original) or are raw
//! bytes with any counter and length (which must be refused cleanly). The decoder must
//! never panic and never program a flash granule twice (SliceFlash refuses that, and the
//! decoder would report it as a Flash error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::fec::decoder::DecoderConfig;
use lorawan_fuota::fec::{Decoder, DecoderError, FragmentEncoder, SliceFlash};

fuzz_target!(|input: &[u8]| {
    let [shape, m_byte, l_byte, rest @ ..] = input else {
        return;
    };
    let version = if shape & 1 == 0 {
        PackageVersion::V1
    } else {
        PackageVersion::V2
    };
    let frag_size = [1usize, 2, 5, 8, 10, 13, 48, 50][usize::from(shape >> 1 & 7)];
    let nb_frag = usize::from(*m_byte % 64) + 1;
    let max_lost = u16::from(*l_byte % 70);
    let block: Vec<u8> = (0..nb_frag * frag_size - frag_size / 2)
        .map(|i| (i as u8).wrapping_mul(*m_byte | 1) ^ *l_byte)
        .collect();
    let Ok(encoder) = FragmentEncoder::new(&block, frag_size, version) else {
        return;
    };
    let config = DecoderConfig {
        nb_frag: encoder.nb_frag(),
        frag_size: frag_size as u16,
        max_lost,
        version,
    };
    let Ok(sizing) = Decoder::<SliceFlash, SliceFlash>::sizing(&config, 8) else {
        return;
    };
    let mut slot = vec![0xFFu8; (nb_frag * frag_size).next_multiple_of(8)];
    let log_size = sizing.log_reserved_bytes + usize::from(shape >> 4) * 64;
    let mut log = vec![0xFFu8; log_size];
    let mut workspace = vec![0u8; sizing.workspace_bytes];
    let Ok(mut decoder) = Decoder::new(
        config,
        SliceFlash::new(&mut slot, 8),
        SliceFlash::new(&mut log, 8),
        &mut workspace,
    ) else {
        panic!("a sized decoder must construct");
    };
    let mut fragment = vec![0u8; frag_size];
    let mut bytes = rest.iter();
    // A raw fragment of the session's size that the decoder accepted corrupts the block,
    // as a bad radio would: the block is then only checked to be complete, not equal.
    let mut corrupted = false;
    while let (Some(&kind), Some(&a), Some(&b)) = (bytes.next(), bytes.next(), bytes.next()) {
        let n = u16::from_le_bytes([a, b]);
        let result = if kind < 0xF0 {
            // A genuine fragment: N folded into what the session can send.
            let n = n % (encoder.nb_frag() + 100) + 1;
            if encoder.fragment(u32::from(n), &mut fragment).is_err() {
                continue;
            }
            decoder.push(n, &fragment)
        } else {
            // Raw garbage: any counter, any length up to the rest of the input.
            let len = usize::from(kind & 0x0F) * 4;
            let data: Vec<u8> = bytes.by_ref().take(len).copied().collect();
            let result = decoder.push(n, &data);
            corrupted |= result.is_ok();
            result
        };
        if let Err(DecoderError::Flash(e)) = result {
            panic!("flash rule broken: {e:?}");
        }
        if decoder.is_complete() {
            break;
        }
    }
    let complete = decoder.is_complete();
    if complete && !corrupted {
        assert_eq!(&slot[..block.len()], block.as_slice(), "wrong block");
    }
});
