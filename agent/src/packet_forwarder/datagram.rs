//! Framing of the Semtech UDP protocol (GWMP v2, `PROTOCOL.TXT` of Semtech's packet
//! forwarder): reading the datagrams a gateway sends (PUSH_DATA, PULL_DATA, TX_ACK) and
//! writing the ones the server sends (PUSH_ACK, PULL_ACK, PULL_RESP).
//!
//! Only the 4- or 12-byte header is read here; the JSON bodies are parsed by
//! [`super::push_data`] and [`super::tx_ack`]. Every malformed datagram maps to a
//! [`DatagramRejection`] that says what was wrong, for counting and logging.

use std::fmt;

use semtech_udp::pull_resp;

use crate::identifiers::GatewayEui;

/// The protocol version this agent speaks (the one of `lora_pkt_fwd` 4.x and later).
pub const PROTOCOL_VERSION: u8 = 2;

const PUSH_DATA: u8 = 0x00;
const PUSH_ACK: u8 = 0x01;
const PULL_DATA: u8 = 0x02;
const PULL_RESP: u8 = 0x03;
const PULL_ACK: u8 = 0x04;
const TX_ACK: u8 = 0x05;

/// Version, token (2 bytes), identifier.
const HEADER_LENGTH: usize = 4;
/// Header plus the 8-byte gateway EUI.
const HEADER_WITH_EUI_LENGTH: usize = HEADER_LENGTH + 8;

/// A datagram sent by a gateway, with its header decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamDatagram<'a> {
    /// Received packets and/or status; `json` is the body (without a trailing NUL).
    PushData {
        /// Token to echo in the PUSH_ACK.
        token: u16,
        /// Sending gateway.
        gateway: GatewayEui,
        /// JSON body.
        json: &'a [u8],
    },
    /// Keep-alive that opens the downlink path.
    PullData {
        /// Token to echo in the PULL_ACK.
        token: u16,
        /// Sending gateway.
        gateway: GatewayEui,
    },
    /// The answer to a PULL_RESP; `json` may be empty (success).
    TxAck {
        /// The PULL_RESP's token.
        token: u16,
        /// Sending gateway.
        gateway: GatewayEui,
        /// JSON body, possibly empty.
        json: &'a [u8],
    },
}

impl UpstreamDatagram<'_> {
    /// The gateway that sent it.
    pub fn gateway(&self) -> GatewayEui {
        match self {
            UpstreamDatagram::PushData { gateway, .. }
            | UpstreamDatagram::PullData { gateway, .. }
            | UpstreamDatagram::TxAck { gateway, .. } => *gateway,
        }
    }
}

/// Why a datagram (or part of one) was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramRejection {
    /// Shorter than its header.
    Truncated {
        /// Bytes received.
        length: usize,
        /// Bytes the header needs.
        required: usize,
    },
    /// A protocol version other than 2.
    ProtocolVersion(u8),
    /// An identifier the protocol does not define.
    UnknownIdentifier(u8),
    /// A server-to-gateway datagram (PUSH_ACK, PULL_RESP, PULL_ACK) sent to the server.
    NotFromAGateway(&'static str),
    /// The JSON body is not what the protocol specifies.
    InvalidJson {
        /// `PUSH_DATA` or `TX_ACK`.
        datagram: &'static str,
        /// The parser's message.
        reason: String,
    },
}

impl fmt::Display for DatagramRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatagramRejection::Truncated { length, required } => {
                write!(
                    f,
                    "truncated datagram: {length} bytes, the header needs {required}"
                )
            }
            DatagramRejection::ProtocolVersion(version) => {
                write!(
                    f,
                    "unsupported protocol version {version} (expected {PROTOCOL_VERSION})"
                )
            }
            DatagramRejection::UnknownIdentifier(identifier) => {
                write!(f, "unknown datagram identifier 0x{identifier:02x}")
            }
            DatagramRejection::NotFromAGateway(name) => {
                write!(f, "{name} is sent by servers, not by gateways")
            }
            DatagramRejection::InvalidJson { datagram, reason } => {
                write!(f, "invalid {datagram} JSON: {reason}")
            }
        }
    }
}

/// Reads the header of a datagram received from a gateway.
pub fn parse_upstream(datagram: &[u8]) -> Result<UpstreamDatagram<'_>, DatagramRejection> {
    let [version, token_high, token_low, identifier, ..] = *datagram else {
        return Err(DatagramRejection::Truncated {
            length: datagram.len(),
            required: HEADER_LENGTH,
        });
    };
    if version != PROTOCOL_VERSION {
        return Err(DatagramRejection::ProtocolVersion(version));
    }
    let token = u16::from_be_bytes([token_high, token_low]);
    let with_gateway = || -> Result<(GatewayEui, &[u8]), DatagramRejection> {
        let eui_bytes = datagram
            .get(HEADER_LENGTH..HEADER_WITH_EUI_LENGTH)
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .ok_or(DatagramRejection::Truncated {
                length: datagram.len(),
                required: HEADER_WITH_EUI_LENGTH,
            })?;
        let body = &datagram[HEADER_WITH_EUI_LENGTH..];
        Ok((
            GatewayEui::from_bytes(eui_bytes),
            strip_nul_terminator(body),
        ))
    };
    match identifier {
        PUSH_DATA => {
            let (gateway, json) = with_gateway()?;
            Ok(UpstreamDatagram::PushData {
                token,
                gateway,
                json,
            })
        }
        PULL_DATA => {
            let (gateway, _) = with_gateway()?;
            Ok(UpstreamDatagram::PullData { token, gateway })
        }
        TX_ACK => {
            let (gateway, json) = with_gateway()?;
            Ok(UpstreamDatagram::TxAck {
                token,
                gateway,
                json,
            })
        }
        PUSH_ACK => Err(DatagramRejection::NotFromAGateway("PUSH_ACK")),
        PULL_RESP => Err(DatagramRejection::NotFromAGateway("PULL_RESP")),
        PULL_ACK => Err(DatagramRejection::NotFromAGateway("PULL_ACK")),
        other => Err(DatagramRejection::UnknownIdentifier(other)),
    }
}

/// Some packet forwarders end their JSON with a NUL byte.
fn strip_nul_terminator(body: &[u8]) -> &[u8] {
    body.strip_suffix(&[0]).unwrap_or(body)
}

/// The PUSH_ACK for a PUSH_DATA with `token`.
pub fn push_ack(token: u16) -> [u8; 4] {
    let [high, low] = token.to_be_bytes();
    [PROTOCOL_VERSION, high, low, PUSH_ACK]
}

/// The PULL_ACK for a PULL_DATA with `token`.
pub fn pull_ack(token: u16) -> [u8; 4] {
    let [high, low] = token.to_be_bytes();
    [PROTOCOL_VERSION, high, low, PULL_ACK]
}

/// A PULL_RESP carrying `txpk`, to be acknowledged by a TX_ACK with `token`.
pub fn pull_resp(token: u16, txpk: &pull_resp::TxPk) -> Result<Vec<u8>, serde_json::Error> {
    let [high, low] = token.to_be_bytes();
    let mut datagram = vec![PROTOCOL_VERSION, high, low, PULL_RESP];
    serde_json::to_writer(&mut datagram, &pull_resp::Data::from_txpk(txpk.clone()))?;
    Ok(datagram)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EUI: [u8; 8] = [0x00, 0x16, 0xc0, 0x01, 0xff, 0x10, 0xa2, 0x35];

    fn datagram(identifier: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![2, 0x12, 0x34, identifier];
        bytes.extend_from_slice(&EUI);
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn reads_each_upstream_datagram() {
        assert_eq!(
            parse_upstream(&datagram(PULL_DATA, b"")),
            Ok(UpstreamDatagram::PullData {
                token: 0x1234,
                gateway: GatewayEui::from_bytes(EUI)
            })
        );
        assert_eq!(
            parse_upstream(&datagram(PUSH_DATA, b"{}\0")),
            Ok(UpstreamDatagram::PushData {
                token: 0x1234,
                gateway: GatewayEui::from_bytes(EUI),
                json: b"{}"
            })
        );
        assert_eq!(
            parse_upstream(&datagram(TX_ACK, b"")),
            Ok(UpstreamDatagram::TxAck {
                token: 0x1234,
                gateway: GatewayEui::from_bytes(EUI),
                json: b""
            })
        );
    }

    #[test]
    fn rejects_what_is_not_an_upstream_datagram() {
        assert_eq!(
            parse_upstream(&[2, 0]),
            Err(DatagramRejection::Truncated {
                length: 2,
                required: 4
            })
        );
        assert_eq!(
            parse_upstream(&[2, 0, 0, PULL_DATA, 1, 2]),
            Err(DatagramRejection::Truncated {
                length: 6,
                required: 12
            })
        );
        assert_eq!(
            parse_upstream(&[1, 0, 0, PULL_DATA]),
            Err(DatagramRejection::ProtocolVersion(1))
        );
        assert_eq!(
            parse_upstream(&[2, 0, 0, 0x42]),
            Err(DatagramRejection::UnknownIdentifier(0x42))
        );
        assert_eq!(
            parse_upstream(&[2, 0, 0, PULL_RESP]),
            Err(DatagramRejection::NotFromAGateway("PULL_RESP"))
        );
    }

    #[test]
    fn acknowledgements_echo_the_token() {
        assert_eq!(push_ack(0xabcd), [2, 0xab, 0xcd, PUSH_ACK]);
        assert_eq!(pull_ack(0xabcd), [2, 0xab, 0xcd, PULL_ACK]);
    }
}
