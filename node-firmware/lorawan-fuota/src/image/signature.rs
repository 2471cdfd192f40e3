//! Decoding the DER ECDSA signature of an ECDSASIG TLV.
//!
//! `SEQUENCE { INTEGER r, INTEGER s }`, at most 72 bytes for P-256. imgtool's
//! `--pad-sig` (for MCUboot < 1.5) appends zero bytes up to 72; those are accepted and
//! nothing else may follow the sequence. The DER itself is parsed by p256 (its `der`
//! support is always on with the `ecdsa` feature); this module only strips the padding.

use p256::ecdsa::Signature;

/// Longest ECDSASIG value accepted: a P-256 DER signature, or one padded by imgtool.
pub(crate) const MAX_SIGNATURE_LEN: usize = 72;

/// DER tag of a SEQUENCE.
const TAG_SEQUENCE: u8 = 0x30;

/// Decodes a DER ECDSA P-256 signature, optionally followed by zero padding.
/// `None` if it is not one (bad DER, non-minimal integers, r or s out of range).
pub(crate) fn decode_der_signature(bytes: &[u8]) -> Option<Signature> {
    match bytes {
        // Short-form length only: a P-256 signature body is at most 70 bytes.
        [TAG_SEQUENCE, len, ..] if *len < 0x80 => {
            let (der, padding) = bytes.split_at_checked(2 + usize::from(*len))?;
            if padding.iter().any(|&b| b != 0) {
                return None;
            }
            Signature::from_der(der).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::ecdsa::SigningKey;
    use proptest::prelude::*;

    /// DER tag of an INTEGER.
    const TAG_INTEGER: u8 = 0x02;

    /// DER TLV with a short-form length.
    fn tlv(tag: u8, content: &[u8]) -> std::vec::Vec<u8> {
        let mut out = std::vec![tag, content.len() as u8];
        out.extend_from_slice(content);
        out
    }

    #[test]
    fn real_signatures_decode_with_and_without_padding() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        for i in 0..50u8 {
            let sig: Signature = key.sign_prehash(&[i; 32]).unwrap();
            let der = sig.to_der();
            assert_eq!(decode_der_signature(der.as_bytes()), Some(sig));
            let mut padded = der.as_bytes().to_vec();
            padded.resize(MAX_SIGNATURE_LEN, 0);
            assert_eq!(decode_der_signature(&padded), Some(sig));
            if padded.len() > der.as_bytes().len() {
                *padded.last_mut().unwrap() = 1;
                assert_eq!(decode_der_signature(&padded), None);
            }
        }
    }

    proptest! {
        /// Structured near-DER inputs: the padding strip and length handling agree with
        /// p256's `from_der` on the unpadded bytes.
        #[test]
        fn agrees_with_p256_from_der(
            r in proptest::collection::vec(any::<u8>(), 0..35),
            s in proptest::collection::vec(any::<u8>(), 0..35),
            r_tag in prop_oneof![Just(TAG_INTEGER), any::<u8>()],
            seq_len_delta in prop_oneof![Just(0i16), -3i16..3],
            trailing in proptest::collection::vec(any::<u8>(), 0..3),
        ) {
            let mut body = tlv(r_tag, &r);
            body.extend_from_slice(&tlv(TAG_INTEGER, &s));
            let len = (body.len() as i16 + seq_len_delta).clamp(0, 0x7f) as u8;
            let mut der = std::vec![TAG_SEQUENCE, len];
            der.extend_from_slice(&body);
            der.extend_from_slice(&trailing);
            let ours = decode_der_signature(&der);
            let theirs = Signature::from_der(&der).ok();
            if trailing.iter().all(|&b| b == 0) && !trailing.is_empty() {
                // Zero padding is ours to accept (imgtool --pad-sig); p256 refuses it.
                let unpadded = &der[..der.len() - trailing.len()];
                prop_assert_eq!(ours, Signature::from_der(unpadded).ok());
            } else {
                prop_assert_eq!(ours, theirs);
            }
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_der_signature(&bytes);
        }
    }
}
