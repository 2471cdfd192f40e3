//! TS005 remote multicast setup (FPort 200, PackageIdentifier 2, versions 1 and 2).
//!
//! Reference: `applayer.md` §2 and §7 items 1 and 4. All commands are unicast. Layouts
//! (bit fields high → low; RFU bits written 0 and ignored on receive):
//!
//! | CID | Downlink (request) | Uplink (answer) |
//! |---|---|---|
//! | 0x00 | PackageVersionReq: — | PackageVersionAns: id, version |
//! | 0x01 | McGroupStatusReq: [RFU:4 ReqGroupMask:4] | McGroupStatusAns: [RFU:1 NbTotalGroups:3 AnsGroupMask:4] · n × (McGroupID(1) McAddr(u32)) |
//! | 0x02 | McGroupSetupReq: [RFU:6 McGroupID:2] · McAddr(u32) · McKey_encrypted(16) · minMcFCnt(u32) · maxMcFCnt(u32) | McGroupSetupAns: [RFU:5 IDerror:1 McGroupID:2] |
//! | 0x03 | McGroupDeleteReq: [RFU:6 McGroupID:2] | McGroupDeleteAns: [RFU:5 McGroupUndefined:1 McGroupID:2] |
//! | 0x04 | McClassCSessionReq: [RFU:6 McGroupID:2] · SessionTime(u32) · [RFU:4 TimeOut:4] · DLFreq(u24) · DR(1) | McClassCSessionAns: status · (TimeToStart(u24)) |
//! | 0x05 | McClassBSessionReq: [RFU:6 McGroupID:2] · SessionTime(u32) · [RFU:1 Periodicity:3 TimeOut:4] · DLFreq(u24) · DR(1) | McClassBSessionAns: as 0x04 |
//!
//! Session answer status byte: v1 `[RFU:3 McGroupUndefined:1 FreqError:1 DRError:1
//! McGroupID:2]`, v2 `[ReservedErrors:2 StartMissed:1 McGroupUndefined:1 FreqError:1
//! DRError:1 McGroupID:2]`. TimeToStart follows only when no error bit and no StartMissed
//! is set. Tolerances (reference §7):
//!
//! - StartMissed (bit 5) is read in v1 as well, because LoRa Basics Modem sets it in its
//!   v1 package; v1's bits 7:6 stay RFU, v2's are errors whose value is kept.
//! - When the status says "no TimeToStart" but exactly 3 bytes remain in the frame, and
//!   they are not a TS005 PackageVersionAns, they are taken as a TimeToStart anyway (ChirpStack lrwn v2 sends and expects 4 bytes for a
//!   StartMissed-only answer) and kept in [`SessionAns::time_to_start`], so re-encoding
//!   gives the same bytes.
//!
//! DLFreq travels in units of 100 Hz; the structs hold Hz.

use super::{
    check_bits, Command, DecodeError, EncodeError, Package, PackageVersion, PackageVersionAns,
    Reader, Writer,
};

const CID_PACKAGE_VERSION: u8 = 0x00;
const CID_MC_GROUP_STATUS: u8 = 0x01;
const CID_MC_GROUP_SETUP: u8 = 0x02;
const CID_MC_GROUP_DELETE: u8 = 0x03;
const CID_MC_CLASS_C_SESSION: u8 = 0x04;
const CID_MC_CLASS_B_SESSION: u8 = 0x05;

/// Number of multicast groups a device can hold (McGroupID 0..=3).
pub const MAX_GROUPS: usize = 4;
/// Payload bytes of McGroupSetupReq.
pub const GROUP_SETUP_LENGTH: usize = 29;
/// Payload bytes of McClassCSessionReq and McClassBSessionReq.
pub const SESSION_REQUEST_LENGTH: usize = 10;
/// Unit of DLFreq on the wire, in Hz.
pub const FREQUENCY_STEP_HZ: u32 = 100;

/// Server → device commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Downlink {
    /// PackageVersionReq.
    PackageVersionReq,
    /// McGroupStatusReq: report the groups whose bit is set.
    McGroupStatusReq {
        /// ReqGroupMask (4 bits): bit n asks for group n.
        req_group_mask: u8,
    },
    /// McGroupSetupReq: create (or overwrite) a multicast group.
    McGroupSetupReq {
        /// McGroupID (0..=3).
        mc_group_id: u8,
        /// McAddr: the group's DevAddr.
        mc_addr: u32,
        /// McKey_encrypted: the group key encrypted for this device's McKEKey, as sent.
        mc_key_encrypted: [u8; 16],
        /// minMcFCnt: first multicast frame counter the server will use.
        min_mc_fcnt: u32,
        /// maxMcFCnt: last multicast frame counter the group may use.
        max_mc_fcnt: u32,
    },
    /// McGroupDeleteReq.
    McGroupDeleteReq {
        /// McGroupID (0..=3).
        mc_group_id: u8,
    },
    /// McClassCSessionReq: open a Class C window for a group.
    McClassCSessionReq {
        /// McGroupID (0..=3).
        mc_group_id: u8,
        /// SessionTime: GPS seconds (mod 2^32) at which the window opens.
        session_time: u32,
        /// TimeOut (0..=15): the session lasts at most 2^TimeOut seconds.
        time_out: u8,
        /// DLFreq in Hz (a multiple of 100 Hz below 2^24 × 100 Hz).
        dl_frequency_hz: u32,
        /// DR: data-rate index of the region.
        data_rate: u8,
    },
    /// McClassBSessionReq: open a Class B multicast session for a group.
    McClassBSessionReq {
        /// McGroupID (0..=3).
        mc_group_id: u8,
        /// SessionTime: GPS seconds (mod 2^32); v2 requires a multiple of 128.
        session_time: u32,
        /// TimeOut (0..=15): the session lasts at most 128 × 2^TimeOut seconds.
        time_out: u8,
        /// Periodicity (0..=7): one ping slot every 2^Periodicity seconds.
        periodicity: u8,
        /// DLFreq in Hz (multiple of 100 Hz); v2: 0 = the region's default ping-slot
        /// frequency.
        dl_frequency_hz: u32,
        /// DR: data-rate index of the region.
        data_rate: u8,
    },
}

/// McGroupStatusAns contents.
///
/// The listed groups are kept indexed by McGroupID, so AnsGroupMask is implied: bit n is
/// set exactly when `mc_addr[n]` is `Some`, and the entries travel in increasing
/// McGroupID order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct McGroupStatus {
    /// NbTotalGroups (0..=4): groups currently defined on the device.
    pub nb_total_groups: u8,
    /// McAddr of each listed group, by McGroupID; `None` = not listed in this answer.
    pub mc_addr: [Option<u32>; MAX_GROUPS],
}

impl McGroupStatus {
    /// AnsGroupMask: bit n set when group n is listed.
    pub fn ans_group_mask(&self) -> u8 {
        let mut mask = 0;
        for (id, addr) in self.mc_addr.iter().enumerate() {
            if addr.is_some() {
                mask |= 1 << id;
            }
        }
        mask
    }

    /// The listed `(McGroupID, McAddr)` pairs in increasing McGroupID order.
    pub fn entries(&self) -> impl Iterator<Item = (u8, u32)> + '_ {
        (0u8..)
            .zip(self.mc_addr.iter())
            .filter_map(|(id, addr)| addr.map(|addr| (id, addr)))
    }
}

/// McClassCSessionAns / McClassBSessionAns contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionAns {
    /// McGroupID (0..=3).
    pub mc_group_id: u8,
    /// Bit 2 DRError: the data rate is not defined.
    pub dr_error: bool,
    /// Bit 3 FreqError: the frequency cannot be used.
    pub freq_error: bool,
    /// Bit 4 McGroupUndefined: the group does not exist.
    pub mc_group_undefined: bool,
    /// Bit 5 StartMissed (v2, and LoRa Basics Modem's v1): SessionTime is already past by
    /// the device's clock.
    pub start_missed: bool,
    /// Bits 7:6, v2 "reserved for future errors" (0..=3); any set bit is an error. Always
    /// 0 when decoded as v1, where these bits are RFU.
    pub reserved_errors: u8,
    /// TimeToStart (24 bits): seconds from the answer's uplink to SessionTime. Present
    /// when the session was accepted; also kept when a device sent the 3 bytes despite a
    /// status that makes them optional (see the module doc).
    pub time_to_start: Option<u32>,
}

impl SessionAns {
    /// True when any error bit is set (DRError, FreqError, McGroupUndefined or a v2
    /// reserved error bit).
    pub fn has_error(&self) -> bool {
        self.dr_error || self.freq_error || self.mc_group_undefined || self.reserved_errors != 0
    }

    /// True when the device accepted the session and it has not started yet: no error bit
    /// and no StartMissed.
    pub fn accepted(&self) -> bool {
        !self.has_error() && !self.start_missed
    }

    fn status_byte(&self) -> Result<u8, EncodeError> {
        check_bits(self.mc_group_id.into(), 2, "McGroupID")?;
        check_bits(self.reserved_errors.into(), 2, "ReservedErrors")?;
        Ok(self.reserved_errors << 6
            | u8::from(self.start_missed) << 5
            | u8::from(self.mc_group_undefined) << 4
            | u8::from(self.freq_error) << 3
            | u8::from(self.dr_error) << 2
            | self.mc_group_id)
    }

    fn decode(r: &mut Reader<'_>, version: PackageVersion) -> Result<Self, DecodeError> {
        let status = r.u8()?;
        let mut answer = SessionAns {
            mc_group_id: status & 0x03,
            dr_error: status & 0x04 != 0,
            freq_error: status & 0x08 != 0,
            mc_group_undefined: status & 0x10 != 0,
            start_missed: status & 0x20 != 0,
            reserved_errors: match version {
                PackageVersion::V1 => 0,
                PackageVersion::V2 => status >> 6,
            },
            time_to_start: None,
        };
        if answer.accepted() || r.optional_tail_of_3_remains() {
            answer.time_to_start = Some(r.u24_le()?);
        }
        Ok(answer)
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let status = self.status_byte()?;
        match self.time_to_start {
            Some(time_to_start) => check_bits(time_to_start, 24, "TimeToStart")?,
            None if self.accepted() => {
                return Err(EncodeError::InvalidField {
                    field: "TimeToStart",
                    reason: "required when the session is accepted (no error, no StartMissed)",
                })
            }
            None => {}
        }
        w.u8(status)?;
        match self.time_to_start {
            Some(time_to_start) => w.u24_le(time_to_start, "TimeToStart"),
            None => Ok(()),
        }
    }
}

/// Device → server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Uplink {
    /// PackageVersionAns.
    PackageVersionAns(PackageVersionAns),
    /// McGroupStatusAns.
    McGroupStatusAns(McGroupStatus),
    /// McGroupSetupAns.
    McGroupSetupAns {
        /// McGroupID (0..=3).
        mc_group_id: u8,
        /// Bit 2 IDerror: the device does not support this McGroupID.
        id_error: bool,
    },
    /// McGroupDeleteAns.
    McGroupDeleteAns {
        /// McGroupID (0..=3).
        mc_group_id: u8,
        /// Bit 2 McGroupUndefined: the group did not exist.
        mc_group_undefined: bool,
    },
    /// McClassCSessionAns.
    McClassCSessionAns(SessionAns),
    /// McClassBSessionAns.
    McClassBSessionAns(SessionAns),
}

/// Converts a frequency in Hz to DLFreq units, refusing what the field cannot carry.
fn frequency_to_wire(frequency_hz: u32) -> Result<u32, EncodeError> {
    if !frequency_hz.is_multiple_of(FREQUENCY_STEP_HZ) {
        return Err(EncodeError::InvalidField {
            field: "DLFreq",
            reason: "frequency is not a multiple of 100 Hz",
        });
    }
    Ok(frequency_hz / FREQUENCY_STEP_HZ)
}

/// Reads DLFreq and converts it to Hz (a 24-bit value times 100 always fits a u32).
fn read_frequency(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    Ok(r.u24_le()? * FREQUENCY_STEP_HZ)
}

impl Command<'_> for Downlink {
    const PACKAGE: Package = Package::MulticastSetup;

    fn decode(r: &mut Reader<'_>, _version: PackageVersion) -> Result<Self, DecodeError> {
        Ok(match r.begin_command()? {
            CID_PACKAGE_VERSION => Downlink::PackageVersionReq,
            CID_MC_GROUP_STATUS => Downlink::McGroupStatusReq {
                req_group_mask: r.u8()? & 0x0F,
            },
            CID_MC_GROUP_SETUP => {
                r.require(GROUP_SETUP_LENGTH)?;
                Downlink::McGroupSetupReq {
                    mc_group_id: r.u8()? & 0x03,
                    mc_addr: r.u32_le()?,
                    mc_key_encrypted: r.array()?,
                    min_mc_fcnt: r.u32_le()?,
                    max_mc_fcnt: r.u32_le()?,
                }
            }
            CID_MC_GROUP_DELETE => Downlink::McGroupDeleteReq {
                mc_group_id: r.u8()? & 0x03,
            },
            CID_MC_CLASS_C_SESSION => {
                r.require(SESSION_REQUEST_LENGTH)?;
                Downlink::McClassCSessionReq {
                    mc_group_id: r.u8()? & 0x03,
                    session_time: r.u32_le()?,
                    time_out: r.u8()? & 0x0F,
                    dl_frequency_hz: read_frequency(r)?,
                    data_rate: r.u8()?,
                }
            }
            CID_MC_CLASS_B_SESSION => {
                r.require(SESSION_REQUEST_LENGTH)?;
                let mc_group_id = r.u8()? & 0x03;
                let session_time = r.u32_le()?;
                let time_out_periodicity = r.u8()?;
                Downlink::McClassBSessionReq {
                    mc_group_id,
                    session_time,
                    time_out: time_out_periodicity & 0x0F,
                    periodicity: (time_out_periodicity >> 4) & 0x07,
                    dl_frequency_hz: read_frequency(r)?,
                    data_rate: r.u8()?,
                }
            }
            _ => return Err(r.unknown_cid()),
        })
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match *self {
            Downlink::PackageVersionReq => w.u8(CID_PACKAGE_VERSION),
            Downlink::McGroupStatusReq { req_group_mask } => {
                check_bits(req_group_mask.into(), 4, "ReqGroupMask")?;
                w.u8(CID_MC_GROUP_STATUS)?;
                w.u8(req_group_mask)
            }
            Downlink::McGroupSetupReq {
                mc_group_id,
                mc_addr,
                mc_key_encrypted,
                min_mc_fcnt,
                max_mc_fcnt,
            } => {
                check_bits(mc_group_id.into(), 2, "McGroupID")?;
                w.u8(CID_MC_GROUP_SETUP)?;
                w.u8(mc_group_id)?;
                w.u32_le(mc_addr)?;
                w.bytes(&mc_key_encrypted)?;
                w.u32_le(min_mc_fcnt)?;
                w.u32_le(max_mc_fcnt)
            }
            Downlink::McGroupDeleteReq { mc_group_id } => {
                check_bits(mc_group_id.into(), 2, "McGroupID")?;
                w.u8(CID_MC_GROUP_DELETE)?;
                w.u8(mc_group_id)
            }
            Downlink::McClassCSessionReq {
                mc_group_id,
                session_time,
                time_out,
                dl_frequency_hz,
                data_rate,
            } => {
                check_bits(mc_group_id.into(), 2, "McGroupID")?;
                check_bits(time_out.into(), 4, "TimeOut")?;
                let frequency = frequency_to_wire(dl_frequency_hz)?;
                check_bits(frequency, 24, "DLFreq")?;
                w.u8(CID_MC_CLASS_C_SESSION)?;
                w.u8(mc_group_id)?;
                w.u32_le(session_time)?;
                w.u8(time_out)?;
                w.u24_le(frequency, "DLFreq")?;
                w.u8(data_rate)
            }
            Downlink::McClassBSessionReq {
                mc_group_id,
                session_time,
                time_out,
                periodicity,
                dl_frequency_hz,
                data_rate,
            } => {
                check_bits(mc_group_id.into(), 2, "McGroupID")?;
                check_bits(time_out.into(), 4, "TimeOut")?;
                check_bits(periodicity.into(), 3, "Periodicity")?;
                let frequency = frequency_to_wire(dl_frequency_hz)?;
                check_bits(frequency, 24, "DLFreq")?;
                w.u8(CID_MC_CLASS_B_SESSION)?;
                w.u8(mc_group_id)?;
                w.u32_le(session_time)?;
                w.u8(periodicity << 4 | time_out)?;
                w.u24_le(frequency, "DLFreq")?;
                w.u8(data_rate)
            }
        }
    }
}

fn decode_group_status(r: &mut Reader<'_>) -> Result<McGroupStatus, DecodeError> {
    let status = r.u8()?;
    let nb_total_groups = (status >> 4) & 0x07;
    if usize::from(nb_total_groups) > MAX_GROUPS {
        return Err(r.invalid("NbTotalGroups", "more than 4 groups"));
    }
    let mut mc_addr = [None; MAX_GROUPS];
    for (id, slot) in (0u8..).zip(mc_addr.iter_mut()) {
        if status & (1 << id) == 0 {
            continue;
        }
        if r.u8()? != id {
            return Err(r.invalid(
                "McGroupID",
                "entry does not match the next group of AnsGroupMask (increasing order)",
            ));
        }
        *slot = Some(r.u32_le()?);
    }
    Ok(McGroupStatus {
        nb_total_groups,
        mc_addr,
    })
}

impl Command<'_> for Uplink {
    const PACKAGE: Package = Package::MulticastSetup;

    fn decode(r: &mut Reader<'_>, version: PackageVersion) -> Result<Self, DecodeError> {
        Ok(match r.begin_command()? {
            CID_PACKAGE_VERSION => Uplink::PackageVersionAns(PackageVersionAns::decode(r)?),
            CID_MC_GROUP_STATUS => Uplink::McGroupStatusAns(decode_group_status(r)?),
            CID_MC_GROUP_SETUP => {
                let header = r.u8()?;
                Uplink::McGroupSetupAns {
                    mc_group_id: header & 0x03,
                    id_error: header & 0x04 != 0,
                }
            }
            CID_MC_GROUP_DELETE => {
                let header = r.u8()?;
                Uplink::McGroupDeleteAns {
                    mc_group_id: header & 0x03,
                    mc_group_undefined: header & 0x04 != 0,
                }
            }
            CID_MC_CLASS_C_SESSION => Uplink::McClassCSessionAns(SessionAns::decode(r, version)?),
            CID_MC_CLASS_B_SESSION => Uplink::McClassBSessionAns(SessionAns::decode(r, version)?),
            _ => return Err(r.unknown_cid()),
        })
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match *self {
            Uplink::PackageVersionAns(answer) => {
                w.u8(CID_PACKAGE_VERSION)?;
                answer.encode(w)
            }
            Uplink::McGroupStatusAns(status) => {
                if usize::from(status.nb_total_groups) > MAX_GROUPS {
                    return Err(EncodeError::InvalidField {
                        field: "NbTotalGroups",
                        reason: "more than 4 groups",
                    });
                }
                w.u8(CID_MC_GROUP_STATUS)?;
                w.u8(status.nb_total_groups << 4 | status.ans_group_mask())?;
                for (id, addr) in status.entries() {
                    w.u8(id)?;
                    w.u32_le(addr)?;
                }
                Ok(())
            }
            Uplink::McGroupSetupAns {
                mc_group_id,
                id_error,
            } => {
                check_bits(mc_group_id.into(), 2, "McGroupID")?;
                w.u8(CID_MC_GROUP_SETUP)?;
                w.u8(u8::from(id_error) << 2 | mc_group_id)
            }
            Uplink::McGroupDeleteAns {
                mc_group_id,
                mc_group_undefined,
            } => {
                check_bits(mc_group_id.into(), 2, "McGroupID")?;
                w.u8(CID_MC_GROUP_DELETE)?;
                w.u8(u8::from(mc_group_undefined) << 2 | mc_group_id)
            }
            Uplink::McClassCSessionAns(answer) => {
                w.u8(CID_MC_CLASS_C_SESSION)?;
                answer.encode(w)
            }
            Uplink::McClassBSessionAns(answer) => {
                w.u8(CID_MC_CLASS_B_SESSION)?;
                answer.encode(w)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: PackageVersion = PackageVersion::V1;
    const V2: PackageVersion = PackageVersion::V2;

    fn session(status: u8, time_to_start: Option<u32>) -> SessionAns {
        SessionAns {
            mc_group_id: status & 0x03,
            dr_error: status & 0x04 != 0,
            freq_error: status & 0x08 != 0,
            mc_group_undefined: status & 0x10 != 0,
            start_missed: status & 0x20 != 0,
            reserved_errors: status >> 6,
            time_to_start,
        }
    }

    #[test]
    fn rfu_bits_of_requests_and_answers_are_ignored() {
        assert_eq!(
            Downlink::decode_single(&[0x03, 0xFD], V1),
            Ok(Downlink::McGroupDeleteReq { mc_group_id: 1 })
        );
        assert_eq!(
            Downlink::decode_single(&[0x01, 0xF5], V2),
            Ok(Downlink::McGroupStatusReq { req_group_mask: 5 })
        );
        assert_eq!(
            Uplink::decode_single(&[0x02, 0xFA], V1),
            Ok(Uplink::McGroupSetupAns {
                mc_group_id: 2,
                id_error: false
            })
        );
        // Class B byte 5 bit 7 is RFU.
        let request = Downlink::decode_single(&[0x05, 0xFF, 0, 0, 0, 0, 0xCF, 0, 0, 0, 3], V1);
        assert_eq!(
            request,
            Ok(Downlink::McClassBSessionReq {
                mc_group_id: 3,
                session_time: 0,
                time_out: 15,
                periodicity: 4,
                dl_frequency_hz: 0,
                data_rate: 3
            })
        );
        // McGroupStatusAns bit 7 is RFU.
        assert_eq!(
            Uplink::decode_single(&[0x01, 0x80], V1),
            Ok(Uplink::McGroupStatusAns(McGroupStatus {
                nb_total_groups: 0,
                mc_addr: [None; 4]
            }))
        );
    }

    #[test]
    fn session_answer_bits_7_6_are_rfu_in_v1_and_errors_in_v2() {
        let bytes = [0x04, 0xC1, 0x10, 0x00, 0x00];
        assert_eq!(
            Uplink::decode_single(&bytes, V1),
            Ok(Uplink::McClassCSessionAns(session(0x01, Some(0x10))))
        );
        let v2 = Uplink::decode_single(&[0x04, 0xC1], V2);
        assert_eq!(v2, Ok(Uplink::McClassCSessionAns(session(0xC1, None))));
        if let Ok(Uplink::McClassCSessionAns(answer)) = v2 {
            assert!(answer.has_error());
            assert!(!answer.accepted());
        }
    }

    #[test]
    fn start_missed_is_read_in_both_versions_with_one_or_four_bytes() {
        for version in [V1, V2] {
            assert_eq!(
                Uplink::decode_single(&[0x05, 0x22], version),
                Ok(Uplink::McClassBSessionAns(session(0x22, None)))
            );
            // lrwn form: the 3 bytes follow anyway and are kept.
            assert_eq!(
                Uplink::decode_single(&[0x05, 0x22, 0, 0, 0], version),
                Ok(Uplink::McClassBSessionAns(session(0x22, Some(0))))
            );
        }
        // An error answer followed by another command: the next command is not swallowed.
        let frame = [0x04, 0x1E, 0x03, 0x07];
        let mut commands = super::super::decode_all::<Uplink>(&frame, V2);
        assert_eq!(
            commands.next(),
            Some(Ok(Uplink::McClassCSessionAns(session(0x1E, None))))
        );
        assert_eq!(
            commands.next(),
            Some(Ok(Uplink::McGroupDeleteAns {
                mc_group_id: 3,
                mc_group_undefined: true
            }))
        );
        assert_eq!(commands.next(), None);
    }

    #[test]
    fn truncation_names_the_cid() {
        assert_eq!(
            Uplink::decode_single(&[0x04, 0x02, 0x00], V1),
            Err(DecodeError::Truncated {
                package: Package::MulticastSetup,
                cid: 0x04,
                needed: 4,
                available: 2
            })
        );
        assert!(matches!(
            Downlink::decode_single(&[0x02, 0x00, 1, 2, 3, 4], V2),
            Err(DecodeError::Truncated { cid: 0x02, .. })
        ));
        assert!(matches!(
            Uplink::decode_single(&[0x01, 0x13, 0x00, 4, 3, 2], V2),
            Err(DecodeError::Truncated { cid: 0x01, .. })
        ));
    }

    #[test]
    fn unknown_cid_is_an_error() {
        assert_eq!(
            Uplink::decode_single(&[0x06, 0x00], V2),
            Err(DecodeError::UnknownCid {
                package: Package::MulticastSetup,
                cid: 0x06
            })
        );
        assert!(matches!(
            Downlink::decode_single(&[0xFF], V1),
            Err(DecodeError::UnknownCid { cid: 0xFF, .. })
        ));
    }

    #[test]
    fn group_status_entries_must_follow_the_mask() {
        // Mask 0b0011 but the first entry claims group 1.
        let swapped = [0x01, 0x23, 0x01, 4, 3, 2, 1, 0x00, 4, 3, 2, 2];
        assert!(matches!(
            Uplink::decode_single(&swapped, V1),
            Err(DecodeError::InvalidField {
                field: "McGroupID",
                ..
            })
        ));
        // NbTotalGroups = 5.
        assert!(matches!(
            Uplink::decode_single(&[0x01, 0x50], V2),
            Err(DecodeError::InvalidField {
                field: "NbTotalGroups",
                ..
            })
        ));
        let sparse = McGroupStatus {
            nb_total_groups: 4,
            mc_addr: [None, Some(0x0102_0304), None, Some(7)],
        };
        assert_eq!(sparse.ans_group_mask(), 0b1010);
        let mut out = [0u8; 16];
        let length = Uplink::McGroupStatusAns(sparse).encode_to(&mut out);
        assert_eq!(length, Ok(12));
        assert_eq!(out[..12], [0x01, 0x4A, 0x01, 4, 3, 2, 1, 0x03, 7, 0, 0, 0]);
    }

    #[test]
    fn encoders_refuse_what_the_fields_cannot_carry() {
        let mut out = [0u8; 32];
        let request = |dl_frequency_hz| Downlink::McClassCSessionReq {
            mc_group_id: 0,
            session_time: 0,
            time_out: 0,
            dl_frequency_hz,
            data_rate: 0,
        };
        assert!(matches!(
            request(868_100_050).encode_to(&mut out),
            Err(EncodeError::InvalidField {
                field: "DLFreq",
                ..
            })
        ));
        assert!(matches!(
            request(0x0100_0000 * 100).encode_to(&mut out),
            Err(EncodeError::InvalidField {
                field: "DLFreq",
                ..
            })
        ));
        assert_eq!(request(0x00FF_FFFF * 100).encode_to(&mut out), Ok(11));
        assert!(matches!(
            Downlink::McGroupDeleteReq { mc_group_id: 4 }.encode_to(&mut out),
            Err(EncodeError::InvalidField { .. })
        ));
        let accepted_without_time = Uplink::McClassCSessionAns(session(0x00, None));
        assert!(matches!(
            accepted_without_time.encode_to(&mut out),
            Err(EncodeError::InvalidField {
                field: "TimeToStart",
                ..
            })
        ));
        let too_late = Uplink::McClassCSessionAns(session(0x00, Some(1 << 24)));
        assert!(matches!(
            too_late.encode_to(&mut out),
            Err(EncodeError::InvalidField { .. })
        ));
    }
}

#[cfg(test)]
mod tail_tests {
    use super::*;
    use crate::codec::decode_all;

    #[test]
    fn a_trailing_package_version_answer_is_not_taken_for_time_to_start() {
        // StartMissed-only answer, then this package's PackageVersionAns.
        let frame = [0x04, 0x20, 0x00, 0x02, 0x02];
        let mut commands = decode_all::<Uplink>(&frame, PackageVersion::V2);
        let (first, second) = (commands.next(), commands.next());
        assert!(commands.next().is_none());
        match first.unwrap() {
            Ok(Uplink::McClassCSessionAns(answer)) => assert_eq!(answer.time_to_start, None),
            other => panic!("{other:?}"),
        }
        assert!(matches!(second, Some(Ok(Uplink::PackageVersionAns(_)))));
        // The lrwn 4-byte form is still accepted.
        let lrwn_form = Uplink::decode_single(&[0x04, 0x20, 0x00, 0x04, 0x00], PackageVersion::V2);
        assert!(matches!(
            lrwn_form,
            Ok(Uplink::McClassCSessionAns(SessionAns {
                time_to_start: Some(1024),
                ..
            }))
        ));
    }
}
