//! The state record the node keeps through [`crate::SessionStore`]: its byte format
//! (magic and format version, fields, CRC-32) and the Rust value it stands for.
//!
//! Kept: the multicast groups (keys, FCnt window, last accepted FCnt at the time of the
//! last save), the Class C session, the fragmentation session (setup, decoder sizing,
//! journal epoch, progress, pending FragDataBlockReceivedReq), the last accepted TS004
//! SessionCnt, and what the download slot holds. Not kept: the clock (it is re-learnt
//! after a reboot), pending answers and reboot schedules (the server repeats its
//! requests), and the received fragments themselves (they are in the journal, see
//! `fragment_store`).
//!
//! A record that fails its checks is reported and ignored: the node starts empty rather
//! than trust it.

use lorawan_fuota::codec::firmware_management::UpgradeImageStatus;
use lorawan_fuota::codec::fragmentation::{FragSessionSetup, SessionSetupV2};
use lorawan_fuota::codec::multicast_setup::MAX_GROUPS;
use lorawan_fuota::codec::PackageVersion;
use lorawan_fuota::crypto::Key128;

use crate::fragment_store::SlotContent;
use crate::fragmentation::{MicCheck, SessionPhase, SessionRecord};
use crate::multicast::{ClassCSession, McGroup};
use crate::platform::STATE_RECORD_MAX_LEN;

/// Magic and format version at the start of the record.
const MAGIC: [u8; 4] = *b"FNS\x02";

/// Everything the node persists in its state record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PersistedState {
    /// Highest TS004 v2 SessionCnt accepted (replay protection), if any.
    pub last_session_cnt: Option<u16>,
    /// Counts accepted fragmentation setups; tags journal records (mod 4).
    pub session_generation: u8,
    /// Multicast groups by McGroupID.
    pub groups: [Option<McGroup>; MAX_GROUPS],
    /// The Class C session, if one is scheduled or running.
    pub class_c: Option<ClassCSession>,
    /// The fragmentation session, if one exists.
    pub fragmentation: Option<SessionRecord>,
    /// What the download slot holds.
    pub slot: SlotContent,
    /// TS006 version of the image handed to the bootloader, until the node has seen
    /// what became of it (see `update`).
    pub handed_over: Option<u32>,
}

/// Why a state record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRecordError {
    /// It ends before its last field.
    Truncated,
    /// It does not start with this format's magic and version.
    UnknownFormat,
    /// Its CRC-32 does not match (torn or corrupted write).
    BadChecksum,
    /// A field holds a value this format does not define.
    InvalidField(&'static str),
}

pub(crate) use lorawan_fuota::checksum::crc32;

struct RecordWriter {
    bytes: heapless::Vec<u8, STATE_RECORD_MAX_LEN>,
    overflow: bool,
}

impl RecordWriter {
    fn bytes(&mut self, data: &[u8]) {
        if self.bytes.extend_from_slice(data).is_err() {
            self.overflow = true;
        }
    }
    fn u8(&mut self, value: u8) {
        self.bytes(&[value]);
    }
    fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }
    fn u16(&mut self, value: u16) {
        self.bytes(&value.to_le_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }
}

struct RecordReader<'a> {
    bytes: &'a [u8],
}

impl<'a> RecordReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateRecordError> {
        if self.bytes.len() < n {
            return Err(StateRecordError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateRecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, StateRecordError> {
        Ok(self.array::<1>()?[0])
    }
    fn bool(&mut self, field: &'static str) -> Result<bool, StateRecordError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(StateRecordError::InvalidField(field)),
        }
    }
    fn u16(&mut self) -> Result<u16, StateRecordError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, StateRecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
}

impl PersistedState {
    /// The record bytes (at most [`STATE_RECORD_MAX_LEN`]; `None` if it would not fit,
    /// which the format's field sizes rule out).
    pub fn encode(&self) -> Option<heapless::Vec<u8, STATE_RECORD_MAX_LEN>> {
        let mut w = RecordWriter {
            bytes: heapless::Vec::new(),
            overflow: false,
        };
        w.bytes(&MAGIC);
        w.bool(self.last_session_cnt.is_some());
        w.u16(self.last_session_cnt.unwrap_or(0));
        w.u8(self.session_generation);
        let mut present = 0u8;
        for (id, group) in self.groups.iter().enumerate() {
            if group.is_some() {
                present |= 1 << id;
            }
        }
        w.u8(present);
        for group in self.groups.iter().flatten() {
            w.u32(group.mc_addr);
            w.bytes(group.app_s_key.as_bytes());
            w.bytes(group.nwk_s_key.as_bytes());
            w.u32(group.min_fcnt);
            w.u32(group.max_fcnt);
            w.bool(group.last_fcnt.is_some());
            w.u32(group.last_fcnt.unwrap_or(0));
        }
        w.bool(self.class_c.is_some());
        if let Some(session) = &self.class_c {
            w.u8(session.mc_group_id);
            w.u32(session.session_time);
            w.u8(session.time_out);
            w.u32(session.frequency_hz);
            w.u8(session.data_rate);
        }
        w.bool(self.fragmentation.is_some());
        if let Some(record) = &self.fragmentation {
            encode_session(&mut w, record);
        }
        match self.slot {
            SlotContent::Empty => w.u8(0),
            SlotContent::Partial => w.u8(1),
            SlotContent::Complete {
                block_len,
                mic_failed,
            } => {
                w.u8(2);
                w.u32(block_len);
                w.bool(mic_failed);
            }
            SlotContent::OnTrial { block_len } => {
                w.u8(4);
                w.u32(block_len);
            }
            SlotContent::Refused { block_len, status } => {
                w.u8(3);
                w.u32(block_len);
                w.u8(status.code());
            }
        }
        w.bool(self.handed_over.is_some());
        w.u32(self.handed_over.unwrap_or(0));
        let crc = crc32(&w.bytes);
        w.u32(crc);
        (!w.overflow).then_some(w.bytes)
    }

    /// The state a record stands for.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateRecordError> {
        if bytes.len() < MAGIC.len() + 4 {
            return Err(StateRecordError::Truncated);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let mut r = RecordReader { bytes: body };
        if r.array::<4>()? != MAGIC {
            return Err(StateRecordError::UnknownFormat);
        }
        let mut crc_bytes = [0u8; 4];
        crc_bytes.copy_from_slice(crc);
        if crc32(body) != u32::from_le_bytes(crc_bytes) {
            return Err(StateRecordError::BadChecksum);
        }
        let has_cnt = r.bool("last SessionCnt flag")?;
        let cnt = r.u16()?;
        let mut state = PersistedState {
            last_session_cnt: has_cnt.then_some(cnt),
            session_generation: r.u8()?,
            ..PersistedState::default()
        };
        let present = r.u8()?;
        for (id, slot) in state.groups.iter_mut().enumerate() {
            if present & (1 << id) == 0 {
                continue;
            }
            let mc_addr = r.u32()?;
            let app_s_key = Key128::from_bytes(r.array()?);
            let nwk_s_key = Key128::from_bytes(r.array()?);
            let min_fcnt = r.u32()?;
            let max_fcnt = r.u32()?;
            let has_last = r.bool("last FCnt flag")?;
            let last = r.u32()?;
            *slot = Some(McGroup {
                mc_addr,
                app_s_key,
                nwk_s_key,
                min_fcnt,
                max_fcnt,
                last_fcnt: has_last.then_some(last),
            });
        }
        if r.bool("Class C flag")? {
            state.class_c = Some(ClassCSession {
                mc_group_id: r.u8()? & 0x03,
                session_time: r.u32()?,
                time_out: r.u8()? & 0x0F,
                frequency_hz: r.u32()?,
                data_rate: r.u8()?,
                started: false,
            });
        }
        if r.bool("fragmentation session flag")? {
            state.fragmentation = Some(decode_session(&mut r)?);
        }
        state.slot = match r.u8()? {
            0 => SlotContent::Empty,
            1 => SlotContent::Partial,
            2 => SlotContent::Complete {
                block_len: r.u32()?,
                mic_failed: r.bool("MIC failed flag")?,
            },
            3 => SlotContent::Refused {
                block_len: r.u32()?,
                status: match r.u8()? {
                    0 => UpgradeImageStatus::NoImage,
                    1 => UpgradeImageStatus::CorruptOrBadSignature,
                    2 => UpgradeImageStatus::WrongHardware,
                    _ => return Err(StateRecordError::InvalidField("refused image status")),
                },
            },
            4 => SlotContent::OnTrial {
                block_len: r.u32()?,
            },
            _ => return Err(StateRecordError::InvalidField("slot content")),
        };
        let has_handed_over = r.bool("handed-over flag")?;
        let handed_over = r.u32()?;
        state.handed_over = has_handed_over.then_some(handed_over);
        if !r.bytes.is_empty() {
            return Err(StateRecordError::InvalidField("trailing bytes"));
        }
        Ok(state)
    }
}

fn encode_session(w: &mut RecordWriter, record: &SessionRecord) {
    let setup = &record.setup;
    w.u8(record.version.number());
    w.u8(setup.frag_index);
    w.u8(setup.mc_group_bit_mask);
    w.u16(setup.nb_frag);
    w.u8(setup.frag_size);
    w.u8(setup.frag_algo);
    w.u8(setup.block_ack_delay);
    w.u8(setup.padding);
    w.bytes(&setup.descriptor);
    w.bool(setup.v2.is_some());
    let v2 = setup.v2.unwrap_or(SessionSetupV2 {
        ack_reception: false,
        session_cnt: 0,
        mic: [0; 4],
    });
    w.bool(v2.ack_reception);
    w.u16(v2.session_cnt);
    w.bytes(&v2.mic);
    w.u16(record.max_lost);
    w.u8(record.epoch);
    w.bool(record.slot_prepared);
    w.u8(match record.phase {
        SessionPhase::Receiving => 0,
        SessionPhase::Complete(MicCheck::NotApplicable) => 1,
        SessionPhase::Complete(MicCheck::Passed) => 2,
        SessionPhase::Complete(MicCheck::Failed) => 3,
    });
    w.bool(record.block_received_pending);
}

fn decode_session(r: &mut RecordReader<'_>) -> Result<SessionRecord, StateRecordError> {
    let version = PackageVersion::from_number(r.u8()?)
        .ok_or(StateRecordError::InvalidField("TS004 version"))?;
    let frag_index = r.u8()? & 0x03;
    let mc_group_bit_mask = r.u8()? & 0x0F;
    let nb_frag = r.u16()?;
    let frag_size = r.u8()?;
    let frag_algo = r.u8()? & 0x07;
    let block_ack_delay = r.u8()? & 0x07;
    let padding = r.u8()?;
    let descriptor = r.array()?;
    let has_v2 = r.bool("v2 setup flag")?;
    let v2 = SessionSetupV2 {
        ack_reception: r.bool("AckReception")?,
        session_cnt: r.u16()?,
        mic: r.array()?,
    };
    let setup = FragSessionSetup {
        frag_index,
        mc_group_bit_mask,
        nb_frag,
        frag_size,
        frag_algo,
        block_ack_delay,
        padding,
        descriptor,
        v2: has_v2.then_some(v2),
    };
    if setup.block_size().is_err() {
        return Err(StateRecordError::InvalidField("fragmentation setup"));
    }
    Ok(SessionRecord {
        version,
        setup,
        max_lost: r.u16()?,
        epoch: r.u8()? & 0x03,
        slot_prepared: r.bool("slot prepared flag")?,
        phase: match r.u8()? {
            0 => SessionPhase::Receiving,
            1 => SessionPhase::Complete(MicCheck::NotApplicable),
            2 => SessionPhase::Complete(MicCheck::Passed),
            3 => SessionPhase::Complete(MicCheck::Failed),
            _ => return Err(StateRecordError::InvalidField("session phase")),
        },
        block_received_pending: r.bool("FragDataBlockReceivedReq pending flag")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_state() -> PersistedState {
        let group = McGroup {
            mc_addr: 0x2601_1234,
            app_s_key: Key128::from_bytes([1; 16]),
            nwk_s_key: Key128::from_bytes([2; 16]),
            min_fcnt: 0,
            max_fcnt: u32::MAX,
            last_fcnt: Some(77),
        };
        let setup = FragSessionSetup {
            frag_index: 0,
            mc_group_bit_mask: 0b0101,
            nb_frag: 2000,
            frag_size: 50,
            frag_algo: 0,
            block_ack_delay: 3,
            padding: 7,
            descriptor: [1, 2, 3, 4],
            v2: Some(SessionSetupV2 {
                ack_reception: true,
                session_cnt: 9,
                mic: [9, 8, 7, 6],
            }),
        };
        PersistedState {
            last_session_cnt: Some(9),
            session_generation: 5,
            groups: [Some(group.clone()), None, Some(group), None],
            class_c: Some(ClassCSession {
                mc_group_id: 2,
                session_time: 1_436_486_418,
                time_out: 8,
                frequency_hz: 869_525_000,
                data_rate: 3,
                started: false,
            }),
            fragmentation: Some(SessionRecord {
                version: PackageVersion::V2,
                setup,
                max_lost: 400,
                epoch: 1,
                slot_prepared: true,
                phase: SessionPhase::Complete(MicCheck::Failed),
                block_received_pending: true,
            }),
            slot: SlotContent::Complete {
                block_len: 99_993,
                mic_failed: true,
            },
            handed_over: Some(0x0102_0304),
        }
    }

    #[test]
    fn a_full_record_round_trips_within_the_limit() {
        let state = full_state();
        let bytes = state.encode().expect("fits");
        assert!(bytes.len() <= STATE_RECORD_MAX_LEN);
        assert_eq!(PersistedState::decode(&bytes), Ok(state));
        let empty = PersistedState::default();
        assert_eq!(
            PersistedState::decode(&empty.encode().expect("fits")),
            Ok(empty)
        );
        let refused = PersistedState {
            slot: SlotContent::Refused {
                block_len: 1234,
                status: UpgradeImageStatus::WrongHardware,
            },
            ..PersistedState::default()
        };
        assert_eq!(
            PersistedState::decode(&refused.encode().expect("fits")),
            Ok(refused)
        );
    }

    #[test]
    fn damaged_records_are_refused() {
        let bytes = full_state().encode().expect("fits");
        for cut in 0..bytes.len() {
            assert!(
                PersistedState::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 0x10;
        assert_eq!(
            PersistedState::decode(&flipped),
            Err(StateRecordError::BadChecksum)
        );
        let mut other_version = bytes;
        other_version[3] = 1; // the previous format, without the handed-over image
        assert_eq!(
            PersistedState::decode(&other_version),
            Err(StateRecordError::UnknownFormat)
        );
    }
}
