//! What a packet forwarder answers about a downlink (TX_ACK), and what each answer
//! means for retrying.
//!
//! Semtech's `lora_pkt_fwd` (sx1302_hal, `send_tx_ack`) sends `TOO_LATE`, `TOO_EARLY`,
//! `COLLISION_PACKET` (also for a full JIT queue, `JIT_ERROR_FULL`), `COLLISION_BEACON`,
//! `TX_FREQ`, `GPS_UNLOCKED`, and `TX_POWER` as a warning (the power was lowered and the
//! frame still goes out). Other forwarders add `FULL`, `EMPTY`, `DUTY_CYCLE` (those that
//! enforce it themselves), `SEND_LBT` and `SEND_FAIL`; all are understood here.

use std::fmt;

/// How a packet forwarder answered a downlink.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxAckOutcome {
    /// Programmed for transmission (no error, or error `NONE`).
    Accepted,
    /// Programmed, with the power lowered to `power_dbm` (warning `TX_POWER`).
    AcceptedWithAdjustedPower {
        /// Power actually used, if reported.
        power_dbm: Option<i32>,
    },
    /// Rejected.
    Rejected(TxAckError),
}

/// A TX_ACK error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxAckError {
    /// `TOO_LATE`: the frame arrived too late to be programmed.
    TooLate,
    /// `TOO_EARLY`: the start is too far ahead for the JIT queue.
    TooEarly,
    /// `COLLISION_PACKET`: another frame is programmed in the time frame (`lora_pkt_fwd`
    /// also sends it when its JIT queue is full).
    CollisionPacket,
    /// `COLLISION_BEACON`: a Class B beacon is programmed in the time frame.
    CollisionBeacon,
    /// `FULL`: the transmit queue is full.
    Full,
    /// `EMPTY`: the forwarder's queue had nothing to send (JIT `EMPTY`).
    Empty,
    /// `TX_FREQ`: the frequency is not supported by the TX RF chain.
    TxFrequency,
    /// `TX_POWER` as an error: the power is not supported.
    TxPower,
    /// `GPS_UNLOCKED`: a GPS-timed frame while the GPS is unlocked.
    GpsUnlocked,
    /// `DUTY_CYCLE`: the forwarder's own duty-cycle check refused it.
    DutyCycle,
    /// `SEND_LBT`: listen-before-talk found the channel busy.
    ListenBeforeTalk,
    /// `SEND_FAIL`: the concentrator failed to send.
    SendFail,
    /// Anything else, verbatim.
    Unknown(String),
}

/// What kind of problem a TX_ACK error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxAckErrorKind {
    /// A timing or capacity problem that another time slot can avoid.
    Transient,
    /// The gateway cannot transmit this frame as configured (frequency, power, GPS):
    /// retrying the same frame elsewhere in time will fail again.
    Permanent,
}

impl TxAckError {
    /// Reads the protocol's error name (`"TOO_LATE"` …); unknown names are kept.
    /// `"NONE"` is not an error: use [`TxAckOutcome::from_wire`].
    pub fn from_wire(name: &str) -> TxAckError {
        match name.trim() {
            "TOO_LATE" => TxAckError::TooLate,
            "TOO_EARLY" => TxAckError::TooEarly,
            "COLLISION_PACKET" => TxAckError::CollisionPacket,
            "COLLISION_BEACON" => TxAckError::CollisionBeacon,
            "FULL" => TxAckError::Full,
            "EMPTY" => TxAckError::Empty,
            "TX_FREQ" => TxAckError::TxFrequency,
            "TX_POWER" => TxAckError::TxPower,
            "GPS_UNLOCKED" => TxAckError::GpsUnlocked,
            "DUTY_CYCLE" => TxAckError::DutyCycle,
            "SEND_LBT" => TxAckError::ListenBeforeTalk,
            "SEND_FAIL" => TxAckError::SendFail,
            other => TxAckError::Unknown(other.to_string()),
        }
    }

    /// The protocol's name of the error.
    pub fn as_wire(&self) -> &str {
        match self {
            TxAckError::TooLate => "TOO_LATE",
            TxAckError::TooEarly => "TOO_EARLY",
            TxAckError::CollisionPacket => "COLLISION_PACKET",
            TxAckError::CollisionBeacon => "COLLISION_BEACON",
            TxAckError::Full => "FULL",
            TxAckError::Empty => "EMPTY",
            TxAckError::TxFrequency => "TX_FREQ",
            TxAckError::TxPower => "TX_POWER",
            TxAckError::GpsUnlocked => "GPS_UNLOCKED",
            TxAckError::DutyCycle => "DUTY_CYCLE",
            TxAckError::ListenBeforeTalk => "SEND_LBT",
            TxAckError::SendFail => "SEND_FAIL",
            TxAckError::Unknown(name) => name,
        }
    }

    /// Whether another time slot may succeed.
    ///
    /// | Error | Kind | Why |
    /// |---|---|---|
    /// | TOO_LATE, TOO_EARLY | transient | a slot with another lead time fits |
    /// | COLLISION_PACKET, COLLISION_BEACON, FULL, EMPTY | transient | the queue or the slot was taken |
    /// | DUTY_CYCLE, SEND_LBT | transient | budget or channel frees up later |
    /// | TX_FREQ, TX_POWER | permanent | the radio cannot do this frequency/power |
    /// | GPS_UNLOCKED | permanent | GPS-timed frames fail until the GPS locks; we time by `tmst` |
    /// | SEND_FAIL, unknown | permanent | hardware or protocol fault: record it, do not loop |
    pub fn kind(&self) -> TxAckErrorKind {
        match self {
            TxAckError::TooLate
            | TxAckError::TooEarly
            | TxAckError::CollisionPacket
            | TxAckError::CollisionBeacon
            | TxAckError::Full
            | TxAckError::Empty
            | TxAckError::DutyCycle
            | TxAckError::ListenBeforeTalk => TxAckErrorKind::Transient,
            TxAckError::TxFrequency
            | TxAckError::TxPower
            | TxAckError::GpsUnlocked
            | TxAckError::SendFail
            | TxAckError::Unknown(_) => TxAckErrorKind::Permanent,
        }
    }
}

impl fmt::Display for TxAckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_wire())
    }
}

impl std::error::Error for TxAckError {}

impl TxAckOutcome {
    /// Reads a TX_ACK's `error` or `warn` field: absent or `"NONE"` is acceptance,
    /// `warn: "TX_POWER"` acceptance at `value` dBm, anything else a rejection.
    pub fn from_wire(
        error: Option<&str>,
        warning: Option<&str>,
        value: Option<i32>,
    ) -> TxAckOutcome {
        match (error.map(str::trim), warning.map(str::trim)) {
            (Some(name), _) if name != "NONE" && !name.is_empty() => {
                TxAckOutcome::Rejected(TxAckError::from_wire(name))
            }
            (_, Some("TX_POWER")) => TxAckOutcome::AcceptedWithAdjustedPower { power_dbm: value },
            _ => TxAckOutcome::Accepted,
        }
    }
}
