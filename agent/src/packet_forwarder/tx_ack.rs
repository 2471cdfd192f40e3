//! The JSON body of TX_ACK, read into the scheduler's [`TxAckOutcome`].
//!
//! Read here rather than with `semtech-udp` 0.12, whose TX_ACK type reads error names it
//! does not know (`FULL`, `EMPTY`, `DUTY_CYCLE` from other forwarders) as success. An
//! empty body (or a lone NUL, stripped by the framing) means success.

use serde::Deserialize;

use super::datagram::DatagramRejection;
use crate::lorawan::scheduler::TxAckOutcome;

#[derive(Deserialize)]
struct Body {
    txpk_ack: TxPkAck,
}

#[derive(Deserialize)]
struct TxPkAck {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warn: Option<String>,
    #[serde(default)]
    value: Option<i32>,
}

/// Reads a TX_ACK body.
pub fn parse_tx_ack(json: &[u8]) -> Result<TxAckOutcome, DatagramRejection> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(TxAckOutcome::Accepted);
    }
    let body: Body =
        serde_json::from_slice(json).map_err(|error| DatagramRejection::InvalidJson {
            datagram: "TX_ACK",
            reason: error.to_string(),
        })?;
    Ok(TxAckOutcome::from_wire(
        body.txpk_ack.error.as_deref(),
        body.txpk_ack.warn.as_deref(),
        body.txpk_ack.value,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::scheduler::TxAckError;

    #[test]
    fn reads_acceptance_errors_and_warnings() {
        assert_eq!(parse_tx_ack(b""), Ok(TxAckOutcome::Accepted));
        assert_eq!(
            parse_tx_ack(br#"{"txpk_ack":{"error":"NONE"}}"#),
            Ok(TxAckOutcome::Accepted)
        );
        assert_eq!(
            parse_tx_ack(br#"{"txpk_ack":{"error":"TOO_LATE"}}"#),
            Ok(TxAckOutcome::Rejected(TxAckError::TooLate))
        );
        assert_eq!(
            parse_tx_ack(br#"{"txpk_ack":{"error":"FULL"}}"#),
            Ok(TxAckOutcome::Rejected(TxAckError::Full))
        );
        assert_eq!(
            parse_tx_ack(br#"{"txpk_ack":{"warn":"TX_POWER","value":14}}"#),
            Ok(TxAckOutcome::AcceptedWithAdjustedPower {
                power_dbm: Some(14)
            })
        );
    }

    #[test]
    fn rejects_a_body_that_is_not_a_tx_ack() {
        assert!(parse_tx_ack(b"{").is_err());
        assert!(parse_tx_ack(br#"{"other":1}"#).is_err());
    }
}
