//! The JSON body of PUSH_DATA: received packets (`rxpk`) and gateway status (`stat`).
//!
//! Each `rxpk` is read on its own, so one bad packet (bad base64, a `size` that does not
//! match its data, a missing field) is rejected without losing the others in the same
//! datagram. The GPS time of reception (`tmms`), which `semtech-udp`'s v1 `RxPk` does not
//! keep, is read from the raw JSON. Packets whose CRC is not OK are set aside: no LoRaWAN
//! frame without a valid PHY CRC is worth processing.

use semtech_udp::push_data::{RxPk, RxPkV1, RxPkV2, Stat, CRC};
use serde::Deserialize;

use super::datagram::DatagramRejection;

/// A received packet as delivered by the gateway.
#[derive(Debug, Clone)]
pub struct ReceivedPacket {
    /// The packet and its radio metadata.
    pub rxpk: RxPk,
    /// GPS time of reception in milliseconds since the GPS epoch (`tmms`), when the
    /// gateway has a GPS fix.
    pub gps_time_ms: Option<u64>,
}

/// What one PUSH_DATA carried.
#[derive(Debug, Default)]
pub struct PushDataContents {
    /// Packets with a valid CRC.
    pub packets: Vec<ReceivedPacket>,
    /// Packets whose CRC failed or was absent (counted, not delivered).
    pub crc_not_ok: usize,
    /// Packets that could not be read: their index in `rxpk` and why.
    pub rejected_packets: Vec<(usize, String)>,
    /// The gateway status, if any.
    pub stat: Option<Stat>,
    /// Why the status could not be read, if it could not.
    pub rejected_stat: Option<String>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    rxpk: Vec<serde_json::Value>,
    #[serde(default)]
    stat: Option<serde_json::Value>,
}

/// Reads a PUSH_DATA body. Fails only if the body is not a JSON object with the
/// protocol's top-level shape; problems inside single packets are reported per packet.
pub fn parse_push_data(json: &[u8]) -> Result<PushDataContents, DatagramRejection> {
    let body: Body =
        serde_json::from_slice(json).map_err(|error| DatagramRejection::InvalidJson {
            datagram: "PUSH_DATA",
            reason: error.to_string(),
        })?;
    let mut contents = PushDataContents::default();
    for (index, value) in body.rxpk.iter().enumerate() {
        match parse_rxpk(value) {
            Ok(packet) if packet.rxpk.crc_status() == CRC::OK => contents.packets.push(packet),
            Ok(_) => contents.crc_not_ok += 1,
            Err(reason) => contents.rejected_packets.push((index, reason)),
        }
    }
    if let Some(stat) = body.stat {
        match Stat::deserialize(&stat) {
            Ok(stat) => contents.stat = Some(stat),
            Err(error) => contents.rejected_stat = Some(error.to_string()),
        }
    }
    Ok(contents)
}

/// One `rxpk` object: the v2 format (`lora_pkt_fwd` with `rsig`) or the classic v1.
fn parse_rxpk(value: &serde_json::Value) -> Result<ReceivedPacket, String> {
    let rxpk = if value.get("rsig").is_some() {
        RxPkV2::deserialize(value).map(RxPk::V2)
    } else {
        RxPkV1::deserialize(value).map(RxPk::V1)
    }
    .map_err(|error| error.to_string())?;
    let size = value.get("size").and_then(serde_json::Value::as_u64);
    let data_length = rxpk.data().len() as u64;
    if size != Some(data_length) {
        return Err(format!(
            "size {} does not match the {data_length} bytes of data",
            size.map_or_else(|| "(missing)".to_string(), |size| size.to_string())
        ));
    }
    Ok(ReceivedPacket {
        rxpk,
        gps_time_ms: value.get("tmms").and_then(serde_json::Value::as_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_RXPK: &str = r#"{"tmst":3512348611,"tmms":1400000000123,"chan":2,"rfch":0,"freq":868.5,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-35,"lsnr":5.1,"size":4,"data":"AQIDBA=="}"#;

    #[test]
    fn reads_packets_and_the_gps_time() {
        let json = format!(r#"{{"rxpk":[{GOOD_RXPK}]}}"#);
        let contents = parse_push_data(json.as_bytes()).unwrap();
        assert_eq!(contents.packets.len(), 1);
        assert_eq!(contents.packets[0].rxpk.data(), &vec![1, 2, 3, 4]);
        assert_eq!(contents.packets[0].rxpk.timestamp(), 3_512_348_611);
        assert_eq!(contents.packets[0].gps_time_ms, Some(1_400_000_000_123));
    }

    #[test]
    fn a_bad_packet_does_not_spoil_the_others() {
        let bad_base64 = GOOD_RXPK.replace("AQIDBA==", "!!not base64!!");
        let wrong_size = GOOD_RXPK.replace(r#""size":4"#, r#""size":9"#);
        let json = format!(r#"{{"rxpk":[{bad_base64},{GOOD_RXPK},{wrong_size}]}}"#);
        let contents = parse_push_data(json.as_bytes()).unwrap();
        assert_eq!(contents.packets.len(), 1);
        let rejected: Vec<usize> = contents.rejected_packets.iter().map(|(i, _)| *i).collect();
        assert_eq!(rejected, vec![0, 2]);
        assert!(contents.rejected_packets[1].1.contains("size 9"));
    }

    #[test]
    fn crc_failures_are_counted_not_delivered() {
        let crc_failed = GOOD_RXPK.replace(r#""stat":1"#, r#""stat":-1"#);
        let json = format!(r#"{{"rxpk":[{crc_failed}]}}"#);
        let contents = parse_push_data(json.as_bytes()).unwrap();
        assert!(contents.packets.is_empty());
        assert_eq!(contents.crc_not_ok, 1);
    }

    #[test]
    fn a_body_that_is_not_the_protocol_is_rejected() {
        assert!(parse_push_data(b"not json").is_err());
        assert!(parse_push_data(br#"{"rxpk":"nope"}"#).is_err());
    }
}
