//! What the campaign engine asks the network server to do ([`CampaignAction`]), and
//! what the network server tells it back about multicast frames ([`MulticastOutcome`]).
//!
//! Unicast downlinks are application payloads for the receive window of the uplink
//! being handled (the engine returns at most one per uplink and keeps the rest for the
//! device's next uplinks): the network server encrypts them with the device's AppSKey,
//! gives them an FCntDown and sends them in RX1/RX2. Multicast frames come with their group FCnt already
//! reserved by the engine and the group's session keys, so the network server only
//! builds, schedules (duty cycle, Class A priority) and sends them, then reports each
//! one with [`super::CampaignEngine::multicast_outcome`].

use std::collections::BTreeMap;

use super::model::{CampaignId, DeviceStatus};
use crate::clock::WallTime;
use crate::identifiers::{AesKey, DevAddr, DevEui};

/// Something the network server must do for a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignAction {
    /// An application downlink for one device.
    Unicast(UnicastDownlink),
    /// A Class C multicast frame for the campaign's group.
    Multicast(MulticastFrame),
    /// The campaign is over: every device has its result.
    Finished {
        /// The campaign.
        campaign_id: CampaignId,
        /// Devices per result.
        results: BTreeMap<DeviceStatus, usize>,
    },
}

/// An application downlink for the receive window of the device's uplink being handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnicastDownlink {
    /// The campaign asking.
    pub campaign_id: CampaignId,
    /// The device.
    pub dev_eui: DevEui,
    /// FPort of the package.
    pub fport: u8,
    /// FRMPayload (plaintext).
    pub payload: Vec<u8>,
}

/// Identifies a multicast frame in [`super::CampaignEngine::multicast_outcome`]: the
/// group FCnt is unique within a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MulticastFrameId {
    /// The campaign.
    pub campaign_id: CampaignId,
    /// The frame's group FCnt.
    pub fcnt: u32,
}

/// A multicast data frame to build and send in the group's Class C session.
#[derive(Clone, PartialEq, Eq)]
pub struct MulticastFrame {
    /// Identity, for the outcome report.
    pub id: MulticastFrameId,
    /// McAddr: the group's DevAddr.
    pub mc_addr: DevAddr,
    /// McAppSKey: FRMPayload encryption.
    pub mc_app_s_key: AesKey,
    /// McNwkSKey: MIC.
    pub mc_nwk_s_key: AesKey,
    /// Group FCnt (reserved; never handed out twice).
    pub fcnt: u32,
    /// FPort.
    pub fport: u8,
    /// FRMPayload (plaintext).
    pub payload: Vec<u8>,
    /// Frequency of the session, Hz.
    pub frequency_hz: u32,
    /// Data rate of the session.
    pub data_rate: u8,
    /// Not before this time: frames are spaced for the duty cycle and start with the
    /// session.
    pub not_before: WallTime,
    /// Not after this time: the session is over, give the frame up.
    pub not_after: WallTime,
}

impl std::fmt::Debug for MulticastFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MulticastFrame")
            .field("id", &self.id)
            .field("mc_addr", &self.mc_addr)
            .field("fcnt", &self.fcnt)
            .field("fport", &self.fport)
            .field("payload_len", &self.payload.len())
            .field("frequency_hz", &self.frequency_hz)
            .field("data_rate", &self.data_rate)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What became of a multicast frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MulticastOutcome {
    /// It went out (TX_ACK without error).
    Sent,
    /// It was given up (too late, duty cycle, TX_ACK errors past retries), with why.
    GivenUp(String),
}
