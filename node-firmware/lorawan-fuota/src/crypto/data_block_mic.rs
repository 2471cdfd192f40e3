//! TS004 v2 data-block integrity: DataBlockIntKey and the 4-byte MIC (applayer.md §3.8).
//!
//! ```text
//! DataBlockIntKey = aes128_encrypt(root, 0x30 | pad16)   root = AppKey (1.1) / GenAppKey (1.0.x)
//! B0  = 0x49 | SessionCnt (u16 LE) | FragIndex | Descriptor (4 B) | 00 00 00 00 | len (u32 LE)
//! MIC = AES-CMAC(DataBlockIntKey, B0 | data block)[0..4]
//! ```
//!
//! The data block is the *unpadded* one (`NbFrag × FragSize − Padding` bytes); a MIC over
//! the padded block does not match what devices compute. The server computes the MIC
//! once with [`data_block_mic`]; a device, which reads the reassembled block back from
//! flash in chunks, uses the incremental [`DataBlockMic`]. Both give the same result.

use core::fmt;

use aes::cipher::KeyInit;
use aes::Aes128;
use cmac::{Cmac, Mac};

use super::keys::{aes128_encrypt, Key128};

/// DataBlockIntKey: `aes128_encrypt(root_key, 0x30 | pad16)`.
///
/// `root_key` is the AppKey of a LoRaWAN 1.1 device or the GenAppKey of a 1.0.x device.
pub fn data_block_int_key(root_key: &Key128) -> Key128 {
    let mut block = [0u8; 16];
    block[0] = 0x30;
    Key128::from_bytes(aes128_encrypt(root_key, block))
}

/// The 16-byte B0 block that precedes the data in the CMAC.
///
/// `descriptor` is the 4 bytes exactly as sent in FragSessionSetupReq; `block_len` is the
/// unpadded data-block length in bytes.
pub fn b0_block(session_cnt: u16, frag_index: u8, descriptor: [u8; 4], block_len: u32) -> [u8; 16] {
    let mut b0 = [0u8; 16];
    b0[0] = 0x49;
    b0[1..3].copy_from_slice(&session_cnt.to_le_bytes());
    b0[3] = frag_index;
    b0[4..8].copy_from_slice(&descriptor);
    // b0[8..12] stays zero.
    b0[12..16].copy_from_slice(&block_len.to_le_bytes());
    b0
}

/// One-shot MIC of a whole (unpadded) data block under `data_block_int_key`.
///
/// The 4 bytes are in the order they are sent in FragSessionSetupReq. The length field of
/// B0 is `data.len()` as a u32; a TS004 block is at most 65535 × 255 bytes, so it always
/// fits (a longer slice would be described by its length modulo 2^32).
pub fn data_block_mic(
    data_block_int_key: &Key128,
    session_cnt: u16,
    frag_index: u8,
    descriptor: [u8; 4],
    data: &[u8],
) -> [u8; 4] {
    let mut mic = DataBlockMic::new(
        data_block_int_key,
        session_cnt,
        frag_index,
        descriptor,
        data.len() as u32,
    );
    mic.update(data);
    mic.tag()
}

/// Incremental MIC computation over a data block fed in chunks of any size.
///
/// The block length must be known up front because it is part of B0. Feed exactly
/// `block_len` bytes with [`update`](Self::update), then call
/// [`finalize`](Self::finalize) or [`verify`](Self::verify).
#[derive(Clone)]
pub struct DataBlockMic {
    mac: Cmac<Aes128>,
    block_len: u32,
    fed: u64,
}

impl DataBlockMic {
    /// Starts a MIC over a block of `block_len` bytes (the unpadded length).
    pub fn new(
        data_block_int_key: &Key128,
        session_cnt: u16,
        frag_index: u8,
        descriptor: [u8; 4],
        block_len: u32,
    ) -> Self {
        let mut mac = <Cmac<Aes128> as KeyInit>::new(&(*data_block_int_key.as_bytes()).into());
        mac.update(&b0_block(session_cnt, frag_index, descriptor, block_len));
        DataBlockMic {
            mac,
            block_len,
            fed: 0,
        }
    }

    /// Feeds the next chunk of the data block (any length, including zero).
    pub fn update(&mut self, chunk: &[u8]) {
        self.mac.update(chunk);
        self.fed = self.fed.saturating_add(chunk.len() as u64);
    }

    /// Number of bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        self.fed
    }

    /// The block length announced in [`new`](Self::new).
    pub fn block_len(&self) -> u32 {
        self.block_len
    }

    /// The MIC, or `None` if the bytes fed do not add up to the announced block length
    /// (a caller bug: such a MIC could never match the one the server sent).
    pub fn finalize(self) -> Option<[u8; 4]> {
        if self.fed == u64::from(self.block_len) {
            Some(self.tag())
        } else {
            None
        }
    }

    /// Whether the block fed so far has the MIC `expected` (as received in
    /// FragSessionSetupReq). `false` as well if the length fed is wrong. The comparison
    /// does not exit early.
    pub fn verify(self, expected: &[u8; 4]) -> bool {
        match self.finalize() {
            Some(mic) => {
                mic.iter()
                    .zip(expected.iter())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            }
            None => false,
        }
    }

    /// First 4 bytes of the CMAC, whatever was fed.
    fn tag(self) -> [u8; 4] {
        let full = self.mac.finalize().into_bytes();
        let mut mic = [0u8; 4];
        mic.copy_from_slice(&full[..4]);
        mic
    }
}

impl fmt::Debug for DataBlockMic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The CMAC state holds key material; show the progress only.
        f.debug_struct("DataBlockMic")
            .field("block_len", &self.block_len)
            .field("fed", &self.fed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: [u8; 16] = [
        0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f,
        0x3c,
    ];

    #[test]
    fn b0_layout() {
        assert_eq!(
            b0_block(0x1234, 2, [0xa1, 0xb2, 0xc3, 0xd4], 11),
            [0x49, 0x34, 0x12, 0x02, 0xa1, 0xb2, 0xc3, 0xd4, 0, 0, 0, 0, 0x0b, 0, 0, 0]
        );
    }

    #[test]
    fn incremental_matches_one_shot_and_checks_length() {
        let key = data_block_int_key(&Key128::from_bytes(ROOT));
        let data = b"hello fuota";
        let expected = [0x86, 0x93, 0x5c, 0x99];
        assert_eq!(
            data_block_mic(&key, 0x1234, 2, [0xa1, 0xb2, 0xc3, 0xd4], data),
            expected
        );

        let mut mic = DataBlockMic::new(&key, 0x1234, 2, [0xa1, 0xb2, 0xc3, 0xd4], 11);
        mic.update(&data[..3]);
        mic.update(&[]);
        mic.update(&data[3..]);
        assert_eq!(mic.bytes_fed(), 11);
        assert!(mic.clone().verify(&expected));
        assert!(!mic.clone().verify(&[0x86, 0x93, 0x5c, 0x98]));
        assert_eq!(mic.finalize(), Some(expected));

        let mut short = DataBlockMic::new(&key, 0x1234, 2, [0xa1, 0xb2, 0xc3, 0xd4], 11);
        short.update(&data[..10]);
        assert_eq!(short.finalize(), None);

        let mut long = DataBlockMic::new(&key, 0x1234, 2, [0xa1, 0xb2, 0xc3, 0xd4], 11);
        long.update(data);
        long.update(&[0]);
        assert!(!long.verify(&expected));
    }
}
