//! Multicast downlink reception: from a raw PHYPayload received in a Class C session to
//! an authenticated, decrypted `(group, FCnt, FPort, FRMPayload)`, or a reason to drop
//! it (reference §5.3).
//!
//! The `lorawan` crate parses the frame, checks the MIC and decrypts the FRMPayload;
//! this module adds the multicast rules on top:
//!
//! 1. UnconfirmedDataDown only (confirmed multicast is refused, uplinks and joins are
//!    not for us);
//! 2. DevAddr equal to a group's McAddr (little-endian on air);
//! 3. FCtrl: ACK clear, bit 6 (RFU on downlinks) clear, FOptsLen 0 — no MAC commands;
//! 4. an FPort, not 0;
//! 5. the 32-bit FCnt rebuilt from the 16 on-air bits as the nearest value at or after
//!    the next expected one (the last accepted + 1, or minMcFCnt), refused if it is
//!    behind (replay) or beyond maxMcFCnt;
//! 6. MIC under McNwkSKey with that FCnt, then decryption under McAppSKey.
//!
//! Only then is the group's last FCnt advanced.

use lorawan::keys::AES128;
use lorawan::parser::{parse, DataHeader, DataPayload, FRMPayload, MType, PhyPayload, MHDR};

use super::McGroup;

/// Largest LoRaWAN PHYPayload.
pub const MAX_PHY_PAYLOAD: usize = 255;

/// Frames whose 16-bit FCnt is this far behind the expected one are replays; anything
/// else is taken as ahead (LoRaWAN's usual half-range rule).
const REPLAY_WINDOW: u32 = 1 << 15;

/// Why a multicast frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MulticastDrop {
    /// Longer than a LoRaWAN PHYPayload can be.
    TooLong {
        /// Its length.
        length: usize,
    },
    /// Not a parseable LoRaWAN data frame.
    Malformed,
    /// Not a downlink data frame (join, uplink, proprietary).
    NotDownlinkData,
    /// ConfirmedDataDown: multicast frames are never confirmed.
    Confirmed,
    /// DevAddr matches no multicast group.
    UnknownMcAddr {
        /// The frame's DevAddr.
        dev_addr: u32,
    },
    /// FCtrl.ACK set.
    AckSet,
    /// FCtrl bit 6 (RFU on downlinks) set.
    RfuBitSet,
    /// FOptsLen is not 0: MAC commands on a multicast frame.
    FOptsPresent {
        /// FOptsLen.
        length: u8,
    },
    /// No FPort (no FRMPayload).
    NoFPort,
    /// FPort 0 (MAC commands).
    FPortZero,
    /// The FCnt is at or behind the last accepted one.
    Replayed {
        /// Group.
        mc_group_id: u8,
        /// The 16 bits on air.
        fcnt_on_air: u16,
        /// Last FCnt accepted on the group.
        last_fcnt: u32,
    },
    /// The FCnt is before minMcFCnt.
    BeforeWindow {
        /// Group.
        mc_group_id: u8,
        /// The 16 bits on air.
        fcnt_on_air: u16,
    },
    /// The FCnt is after maxMcFCnt (or beyond 2^32).
    AfterWindow {
        /// Group.
        mc_group_id: u8,
        /// The 32-bit FCnt it would have.
        fcnt: u64,
    },
    /// The MIC does not verify under the group's McNwkSKey.
    MicMismatch {
        /// Group.
        mc_group_id: u8,
        /// The 32-bit FCnt tried.
        fcnt: u32,
    },
    /// Authentic, but carries a TS003/TS005/TS006 port: those packages are unicast only.
    PackageNotAllowed {
        /// The FPort.
        fport: u8,
    },
    /// Authentic, on a port the node does not handle.
    UnhandledFPort {
        /// The FPort.
        fport: u8,
    },
}

/// An authenticated, decrypted multicast frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastFrame<'a> {
    /// The group it was sent to.
    pub mc_group_id: u8,
    /// Its 32-bit FCnt.
    pub fcnt: u32,
    /// FPort.
    pub fport: u8,
    /// Decrypted FRMPayload.
    pub payload: &'a [u8],
}

/// Checks, authenticates and decrypts `phy_payload` (copied into `buffer`) against the
/// groups; advances the matching group's last FCnt on success.
pub(crate) fn receive<'b>(
    groups: &mut [Option<McGroup>],
    phy_payload: &[u8],
    buffer: &'b mut [u8; MAX_PHY_PAYLOAD],
) -> Result<MulticastFrame<'b>, MulticastDrop> {
    let frame = buffer
        .get_mut(..phy_payload.len())
        .ok_or(MulticastDrop::TooLong {
            length: phy_payload.len(),
        })?;
    frame.copy_from_slice(phy_payload);
    let mhdr = MHDR::new(*frame.first().ok_or(MulticastDrop::Malformed)?);
    match mhdr.mtype() {
        MType::UnconfirmedDataDown => {}
        MType::ConfirmedDataDown => return Err(MulticastDrop::Confirmed),
        _ => return Err(MulticastDrop::NotDownlinkData),
    }
    let Ok(PhyPayload::Data(DataPayload::Encrypted(encrypted))) = parse(frame) else {
        return Err(MulticastDrop::Malformed);
    };
    let fhdr = encrypted.fhdr();
    let mut addr = [0u8; 4];
    addr.copy_from_slice(fhdr.dev_addr().as_ref());
    // On air DevAddr is little-endian (lorawan's u32 conversion reads it big-endian).
    let dev_addr = u32::from_le_bytes(addr);
    let (mc_group_id, group) = groups
        .iter_mut()
        .enumerate()
        .find_map(|(id, group)| match group {
            Some(group) if group.mc_addr == dev_addr => Some((id as u8, group)),
            _ => None,
        })
        .ok_or(MulticastDrop::UnknownMcAddr { dev_addr })?;
    let fctrl = fhdr.fctrl();
    if fctrl.ack() {
        return Err(MulticastDrop::AckSet);
    }
    if fctrl.raw_value() & 0x40 != 0 {
        return Err(MulticastDrop::RfuBitSet);
    }
    if fctrl.f_opts_len() != 0 {
        return Err(MulticastDrop::FOptsPresent {
            length: fctrl.f_opts_len(),
        });
    }
    let fport = encrypted.f_port().ok_or(MulticastDrop::NoFPort)?;
    if fport == 0 {
        return Err(MulticastDrop::FPortZero);
    }
    let fcnt = reconstruct_fcnt(mc_group_id, group, fhdr.fcnt())?;
    let nwk_s_key = AES128(*group.nwk_s_key.as_bytes());
    if !encrypted.validate_mic(&nwk_s_key, fcnt) {
        return Err(MulticastDrop::MicMismatch { mc_group_id, fcnt });
    }
    let app_s_key = AES128(*group.app_s_key.as_bytes());
    let decrypted = encrypted
        .decrypt(None, Some(&app_s_key), fcnt)
        .map_err(|_| MulticastDrop::Malformed)?;
    let payload_range = match decrypted.frm_payload() {
        FRMPayload::Data(data) => {
            let start = decrypted.as_data_bytes().len() - 4 - data.len();
            start..start + data.len()
        }
        _ => return Err(MulticastDrop::NoFPort),
    };
    group.last_fcnt = Some(fcnt);
    let frame: &'b [u8] = decrypted.to_inner();
    let payload = frame.get(payload_range).ok_or(MulticastDrop::Malformed)?;
    Ok(MulticastFrame {
        mc_group_id,
        fcnt,
        fport,
        payload,
    })
}

/// The 32-bit FCnt of a frame carrying `on_air`, per the module's rule 5.
fn reconstruct_fcnt(mc_group_id: u8, group: &McGroup, on_air: u16) -> Result<u32, MulticastDrop> {
    let expected = match group.last_fcnt {
        Some(last) => u64::from(last) + 1,
        None => u64::from(group.min_fcnt),
    };
    let behind = u32::from((expected as u16).wrapping_sub(on_air));
    if behind != 0 && behind <= REPLAY_WINDOW {
        return Err(match group.last_fcnt {
            Some(last_fcnt) => MulticastDrop::Replayed {
                mc_group_id,
                fcnt_on_air: on_air,
                last_fcnt,
            },
            None => MulticastDrop::BeforeWindow {
                mc_group_id,
                fcnt_on_air: on_air,
            },
        });
    }
    let ahead = u64::from(on_air.wrapping_sub(expected as u16));
    let fcnt = expected + ahead;
    match u32::try_from(fcnt) {
        Ok(fcnt) if fcnt <= group.max_fcnt => Ok(fcnt),
        _ => Err(MulticastDrop::AfterWindow { mc_group_id, fcnt }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lorawan_fuota::crypto::Key128;

    fn group(min: u32, max: u32, last: Option<u32>) -> McGroup {
        McGroup {
            mc_addr: 1,
            app_s_key: Key128::from_bytes([0; 16]),
            nwk_s_key: Key128::from_bytes([0; 16]),
            min_fcnt: min,
            max_fcnt: max,
            last_fcnt: last,
        }
    }

    #[test]
    fn fcnt_is_rebuilt_forward_from_the_expected_value() {
        assert_eq!(reconstruct_fcnt(0, &group(0, u32::MAX, None), 5), Ok(5));
        assert_eq!(
            reconstruct_fcnt(0, &group(0, u32::MAX, Some(0x1_FFFE)), 0x0003),
            Ok(0x2_0003)
        );
        assert_eq!(
            reconstruct_fcnt(0, &group(0x1_0000, u32::MAX, None), 0x0000),
            Ok(0x1_0000)
        );
        assert!(matches!(
            reconstruct_fcnt(0, &group(0, u32::MAX, Some(10)), 10),
            Err(MulticastDrop::Replayed { last_fcnt: 10, .. })
        ));
        assert!(matches!(
            reconstruct_fcnt(0, &group(100, 200, None), 99),
            Err(MulticastDrop::BeforeWindow { .. })
        ));
        assert_eq!(
            reconstruct_fcnt(0, &group(100, 200, None), 201),
            Err(MulticastDrop::AfterWindow {
                mc_group_id: 0,
                fcnt: 201
            })
        );
        assert_eq!(
            reconstruct_fcnt(0, &group(0, u32::MAX, Some(u32::MAX)), 0),
            Err(MulticastDrop::AfterWindow {
                mc_group_id: 0,
                fcnt: 1 << 32
            })
        );
    }
}
