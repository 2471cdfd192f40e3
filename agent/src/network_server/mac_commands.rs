//! The MAC commands a FUOTA device needs from its network server, read from an uplink's
//! FOpts (or FRMPayload on FPort 0) and answered: LinkCheckReq → LinkCheckAns,
//! DeviceTimeReq → DeviceTimeAns. Answers of other commands the device sends (we never
//! ask it anything else) are skipped by their known lengths; an unknown CID stops the
//! parse, as its length is unknown.

/// LinkCheckReq / LinkCheckAns.
pub const CID_LINK_CHECK: u8 = 0x02;
/// DeviceTimeReq / DeviceTimeAns.
pub const CID_DEVICE_TIME: u8 = 0x0D;

/// A request a device made in its uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacRequest {
    /// LinkCheckReq.
    LinkCheck,
    /// DeviceTimeReq.
    DeviceTime,
}

/// What the device's MAC commands held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedMacCommands {
    /// Requests to answer, in order.
    pub requests: Vec<MacRequest>,
    /// The first CID whose length is unknown, if parsing stopped there.
    pub stopped_at_unknown_cid: Option<u8>,
}

/// Payload length of each uplink MAC command (LoRaWAN 1.0.4 and 1.1 uplink CIDs).
fn uplink_payload_len(cid: u8) -> Option<usize> {
    match cid {
        0x01 => Some(1), // ResetInd (1.1)
        CID_LINK_CHECK => Some(0),
        0x03 => Some(1), // LinkADRAns
        0x04 => Some(0), // DutyCycleAns
        0x05 => Some(1), // RXParamSetupAns
        0x06 => Some(2), // DevStatusAns
        0x07 => Some(1), // NewChannelAns
        0x08 => Some(0), // RXTimingSetupAns
        0x09 => Some(0), // TXParamSetupAns
        0x0A => Some(1), // DlChannelAns
        0x0B => Some(1), // RekeyInd (1.1)
        0x0C => Some(0), // ADRParamSetupAns (1.1)
        CID_DEVICE_TIME => Some(0),
        0x0F => Some(1), // RejoinParamSetupAns (1.1)
        _ => None,
    }
}

/// Reads the MAC commands of an uplink.
pub fn parse_uplink_mac_commands(bytes: &[u8]) -> ParsedMacCommands {
    let mut parsed = ParsedMacCommands::default();
    let mut index = 0;
    while let Some(&cid) = bytes.get(index) {
        let Some(len) = uplink_payload_len(cid) else {
            parsed.stopped_at_unknown_cid = Some(cid);
            break;
        };
        match cid {
            CID_LINK_CHECK => parsed.requests.push(MacRequest::LinkCheck),
            CID_DEVICE_TIME => parsed.requests.push(MacRequest::DeviceTime),
            _ => {}
        }
        index += 1 + len;
    }
    parsed
}

/// A MAC command for a downlink: CID and payload, in the form `lorawan`'s frame builder
/// takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacAnswer {
    /// The CID.
    pub cid: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

impl lorawan::maccommands::SerializableMacCommand for MacAnswer {
    fn payload_bytes(&self) -> &[u8] {
        &self.payload
    }

    fn cid(&self) -> u8 {
        self.cid
    }

    fn payload_len(&self) -> usize {
        self.payload.len()
    }
}

/// LinkCheckAns: margin in dB above the demodulation floor (0..=254), gateway count.
pub fn link_check_answer(margin_db: u8, gateway_count: u8) -> MacAnswer {
    MacAnswer {
        cid: CID_LINK_CHECK,
        payload: vec![margin_db.min(254), gateway_count],
    }
}

/// DeviceTimeAns: the 5-byte GPS time (seconds, then 1/256 s).
pub fn device_time_answer(payload: [u8; 5]) -> MacAnswer {
    MacAnswer {
        cid: CID_DEVICE_TIME,
        payload: payload.to_vec(),
    }
}

/// The SNR (dB) below which a LoRa demodulator cannot receive at a spreading factor
/// (Semtech's figures: SF7 −7.5 dB … SF12 −20 dB), for LinkCheckAns margins.
pub fn demodulation_floor_db(spreading_factor: u8) -> f32 {
    match spreading_factor {
        5 => -2.5,
        6 => -5.0,
        7 => -7.5,
        8 => -10.0,
        9 => -12.5,
        10 => -15.0,
        11 => -17.5,
        _ => -20.0,
    }
}

/// The LinkCheckAns margin for an uplink heard at `snr_db` at `spreading_factor`.
pub fn link_margin_db(snr_db: f32, spreading_factor: u8) -> u8 {
    let margin = (snr_db - demodulation_floor_db(spreading_factor)).floor();
    if margin.is_nan() || margin <= 0.0 {
        0
    } else if margin >= 254.0 {
        254
    } else {
        margin as u8
    }
}
