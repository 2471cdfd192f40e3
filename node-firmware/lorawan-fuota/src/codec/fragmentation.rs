//! TS004 fragmented data block transport (FPort 201, PackageIdentifier 3, versions 1 and 2).
//!
//! Reference: `applayer.md` §3.1–3.6, §3.9 and §7 item 2. FragSessionStatusReq and
//! DataFragment may arrive on a multicast address; everything else is unicast. Layouts
//! (bit fields high → low; RFU bits written 0 and ignored on receive):
//!
//! | CID | Downlink (server → device) | Uplink (device → server) |
//! |---|---|---|
//! | 0x00 | PackageVersionReq: — | PackageVersionAns: id, version |
//! | 0x01 | FragSessionStatusReq: [RFU:5 FragIndex:2 Participants:1] | FragSessionStatusAns v1: u16 [FragIndex:2 NbFragReceived:14] · MissingFrag(1) · [RFU:7 NotEnoughMatrixMemory:1] |
//! | | | FragSessionStatusAns v2: [RFU:5 SessionDoesNotExist:1 MICError:1 MemoryError:1] · (u16 [FragIndex:2 NbFragReceived:14] · MissingFrag(1)) |
//! | 0x02 | FragSessionSetupReq: [RFU:2 FragIndex:2 McGroupBitMask:4] · NbFrag(u16) · FragSize(1) · Control(1) · Padding(1) · Descriptor(4) · v2: SessionCnt(u16) · MIC(4) | FragSessionSetupAns: [FragIndex:2 RFU:1 SessionCntReplay(v2):1 WrongDescriptor:1 FragIndexUnsupported:1 NotEnoughMemory:1 FragAlgoUnsupported:1] |
//! | 0x03 | FragSessionDeleteReq: [RFU:6 FragIndex:2] | FragSessionDeleteAns: [RFU:5 SessionDoesNotExist:1 FragIndex:2] |
//! | 0x04 | v2 only: FragDataBlockReceivedAns: [RFU:6 FragIndex:2] | v2 only: FragDataBlockReceivedReq: [RFU:5 MICError:1 FragIndex:2] |
//! | 0x08 | DataFragment: u16 [FragIndex:2 N:14] · fragment bytes (rest of the frame) | — |
//!
//! Control byte: v1 `[RFU:2 FragmentationMatrix:3 BlockAckDelay:3]`, v2 `[RFU:1
//! AckReception:1 FragAlgo:3 BlockAckDelay:3]`.
//!
//! Version handling: the decoders key on the negotiated version (v1 and v2 status answers
//! are distinct variants, the v2 setup fields are an `Option`, CID 0x04 is unknown in v1).
//! Tolerance (reference §7 item 2): a v2 status answer with SessionDoesNotExist is 1 byte
//! by the spec, but ChirpStack lrwn and LoRa Basics Modem send 4; the 3 extra bytes are
//! taken when exactly 3 bytes remain (and are not a TS004 PackageVersionAns) or the next
//! 3 bytes are all zero, and kept so
//! re-encoding reproduces them.

use core::fmt;

use super::{
    check_bits, Command, DecodeError, EncodeError, Package, PackageVersion, PackageVersionAns,
    Reader, Writer,
};

const CID_PACKAGE_VERSION: u8 = 0x00;
const CID_FRAG_SESSION_STATUS: u8 = 0x01;
const CID_FRAG_SESSION_SETUP: u8 = 0x02;
const CID_FRAG_SESSION_DELETE: u8 = 0x03;
const CID_FRAG_DATA_BLOCK_RECEIVED: u8 = 0x04;
const CID_DATA_FRAGMENT: u8 = 0x08;

/// Largest fragment counter N (14 bits); also the largest NbFragReceived.
pub const MAX_FRAGMENT_NUMBER: u16 = 0x3FFF;
/// Payload bytes of a v1 FragSessionSetupReq.
pub const SETUP_V1_LENGTH: usize = 10;
/// Payload bytes of a v2 FragSessionSetupReq.
pub const SETUP_V2_LENGTH: usize = 16;

/// Upper bound, in seconds, of the random delay before answers that many devices send
/// at once: 2^(BlockAckDelay + 4), i.e. 16 s … 2048 s. `None` when `block_ack_delay`
/// does not fit its 3-bit field.
pub const fn block_ack_delay_seconds(block_ack_delay: u8) -> Option<u32> {
    if block_ack_delay > 7 {
        None
    } else {
        Some(1 << (block_ack_delay + 4))
    }
}

/// Why a session's data-block size cannot be computed; see [`FragSessionSetup::block_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockSizeError {
    /// NbFrag is 0: the session carries no fragment.
    NoFragments,
    /// FragSize is 0.
    ZeroFragmentSize,
    /// Padding is not smaller than FragSize: the last fragment would carry no data.
    PaddingTooLarge {
        /// Padding.
        padding: u8,
        /// FragSize.
        frag_size: u8,
    },
}

impl fmt::Display for BlockSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BlockSizeError::NoFragments => f.write_str("NbFrag is 0: the session has no fragment"),
            BlockSizeError::ZeroFragmentSize => f.write_str("FragSize is 0"),
            BlockSizeError::PaddingTooLarge { padding, frag_size } => write!(
                f,
                "Padding {padding} is not smaller than FragSize {frag_size}"
            ),
        }
    }
}

impl core::error::Error for BlockSizeError {}

/// The fields FragSessionSetupReq adds in v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionSetupV2 {
    /// Control bit 6 AckReception: the device sends FragDataBlockReceivedReq once the
    /// block is complete.
    pub ack_reception: bool,
    /// SessionCnt: must grow with every new session of a device (replay protection).
    pub session_cnt: u16,
    /// MIC of the unpadded data block (see `crypto`), as sent.
    pub mic: [u8; 4],
}

/// FragSessionSetupReq contents. `v2` decides the layout: `None` = the 10-byte v1
/// request, `Some` = the 16-byte v2 request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragSessionSetup {
    /// FragIndex (0..=3).
    pub frag_index: u8,
    /// McGroupBitMask (4 bits): bit n = fragments may come from multicast group n.
    pub mc_group_bit_mask: u8,
    /// NbFrag: number of uncoded fragments M.
    pub nb_frag: u16,
    /// FragSize: bytes per fragment.
    pub frag_size: u8,
    /// FragAlgo (v2) / FragmentationMatrix (v1), 3 bits; 0 = the TS004 parity code.
    pub frag_algo: u8,
    /// BlockAckDelay (0..=7); see [`block_ack_delay_seconds`].
    pub block_ack_delay: u8,
    /// Padding: bytes appended to the data block to fill the last fragment.
    pub padding: u8,
    /// Descriptor: 4 application-defined bytes.
    pub descriptor: [u8; 4],
    /// The v2-only fields; `None` for a v1 request.
    pub v2: Option<SessionSetupV2>,
}

impl FragSessionSetup {
    /// Size of the data block: NbFrag × FragSize − Padding.
    pub fn block_size(&self) -> Result<u32, BlockSizeError> {
        if self.nb_frag == 0 {
            return Err(BlockSizeError::NoFragments);
        }
        if self.frag_size == 0 {
            return Err(BlockSizeError::ZeroFragmentSize);
        }
        if self.padding >= self.frag_size {
            return Err(BlockSizeError::PaddingTooLarge {
                padding: self.padding,
                frag_size: self.frag_size,
            });
        }
        Ok(u32::from(self.nb_frag) * u32::from(self.frag_size) - u32::from(self.padding))
    }

    /// Upper bound of the random answer delay; see [`block_ack_delay_seconds`].
    pub fn max_answer_delay_seconds(&self) -> Option<u32> {
        block_ack_delay_seconds(self.block_ack_delay)
    }

    fn decode(r: &mut Reader<'_>, version: PackageVersion) -> Result<Self, DecodeError> {
        r.require(match version {
            PackageVersion::V1 => SETUP_V1_LENGTH,
            PackageVersion::V2 => SETUP_V2_LENGTH,
        })?;
        let frag_session = r.u8()?;
        let nb_frag = r.u16_le()?;
        let frag_size = r.u8()?;
        let control = r.u8()?;
        let padding = r.u8()?;
        let descriptor = r.array()?;
        let v2 = match version {
            PackageVersion::V1 => None,
            PackageVersion::V2 => Some(SessionSetupV2 {
                ack_reception: control & 0x40 != 0,
                session_cnt: r.u16_le()?,
                mic: r.array()?,
            }),
        };
        Ok(FragSessionSetup {
            frag_index: (frag_session >> 4) & 0x03,
            mc_group_bit_mask: frag_session & 0x0F,
            nb_frag,
            frag_size,
            frag_algo: (control >> 3) & 0x07,
            block_ack_delay: control & 0x07,
            padding,
            descriptor,
            v2,
        })
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        check_bits(self.frag_index.into(), 2, "FragIndex")?;
        check_bits(self.mc_group_bit_mask.into(), 4, "McGroupBitMask")?;
        check_bits(self.frag_algo.into(), 3, "FragAlgo")?;
        check_bits(self.block_ack_delay.into(), 3, "BlockAckDelay")?;
        let ack_reception = self.v2.is_some_and(|v2| v2.ack_reception);
        w.u8(self.frag_index << 4 | self.mc_group_bit_mask)?;
        w.u16_le(self.nb_frag)?;
        w.u8(self.frag_size)?;
        w.u8(u8::from(ack_reception) << 6 | self.frag_algo << 3 | self.block_ack_delay)?;
        w.u8(self.padding)?;
        w.bytes(&self.descriptor)?;
        if let Some(v2) = self.v2 {
            w.u16_le(v2.session_cnt)?;
            w.bytes(&v2.mic)?;
        }
        Ok(())
    }
}

/// Progress of a fragmentation session, as reported in FragSessionStatusAns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReceptionStatus {
    /// FragIndex (0..=3).
    pub frag_index: u8,
    /// NbFragReceived (14 bits): fragments received so far (devices differ on what they
    /// count; treat as indicative).
    pub nb_frag_received: u16,
    /// MissingFrag: uncoded fragments still missing (saturated at 255 by the device).
    pub missing_frag: u8,
}

impl ReceptionStatus {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let received_and_index = r.u16_le()?;
        Ok(ReceptionStatus {
            frag_index: (received_and_index >> 14) as u8,
            nb_frag_received: received_and_index & MAX_FRAGMENT_NUMBER,
            missing_frag: r.u8()?,
        })
    }

    fn check(&self) -> Result<(), EncodeError> {
        check_bits(self.frag_index.into(), 2, "FragIndex")?;
        check_bits(self.nb_frag_received.into(), 14, "NbFragReceived")
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        self.check()?;
        w.u16_le(u16::from(self.frag_index) << 14 | self.nb_frag_received)?;
        w.u8(self.missing_frag)
    }
}

/// Server → device commands. The lifetime is that of the received frame:
/// [`Downlink::DataFragment`] borrows its fragment bytes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Downlink<'a> {
    /// PackageVersionReq.
    PackageVersionReq,
    /// FragSessionStatusReq (unicast or multicast).
    FragSessionStatusReq {
        /// FragIndex (0..=3).
        frag_index: u8,
        /// Participants: `true` = every device answers, `false` = only devices still
        /// missing fragments.
        participants_all: bool,
    },
    /// FragSessionSetupReq (v1 or v2 layout, decided by [`FragSessionSetup::v2`]).
    FragSessionSetupReq(FragSessionSetup),
    /// FragSessionDeleteReq.
    FragSessionDeleteReq {
        /// FragIndex (0..=3).
        frag_index: u8,
    },
    /// FragDataBlockReceivedAns (v2 only): acknowledges FragDataBlockReceivedReq.
    FragDataBlockReceivedAns {
        /// FragIndex (0..=3), echoing the request.
        frag_index: u8,
    },
    /// DataFragment: one fragment; it takes the rest of the frame.
    DataFragment {
        /// FragIndex (0..=3).
        frag_index: u8,
        /// Fragment counter N (1..=16383): N ≤ NbFrag is uncoded fragment N, larger N
        /// is a coded fragment.
        fragment_number: u16,
        /// The fragment bytes (FragSize of them in a well-formed session).
        data: &'a [u8],
    },
}

/// Device → server commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Uplink {
    /// PackageVersionAns.
    PackageVersionAns(PackageVersionAns),
    /// FragSessionStatusAns in the v1 layout (4 bytes).
    FragSessionStatusAnsV1 {
        /// Received&Index and MissingFrag.
        reception: ReceptionStatus,
        /// Status bit 0 NotEnoughMatrixMemory.
        not_enough_matrix_memory: bool,
    },
    /// FragSessionStatusAns in the v2 layout (status first; 1 or 4 bytes).
    FragSessionStatusAnsV2 {
        /// Status bit 0 MemoryError.
        memory_error: bool,
        /// Status bit 1 MICError (meaningful once MissingFrag is 0).
        mic_error: bool,
        /// Status bit 2 SessionDoesNotExist.
        session_does_not_exist: bool,
        /// Received&Index and MissingFrag: always present when the session exists;
        /// with SessionDoesNotExist, present only if the device sent the 4-byte form.
        reception: Option<ReceptionStatus>,
    },
    /// FragSessionSetupAns: the setup was accepted when every error flag is false.
    FragSessionSetupAns {
        /// FragIndex (0..=3).
        frag_index: u8,
        /// Bit 0: FragAlgo (v1 FragmentationMatrix) unsupported.
        frag_algo_unsupported: bool,
        /// Bit 1: not enough memory.
        not_enough_memory: bool,
        /// Bit 2: FragIndex unsupported.
        frag_index_unsupported: bool,
        /// Bit 3: wrong Descriptor.
        wrong_descriptor: bool,
        /// Bit 4 (v2 only, RFU in v1): SessionCnt replay.
        session_cnt_replay: bool,
    },
    /// FragSessionDeleteAns.
    FragSessionDeleteAns {
        /// FragIndex (0..=3).
        frag_index: u8,
        /// Bit 2 SessionDoesNotExist.
        session_does_not_exist: bool,
    },
    /// FragDataBlockReceivedReq (v2 only): the block was rebuilt.
    FragDataBlockReceivedReq {
        /// FragIndex (0..=3).
        frag_index: u8,
        /// Bit 2 MICError: the rebuilt block failed its MIC and will not be used.
        mic_error: bool,
    },
}

impl<'a> Command<'a> for Downlink<'a> {
    const PACKAGE: Package = Package::Fragmentation;

    fn decode(r: &mut Reader<'a>, version: PackageVersion) -> Result<Self, DecodeError> {
        Ok(match r.begin_command()? {
            CID_PACKAGE_VERSION => Downlink::PackageVersionReq,
            CID_FRAG_SESSION_STATUS => {
                let request = r.u8()?;
                Downlink::FragSessionStatusReq {
                    frag_index: (request >> 1) & 0x03,
                    participants_all: request & 0x01 != 0,
                }
            }
            CID_FRAG_SESSION_SETUP => {
                Downlink::FragSessionSetupReq(FragSessionSetup::decode(r, version)?)
            }
            CID_FRAG_SESSION_DELETE => Downlink::FragSessionDeleteReq {
                frag_index: r.u8()? & 0x03,
            },
            CID_FRAG_DATA_BLOCK_RECEIVED if version == PackageVersion::V2 => {
                Downlink::FragDataBlockReceivedAns {
                    frag_index: r.u8()? & 0x03,
                }
            }
            CID_DATA_FRAGMENT => {
                let index_and_n = r.u16_le()?;
                let fragment_number = index_and_n & MAX_FRAGMENT_NUMBER;
                if fragment_number == 0 {
                    return Err(r.invalid("N", "fragment counter 0 (N counts from 1)"));
                }
                Downlink::DataFragment {
                    frag_index: (index_and_n >> 14) as u8,
                    fragment_number,
                    data: r.rest(),
                }
            }
            _ => return Err(r.unknown_cid()),
        })
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match *self {
            Downlink::PackageVersionReq => w.u8(CID_PACKAGE_VERSION),
            Downlink::FragSessionStatusReq {
                frag_index,
                participants_all,
            } => {
                check_bits(frag_index.into(), 2, "FragIndex")?;
                w.u8(CID_FRAG_SESSION_STATUS)?;
                w.u8(frag_index << 1 | u8::from(participants_all))
            }
            Downlink::FragSessionSetupReq(setup) => {
                w.u8(CID_FRAG_SESSION_SETUP)?;
                setup.encode(w)
            }
            Downlink::FragSessionDeleteReq { frag_index } => {
                check_bits(frag_index.into(), 2, "FragIndex")?;
                w.u8(CID_FRAG_SESSION_DELETE)?;
                w.u8(frag_index)
            }
            Downlink::FragDataBlockReceivedAns { frag_index } => {
                check_bits(frag_index.into(), 2, "FragIndex")?;
                w.u8(CID_FRAG_DATA_BLOCK_RECEIVED)?;
                w.u8(frag_index)
            }
            Downlink::DataFragment {
                frag_index,
                fragment_number,
                data,
            } => {
                check_bits(frag_index.into(), 2, "FragIndex")?;
                if fragment_number == 0 {
                    return Err(EncodeError::InvalidField {
                        field: "N",
                        reason: "fragment counter 0 (N counts from 1)",
                    });
                }
                check_bits(fragment_number.into(), 14, "N")?;
                w.u8(CID_DATA_FRAGMENT)?;
                w.u16_le(u16::from(frag_index) << 14 | fragment_number)?;
                w.bytes(data)
            }
        }
    }
}

fn decode_status_answer_v2(r: &mut Reader<'_>) -> Result<Uplink, DecodeError> {
    let status = r.u8()?;
    let session_does_not_exist = status & 0x04 != 0;
    let reception = if !session_does_not_exist
        || r.optional_tail_of_3_remains()
        || r.peek(3) == Some(&[0, 0, 0][..])
    {
        Some(ReceptionStatus::decode(r)?)
    } else {
        None
    };
    Ok(Uplink::FragSessionStatusAnsV2 {
        memory_error: status & 0x01 != 0,
        mic_error: status & 0x02 != 0,
        session_does_not_exist,
        reception,
    })
}

impl Command<'_> for Uplink {
    const PACKAGE: Package = Package::Fragmentation;

    fn decode(r: &mut Reader<'_>, version: PackageVersion) -> Result<Self, DecodeError> {
        Ok(match r.begin_command()? {
            CID_PACKAGE_VERSION => Uplink::PackageVersionAns(PackageVersionAns::decode(r)?),
            CID_FRAG_SESSION_STATUS => match version {
                PackageVersion::V1 => {
                    r.require(4)?;
                    let reception = ReceptionStatus::decode(r)?;
                    Uplink::FragSessionStatusAnsV1 {
                        reception,
                        not_enough_matrix_memory: r.u8()? & 0x01 != 0,
                    }
                }
                PackageVersion::V2 => decode_status_answer_v2(r)?,
            },
            CID_FRAG_SESSION_SETUP => {
                let status = r.u8()?;
                Uplink::FragSessionSetupAns {
                    frag_index: status >> 6,
                    frag_algo_unsupported: status & 0x01 != 0,
                    not_enough_memory: status & 0x02 != 0,
                    frag_index_unsupported: status & 0x04 != 0,
                    wrong_descriptor: status & 0x08 != 0,
                    session_cnt_replay: version == PackageVersion::V2 && status & 0x10 != 0,
                }
            }
            CID_FRAG_SESSION_DELETE => {
                let status = r.u8()?;
                Uplink::FragSessionDeleteAns {
                    frag_index: status & 0x03,
                    session_does_not_exist: status & 0x04 != 0,
                }
            }
            CID_FRAG_DATA_BLOCK_RECEIVED if version == PackageVersion::V2 => {
                let status = r.u8()?;
                Uplink::FragDataBlockReceivedReq {
                    frag_index: status & 0x03,
                    mic_error: status & 0x04 != 0,
                }
            }
            _ => return Err(r.unknown_cid()),
        })
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match *self {
            Uplink::PackageVersionAns(answer) => {
                w.u8(CID_PACKAGE_VERSION)?;
                answer.encode(w)
            }
            Uplink::FragSessionStatusAnsV1 {
                reception,
                not_enough_matrix_memory,
            } => {
                reception.check()?;
                w.u8(CID_FRAG_SESSION_STATUS)?;
                reception.encode(w)?;
                w.u8(u8::from(not_enough_matrix_memory))
            }
            Uplink::FragSessionStatusAnsV2 {
                memory_error,
                mic_error,
                session_does_not_exist,
                reception,
            } => {
                match reception {
                    Some(reception) => reception.check()?,
                    None if !session_does_not_exist => {
                        return Err(EncodeError::InvalidField {
                            field: "Received&Index",
                            reason: "required unless SessionDoesNotExist is set",
                        })
                    }
                    None => {}
                }
                w.u8(CID_FRAG_SESSION_STATUS)?;
                w.u8(u8::from(session_does_not_exist) << 2
                    | u8::from(mic_error) << 1
                    | u8::from(memory_error))?;
                match reception {
                    Some(reception) => reception.encode(w),
                    None => Ok(()),
                }
            }
            Uplink::FragSessionSetupAns {
                frag_index,
                frag_algo_unsupported,
                not_enough_memory,
                frag_index_unsupported,
                wrong_descriptor,
                session_cnt_replay,
            } => {
                check_bits(frag_index.into(), 2, "FragIndex")?;
                w.u8(CID_FRAG_SESSION_SETUP)?;
                w.u8(frag_index << 6
                    | u8::from(session_cnt_replay) << 4
                    | u8::from(wrong_descriptor) << 3
                    | u8::from(frag_index_unsupported) << 2
                    | u8::from(not_enough_memory) << 1
                    | u8::from(frag_algo_unsupported))
            }
            Uplink::FragSessionDeleteAns {
                frag_index,
                session_does_not_exist,
            } => {
                check_bits(frag_index.into(), 2, "FragIndex")?;
                w.u8(CID_FRAG_SESSION_DELETE)?;
                w.u8(u8::from(session_does_not_exist) << 2 | frag_index)
            }
            Uplink::FragDataBlockReceivedReq {
                frag_index,
                mic_error,
            } => {
                check_bits(frag_index.into(), 2, "FragIndex")?;
                w.u8(CID_FRAG_DATA_BLOCK_RECEIVED)?;
                w.u8(u8::from(mic_error) << 2 | frag_index)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_all;

    const V1: PackageVersion = PackageVersion::V1;
    const V2: PackageVersion = PackageVersion::V2;

    fn setup(v2: Option<SessionSetupV2>) -> FragSessionSetup {
        FragSessionSetup {
            frag_index: 1,
            mc_group_bit_mask: 0b0001,
            nb_frag: 10,
            frag_size: 10,
            frag_algo: 0,
            block_ack_delay: 1,
            padding: 0,
            descriptor: [1, 2, 3, 4],
            v2,
        }
    }

    #[test]
    fn rfu_bits_are_ignored() {
        assert_eq!(
            Downlink::decode_single(&[0x01, 0xF8 | 0x05], V1),
            Ok(Downlink::FragSessionStatusReq {
                frag_index: 2,
                participants_all: true
            })
        );
        assert_eq!(
            Downlink::decode_single(&[0x03, 0xFE], V2),
            Ok(Downlink::FragSessionDeleteReq { frag_index: 2 })
        );
        // Setup: FragSession bits 7:6 RFU, Control bits 7:6 RFU in v1 (bit 6 is
        // AckReception in v2, bit 7 RFU).
        let bytes = [0x02, 0xD1, 10, 0, 10, 0xC1, 0, 1, 2, 3, 4];
        assert_eq!(
            Downlink::decode_single(&bytes, V1),
            Ok(Downlink::FragSessionSetupReq(setup(None)))
        );
        // v1 setup answer bit 4 and bit 5 are RFU; v2 bit 4 is SessionCnt replay.
        assert_eq!(
            Uplink::decode_single(&[0x02, 0x70], V1),
            Ok(Uplink::FragSessionSetupAns {
                frag_index: 1,
                frag_algo_unsupported: false,
                not_enough_memory: false,
                frag_index_unsupported: false,
                wrong_descriptor: false,
                session_cnt_replay: false
            })
        );
        assert!(matches!(
            Uplink::decode_single(&[0x02, 0x70], V2),
            Ok(Uplink::FragSessionSetupAns {
                session_cnt_replay: true,
                ..
            })
        ));
        assert_eq!(
            Uplink::decode_single(&[0x01, 0x00, 0x00, 0x00, 0xFE], V1),
            Ok(Uplink::FragSessionStatusAnsV1 {
                reception: ReceptionStatus {
                    frag_index: 0,
                    nb_frag_received: 0,
                    missing_frag: 0
                },
                not_enough_matrix_memory: false
            })
        );
        assert_eq!(
            Uplink::decode_single(&[0x01, 0xFC], V2),
            Ok(Uplink::FragSessionStatusAnsV2 {
                memory_error: false,
                mic_error: false,
                session_does_not_exist: true,
                reception: None
            })
        );
    }

    #[test]
    fn truncation_names_the_cid_and_the_full_length() {
        assert_eq!(
            Downlink::decode_single(&[0x02, 0x00, 0x01], V2),
            Err(DecodeError::Truncated {
                package: Package::Fragmentation,
                cid: 0x02,
                needed: SETUP_V2_LENGTH,
                available: 2
            })
        );
        // A complete v1 request is a truncated v2 request.
        let v1_bytes = [
            0x02, 0x31, 0x00, 0x04, 0x80, 0x0D, 0x40, 0x01, 0x02, 0x03, 0x04,
        ];
        assert!(Downlink::decode_single(&v1_bytes, V1).is_ok());
        assert!(matches!(
            Downlink::decode_single(&v1_bytes, V2),
            Err(DecodeError::Truncated {
                cid: 0x02,
                needed: 16,
                available: 10,
                ..
            })
        ));
        assert!(matches!(
            Uplink::decode_single(&[0x01, 0x00, 0xC4], V1),
            Err(DecodeError::Truncated {
                cid: 0x01,
                needed: 4,
                ..
            })
        ));
        assert!(matches!(
            Uplink::decode_single(&[0x01, 0x00, 0x0C], V2),
            Err(DecodeError::Truncated { cid: 0x01, .. })
        ));
        assert!(matches!(
            Downlink::decode_single(&[0x08, 0x01], V1),
            Err(DecodeError::Truncated { cid: 0x08, .. })
        ));
    }

    #[test]
    fn cid_4_exists_only_in_v2_and_unknown_cids_stop_decoding() {
        assert_eq!(
            Uplink::decode_single(&[0x04, 0x06], V1),
            Err(DecodeError::UnknownCid {
                package: Package::Fragmentation,
                cid: 0x04
            })
        );
        assert!(matches!(
            Downlink::decode_single(&[0x04, 0x02], V1),
            Err(DecodeError::UnknownCid { cid: 0x04, .. })
        ));
        assert_eq!(
            Downlink::decode_single(&[0x04, 0x02], V2),
            Ok(Downlink::FragDataBlockReceivedAns { frag_index: 2 })
        );
        // DataFragment is downlink only.
        assert!(matches!(
            Uplink::decode_single(&[0x08, 0x01, 0x00], V2),
            Err(DecodeError::UnknownCid { cid: 0x08, .. })
        ));
        let mut commands = decode_all::<Uplink>(&[0x03, 0x07, 0x09, 0x00, 0x03, 0x02], V2);
        assert!(matches!(commands.next(), Some(Ok(_))));
        assert!(matches!(
            commands.next(),
            Some(Err(DecodeError::UnknownCid { cid: 0x09, .. }))
        ));
        assert_eq!(commands.next(), None);
    }

    #[test]
    fn data_fragment_takes_the_rest_and_refuses_counter_0() {
        let frame = [0x08, 0x05, 0x40, 0xAA, 0xBB];
        assert_eq!(
            Downlink::decode_single(&frame, V1),
            Ok(Downlink::DataFragment {
                frag_index: 1,
                fragment_number: 5,
                data: &[0xAA, 0xBB]
            })
        );
        assert_eq!(
            Downlink::decode_single(&[0x08, 0x00, 0xC0, 0x01], V2),
            Err(DecodeError::InvalidField {
                package: Package::Fragmentation,
                cid: 0x08,
                field: "N",
                reason: "fragment counter 0 (N counts from 1)"
            })
        );
        let mut out = [0u8; 8];
        for fragment_number in [0, MAX_FRAGMENT_NUMBER + 1] {
            let fragment = Downlink::DataFragment {
                frag_index: 0,
                fragment_number,
                data: &[],
            };
            assert!(matches!(
                fragment.encode_to(&mut out),
                Err(EncodeError::InvalidField { field: "N", .. })
            ));
        }
    }

    #[test]
    fn v2_status_answer_short_form_does_not_swallow_the_next_command() {
        // `01 04` then FragSessionDeleteAns `03 07` then FragSessionSetupAns `02 40`.
        let frame = [0x01, 0x04, 0x03, 0x07, 0x02, 0x40];
        let mut commands = decode_all::<Uplink>(&frame, V2);
        assert_eq!(
            commands.next(),
            Some(Ok(Uplink::FragSessionStatusAnsV2 {
                memory_error: false,
                mic_error: false,
                session_does_not_exist: true,
                reception: None
            }))
        );
        assert!(matches!(
            commands.next(),
            Some(Ok(Uplink::FragSessionDeleteAns { .. }))
        ));
        assert!(matches!(
            commands.next(),
            Some(Ok(Uplink::FragSessionSetupAns { .. }))
        ));
        assert_eq!(commands.next(), None);
        // LBM's zero-filled 4-byte form in the middle of a frame.
        let frame = [0x01, 0x04, 0x00, 0x00, 0x00, 0x03, 0x07];
        let mut commands = decode_all::<Uplink>(&frame, V2);
        assert!(matches!(
            commands.next(),
            Some(Ok(Uplink::FragSessionStatusAnsV2 {
                reception: Some(_),
                ..
            }))
        ));
        assert!(matches!(
            commands.next(),
            Some(Ok(Uplink::FragSessionDeleteAns { .. }))
        ));
    }

    #[test]
    fn encoders_refuse_out_of_range_fields() {
        let mut out = [0u8; 32];
        let mut wide = setup(None);
        wide.mc_group_bit_mask = 0x10;
        assert!(matches!(
            Downlink::FragSessionSetupReq(wide).encode_to(&mut out),
            Err(EncodeError::InvalidField {
                field: "McGroupBitMask",
                ..
            })
        ));
        let status = Uplink::FragSessionStatusAnsV1 {
            reception: ReceptionStatus {
                frag_index: 0,
                nb_frag_received: MAX_FRAGMENT_NUMBER + 1,
                missing_frag: 0,
            },
            not_enough_matrix_memory: false,
        };
        assert!(matches!(
            status.encode_to(&mut out),
            Err(EncodeError::InvalidField {
                field: "NbFragReceived",
                ..
            })
        ));
        let missing = Uplink::FragSessionStatusAnsV2 {
            memory_error: false,
            mic_error: false,
            session_does_not_exist: false,
            reception: None,
        };
        assert!(matches!(
            missing.encode_to(&mut out),
            Err(EncodeError::InvalidField { .. })
        ));
    }

    #[test]
    fn block_size_and_delay_helpers() {
        assert_eq!(setup(None).block_size(), Ok(100));
        let mut padded = setup(None);
        padded.padding = 9;
        assert_eq!(padded.block_size(), Ok(91));
        padded.padding = 10;
        assert_eq!(
            padded.block_size(),
            Err(BlockSizeError::PaddingTooLarge {
                padding: 10,
                frag_size: 10
            })
        );
        padded.nb_frag = 0;
        assert_eq!(padded.block_size(), Err(BlockSizeError::NoFragments));
        padded.nb_frag = 1;
        padded.frag_size = 0;
        assert_eq!(padded.block_size(), Err(BlockSizeError::ZeroFragmentSize));
        let mut largest = setup(None);
        largest.nb_frag = u16::MAX;
        largest.frag_size = u8::MAX;
        assert_eq!(largest.block_size(), Ok(65_535 * 255));
        assert_eq!(block_ack_delay_seconds(0), Some(16));
        assert_eq!(block_ack_delay_seconds(1), Some(32));
        assert_eq!(block_ack_delay_seconds(7), Some(2048));
        assert_eq!(block_ack_delay_seconds(8), None);
        assert_eq!(setup(None).max_answer_delay_seconds(), Some(32));
    }
}
