//! Class C multicast data frames (TS005 sessions): built with the group's McAddr,
//! McNwkSKey (MIC), McAppSKey (FRMPayload) and the group's frame counter, as unconfirmed
//! downlinks without FOpts, so every device of the group decrypts the same bytes.
//! The group's FCnt must never repeat: its owner (the campaign engine) persists it.

use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::parser::FCtrl;
use lorawan_fuota::crypto::multicast::{mc_app_s_key, mc_nwk_s_key};
use lorawan_fuota::crypto::Key128;

/// A multicast group's address and session keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastGroupKeys {
    /// McAddr.
    pub mc_addr: u32,
    /// McNwkSKey.
    pub mc_nwk_s_key: Key128,
    /// McAppSKey.
    pub mc_app_s_key: Key128,
}

impl MulticastGroupKeys {
    /// The session keys of a group from its McKey (TS005: `aes128_encrypt(McKey, 0x01|0x02
    /// | McAddr | pad16)`).
    pub fn from_mc_key(mc_key: &Key128, mc_addr: u32) -> Self {
        MulticastGroupKeys {
            mc_addr,
            mc_nwk_s_key: mc_nwk_s_key(mc_key, mc_addr),
            mc_app_s_key: mc_app_s_key(mc_key, mc_addr),
        }
    }
}

/// Why a multicast frame could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MulticastFrameError {
    /// FPort 0 carries MAC commands, which multicast frames cannot.
    #[error("multicast frames need an FPort from 1 to 223, not {0}")]
    InvalidFPort(u8),
    /// The payload does not fit a frame.
    #[error("a {0}-byte payload does not fit a LoRaWAN frame")]
    TooLarge(usize),
}

/// The PHYPayload of a multicast frame: unconfirmed data down to McAddr, FCnt `f_cnt`
/// (its low 16 bits on the air), `payload` on `f_port` encrypted with McAppSKey, MIC with
/// McNwkSKey.
pub fn build_multicast_frame(
    group: &MulticastGroupKeys,
    f_cnt: u32,
    f_port: u8,
    payload: &[u8],
) -> Result<Vec<u8>, MulticastFrameError> {
    if f_port == 0 || f_port > 223 {
        return Err(MulticastFrameError::InvalidFPort(f_port));
    }
    if payload.len() > 242 {
        return Err(MulticastFrameError::TooLarge(payload.len()));
    }
    let mut creator = DataPayloadCreator::new();
    creator
        .set_uplink(false)
        .set_confirmed(false)
        .set_dev_addr(lorawan::parser::DevAddr::<[u8; 4]>::from(
            group.mc_addr.to_le_bytes(),
        ))
        .set_fctrl(&FCtrl::new(0, false))
        .set_fcnt(f_cnt)
        .set_f_port(f_port);
    creator
        .build(
            payload,
            &[],
            &NewSKey::from(*group.mc_nwk_s_key.as_bytes()),
            &AppSKey::from(*group.mc_app_s_key.as_bytes()),
        )
        .map(<[u8]>::to_vec)
        .map_err(|_| MulticastFrameError::TooLarge(payload.len()))
}
