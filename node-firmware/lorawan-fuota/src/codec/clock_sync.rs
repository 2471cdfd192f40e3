//! TS003 application layer clock synchronization (FPort 202, PackageIdentifier 1).
//!
//! Reference: `applayer.md` §1. Versions 1 and 2 share the wire format, so the decoders
//! ignore the version; what v2 changed is the server's rule for over-range corrections,
//! implemented by [`time_correction`]. All commands are unicast. Layouts (bit fields
//! high → low, RFU bits written 0 and ignored on receive):
//!
//! | CID | Downlink (server → device) | Uplink (device → server) |
//! |---|---|---|
//! | 0x00 | PackageVersionReq: — | PackageVersionAns: id, version |
//! | 0x01 | AppTimeAns: TimeCorrection(i32) · [RFU:4 TokenAns:4] | AppTimeReq: DeviceTime(u32) · [RFU:3 AnsRequired:1 TokenReq:4] |
//! | 0x02 | DeviceAppTimePeriodicityReq: [RFU:4 Period:4] | DeviceAppTimePeriodicityAns: [RFU:7 NotSupported:1] · DeviceTime(u32) |
//! | 0x03 | ForceDeviceResyncReq (v1) / ForceDeviceResyncCmd (v2): [RFU:5 NbTransmissions:3] | — (no answer) |

use super::{
    check_bits, Command, DecodeError, EncodeError, Package, PackageVersion, PackageVersionAns,
    Reader, Writer,
};

const CID_PACKAGE_VERSION: u8 = 0x00;
const CID_APP_TIME: u8 = 0x01;
const CID_DEVICE_APP_TIME_PERIODICITY: u8 = 0x02;
const CID_FORCE_DEVICE_RESYNC: u8 = 0x03;

/// Largest TokenReq / TokenAns value (4-bit rolling token).
pub const MAX_TOKEN: u8 = 15;
/// Largest DeviceAppTimePeriodicityReq Period (4 bits): one AppTimeReq every
/// 128 × 2^15 s.
pub const MAX_PERIOD: u8 = 15;
/// Largest ForceDeviceResync NbTransmissions (3 bits).
pub const MAX_NB_TRANSMISSIONS: u8 = 7;

/// Server → device commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Downlink {
    /// PackageVersionReq.
    PackageVersionReq,
    /// AppTimeAns: the correction to add to the device clock, echoing the request's
    /// token.
    AppTimeAns {
        /// TimeCorrection, seconds (two's complement); see [`time_correction`].
        time_correction: i32,
        /// TokenAns (0..=15): the TokenReq of the AppTimeReq being answered.
        token: u8,
    },
    /// DeviceAppTimePeriodicityReq: send AppTimeReq every 128 × 2^`period` seconds.
    DeviceAppTimePeriodicityReq {
        /// Period (0..=15).
        period: u8,
    },
    /// ForceDeviceResyncReq (v1) / ForceDeviceResyncCmd (v2): start a resynchronisation
    /// with up to `nb_transmissions` AppTimeReq uplinks. Has no answer.
    ForceDeviceResync {
        /// NbTransmissions (0..=7).
        nb_transmissions: u8,
    },
}

/// Device → server commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Uplink {
    /// PackageVersionAns.
    PackageVersionAns(PackageVersionAns),
    /// AppTimeReq: the device's idea of the GPS time when it sent this uplink.
    AppTimeReq {
        /// DeviceTime: GPS seconds modulo 2^32.
        device_time: u32,
        /// AnsRequired: the device wants an answer even if its clock is right.
        ans_required: bool,
        /// TokenReq (0..=15), to be echoed in AppTimeAns.
        token: u8,
    },
    /// DeviceAppTimePeriodicityAns.
    DeviceAppTimePeriodicityAns {
        /// NotSupported: the device manages its own periodicity and refused the value.
        not_supported: bool,
        /// DeviceTime: GPS seconds modulo 2^32 when the answer was sent.
        device_time: u32,
    },
}

impl Command<'_> for Downlink {
    const PACKAGE: Package = Package::ClockSync;

    fn decode(r: &mut Reader<'_>, _version: PackageVersion) -> Result<Self, DecodeError> {
        Ok(match r.begin_command()? {
            CID_PACKAGE_VERSION => Downlink::PackageVersionReq,
            CID_APP_TIME => {
                r.require(5)?;
                let time_correction = i32::from_le_bytes(r.array()?);
                let param = r.u8()?;
                Downlink::AppTimeAns {
                    time_correction,
                    token: param & 0x0F,
                }
            }
            CID_DEVICE_APP_TIME_PERIODICITY => Downlink::DeviceAppTimePeriodicityReq {
                period: r.u8()? & 0x0F,
            },
            CID_FORCE_DEVICE_RESYNC => Downlink::ForceDeviceResync {
                nb_transmissions: r.u8()? & 0x07,
            },
            _ => return Err(r.unknown_cid()),
        })
    }

    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match *self {
            Downlink::PackageVersionReq => w.u8(CID_PACKAGE_VERSION),
            Downlink::AppTimeAns {
                time_correction,
                token,
            } => {
                check_bits(token.into(), 4, "TokenAns")?;
                w.u8(CID_APP_TIME)?;
                w.bytes(&time_correction.to_le_bytes())?;
                w.u8(token)
            }
            Downlink::DeviceAppTimePeriodicityReq { period } => {
                check_bits(period.into(), 4, "Period")?;
                w.u8(CID_DEVICE_APP_TIME_PERIODICITY)?;
                w.u8(period)
            }
            Downlink::ForceDeviceResync { nb_transmissions } => {
                check_bits(nb_transmissions.into(), 3, "NbTransmissions")?;
                w.u8(CID_FORCE_DEVICE_RESYNC)?;
                w.u8(nb_transmissions)
            }
        }
    }
}

impl Command<'_> for Uplink {
    const PACKAGE: Package = Package::ClockSync;

    fn decode(r: &mut Reader<'_>, _version: PackageVersion) -> Result<Self, DecodeError> {
        Ok(match r.begin_command()? {
            CID_PACKAGE_VERSION => Uplink::PackageVersionAns(PackageVersionAns::decode(r)?),
            CID_APP_TIME => {
                r.require(5)?;
                let device_time = r.u32_le()?;
                let param = r.u8()?;
                Uplink::AppTimeReq {
                    device_time,
                    ans_required: param & 0x10 != 0,
                    token: param & 0x0F,
                }
            }
            CID_DEVICE_APP_TIME_PERIODICITY => {
                r.require(5)?;
                let status = r.u8()?;
                Uplink::DeviceAppTimePeriodicityAns {
                    not_supported: status & 0x01 != 0,
                    device_time: r.u32_le()?,
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
            Uplink::AppTimeReq {
                device_time,
                ans_required,
                token,
            } => {
                check_bits(token.into(), 4, "TokenReq")?;
                w.u8(CID_APP_TIME)?;
                w.u32_le(device_time)?;
                w.u8(u8::from(ans_required) << 4 | token)
            }
            Uplink::DeviceAppTimePeriodicityAns {
                not_supported,
                device_time,
            } => {
                w.u8(CID_DEVICE_APP_TIME_PERIODICITY)?;
                w.u8(u8::from(not_supported))?;
                w.u32_le(device_time)
            }
        }
    }
}

/// The TimeCorrection a server should send in AppTimeAns; see [`time_correction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeCorrection {
    /// TimeCorrection field value, seconds.
    pub seconds: i32,
    /// True when the v2 saturation rule clipped the value to `i32::MAX` / `i32::MIN`: the
    /// device applies it and immediately sends another AppTimeReq, which the server
    /// answers with the rest of the correction.
    pub saturated: bool,
}

/// Computes AppTimeAns's TimeCorrection for an AppTimeReq carrying `device_time`, received
/// by the network at `network_gps_seconds` (GPS seconds of the uplink's reception; only
/// its value modulo 2^32 matters, like every on-air time).
///
/// - v1: `network − device_time` in wrapping 32-bit arithmetic. Applied by the device
///   (also modulo 2^32) this always lands its clock on the network time.
/// - v2 (TS003-2.0.0): both times are taken as plain GPS seconds modulo 2^32 and the exact
///   difference is used if it fits an `i32`; otherwise it saturates to 0x7FFFFFFF or
///   0x80000000 and [`TimeCorrection::saturated`] is set, because the device will send a
///   new AppTimeReq to finish the correction. Spec example: DeviceTime 0 on 2050-01-01
///   needs +2208643200 → first 0x7FFFFFFF, then 0x03A53881.
///
/// Whether to answer at all is the caller's choice (the spec says SHOULD when AnsRequired
/// is set, MAY otherwise; ChirpStack answers when the correction is non-zero or
/// AnsRequired is set).
pub fn time_correction(
    network_gps_seconds: u64,
    device_time: u32,
    version: PackageVersion,
) -> TimeCorrection {
    // Truncation is the point: on-air times are GPS seconds modulo 2^32.
    let network = network_gps_seconds as u32;
    match version {
        PackageVersion::V1 => TimeCorrection {
            seconds: network.wrapping_sub(device_time) as i32,
            saturated: false,
        },
        PackageVersion::V2 => {
            let exact = i64::from(network) - i64::from(device_time);
            match i32::try_from(exact) {
                Ok(seconds) => TimeCorrection {
                    seconds,
                    saturated: false,
                },
                Err(_) => TimeCorrection {
                    seconds: if exact > 0 { i32::MAX } else { i32::MIN },
                    saturated: true,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfu_bits_are_ignored_on_receive() {
        assert_eq!(
            Uplink::decode_single(&[0x01, 0x00, 0x04, 0x00, 0x00, 0xEF], PackageVersion::V1),
            Ok(Uplink::AppTimeReq {
                device_time: 1024,
                ans_required: false,
                token: 15
            })
        );
        assert_eq!(
            Uplink::decode_single(&[0x02, 0xFE, 0, 0, 0, 0], PackageVersion::V2),
            Ok(Uplink::DeviceAppTimePeriodicityAns {
                not_supported: false,
                device_time: 0
            })
        );
        assert_eq!(
            Downlink::decode_single(&[0x01, 0, 0, 0, 0, 0xF3], PackageVersion::V1),
            Ok(Downlink::AppTimeAns {
                time_correction: 0,
                token: 3
            })
        );
        assert_eq!(
            Downlink::decode_single(&[0x02, 0xF5], PackageVersion::V1),
            Ok(Downlink::DeviceAppTimePeriodicityReq { period: 5 })
        );
        assert_eq!(
            Downlink::decode_single(&[0x03, 0xFB], PackageVersion::V2),
            Ok(Downlink::ForceDeviceResync {
                nb_transmissions: 3
            })
        );
    }

    #[test]
    fn truncation_names_the_cid() {
        assert_eq!(
            Uplink::decode_single(&[0x01, 0x00, 0x04], PackageVersion::V1),
            Err(DecodeError::Truncated {
                package: Package::ClockSync,
                cid: 0x01,
                needed: 5,
                available: 2
            })
        );
        assert!(matches!(
            Downlink::decode_single(&[0x03], PackageVersion::V2),
            Err(DecodeError::Truncated { cid: 0x03, .. })
        ));
    }

    #[test]
    fn unknown_cids_are_reported_per_direction() {
        // 0x03 exists downlink only.
        assert_eq!(
            Uplink::decode_single(&[0x03, 0x07], PackageVersion::V1),
            Err(DecodeError::UnknownCid {
                package: Package::ClockSync,
                cid: 0x03
            })
        );
        assert!(matches!(
            Downlink::decode_single(&[0x04], PackageVersion::V2),
            Err(DecodeError::UnknownCid { cid: 0x04, .. })
        ));
    }

    #[test]
    fn out_of_range_bit_fields_are_refused() {
        let mut out = [0u8; 8];
        for command in [
            Downlink::AppTimeAns {
                time_correction: 0,
                token: 16,
            },
            Downlink::DeviceAppTimePeriodicityReq { period: 16 },
            Downlink::ForceDeviceResync {
                nb_transmissions: 8,
            },
        ] {
            assert!(matches!(
                command.encode_to(&mut out),
                Err(EncodeError::InvalidField { .. })
            ));
        }
        let request = Uplink::AppTimeReq {
            device_time: 0,
            ans_required: true,
            token: 16,
        };
        assert!(matches!(
            request.encode_to(&mut out),
            Err(EncodeError::InvalidField {
                field: "TokenReq",
                ..
            })
        ));
    }

    #[test]
    fn v2_saturates_and_asks_for_a_second_round() {
        // TS003-2.0.0 example: DeviceTime 0 on 2050-01-01 needs +2208643200.
        let network = 2_208_643_200u64;
        let first = time_correction(network, 0, PackageVersion::V2);
        assert_eq!(
            first,
            TimeCorrection {
                seconds: 0x7FFF_FFFF,
                saturated: true
            }
        );
        let second = time_correction(network, 0x7FFF_FFFF, PackageVersion::V2);
        assert_eq!(
            second,
            TimeCorrection {
                seconds: 0x03A5_3881,
                saturated: false
            }
        );
        let backwards = time_correction(0, 0x8000_0001, PackageVersion::V2);
        assert_eq!(backwards.seconds, i32::MIN);
        assert!(backwards.saturated);
    }

    #[test]
    fn v1_wraps_modulo_2_pow_32() {
        let correction = time_correction(2_208_643_200, 0, PackageVersion::V1);
        assert_eq!(correction.seconds as u32, 0x83A5_3880);
        assert!(!correction.saturated);
        // After the 2116 wrap the network value is reduced modulo 2^32 too.
        let after_wrap = time_correction((1u64 << 32) + 5, u32::MAX - 4, PackageVersion::V1);
        assert_eq!(after_wrap.seconds, 10);
        assert_eq!(time_correction(1234, 1234, PackageVersion::V2).seconds, 0);
    }
}
