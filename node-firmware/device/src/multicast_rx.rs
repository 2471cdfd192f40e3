//! Multicast reception beside lorawan-device, and the EU868 data-rate table.
//!
//! lorawan-device 0.12 drops every frame whose DevAddr is not its session's, and its own
//! Class C listens on RX2 only. A FUOTA Class C session has its own frequency and data
//! rate (McClassCSessionReq), so the firmware drives the radio itself between its
//! uplinks: through lorawan-device's `get_mut_radio()` it puts the radio in continuous
//! receive (downlink polarity: inverted IQ) on the session's channel, and hands every
//! frame received to `FuotaNode::handle_multicast_frame`, which matches McAddr, checks
//! the FCnt window and the MIC, and decrypts. An uplink in between (lorawan-device
//! retunes the radio for TX, RX1 and RX2) leaves the radio idle, so the receiver is set
//! up again after each one ([`MulticastReceiver::stop`] marks that).

use lora_modulation::{Bandwidth, BaseBandModulationParams, CodingRate, SpreadingFactor};
use lorawan_device::async_device::radio::{PhyRxTx, RfConfig, RxConfig, RxMode, RxQuality};

/// The LoRa modulation of an EU868 data rate (DR0-DR6), `None` for DR7 (FSK) and the
/// undefined ones.
pub fn eu868_modulation(data_rate: u8) -> Option<BaseBandModulationParams> {
    let (spreading_factor, bandwidth) = match data_rate {
        0 => (SpreadingFactor::_12, Bandwidth::_125KHz),
        1 => (SpreadingFactor::_11, Bandwidth::_125KHz),
        2 => (SpreadingFactor::_10, Bandwidth::_125KHz),
        3 => (SpreadingFactor::_9, Bandwidth::_125KHz),
        4 => (SpreadingFactor::_8, Bandwidth::_125KHz),
        5 => (SpreadingFactor::_7, Bandwidth::_125KHz),
        6 => (SpreadingFactor::_7, Bandwidth::_250KHz),
        _ => return None,
    };
    Some(BaseBandModulationParams::new(
        spreading_factor,
        bandwidth,
        CodingRate::_4_5,
    ))
}

impl Default for MulticastReceiver {
    fn default() -> Self {
        Self::new()
    }
}

/// The channel of the running multicast Class C session, and whether the radio is
/// currently set up to receive on it.
pub struct MulticastReceiver {
    channel: Option<RfConfig>,
    listening: bool,
}

impl MulticastReceiver {
    /// No session.
    pub const fn new() -> Self {
        MulticastReceiver {
            channel: None,
            listening: false,
        }
    }

    /// A Class C session starts on `frequency_hz` at `data_rate`. False (and nothing
    /// changes) if this radio cannot receive that data rate; the node's region check
    /// refuses such sessions before they get here.
    pub fn start(&mut self, frequency_hz: u32, data_rate: u8) -> bool {
        let Some(bb) = eu868_modulation(data_rate) else {
            return false;
        };
        self.channel = Some(RfConfig {
            frequency: frequency_hz,
            bb,
        });
        self.listening = false;
        true
    }

    /// The session ended: back to Class A.
    pub fn end(&mut self) {
        self.channel = None;
        self.listening = false;
    }

    /// Whether a Class C session runs.
    pub fn in_session(&self) -> bool {
        self.channel.is_some()
    }

    /// The radio was used for something else (an uplink and its receive windows): set
    /// it up again before the next frame.
    pub fn stop(&mut self) {
        self.listening = false;
    }

    /// Receives the next frame on the session's channel into `buffer`: its length and
    /// signal quality. Pending forever when no session runs (use it in a `select`).
    pub async fn receive<R: PhyRxTx>(
        &mut self,
        radio: &mut R,
        buffer: &mut [u8],
    ) -> Result<(usize, RxQuality), R::PhyError> {
        let Some(channel) = self.channel else {
            return core::future::pending().await;
        };
        if !self.listening {
            radio
                .setup_rx(RxConfig {
                    rf: channel,
                    mode: RxMode::Continuous,
                })
                .await?;
            self.listening = true;
        }
        let received = radio.rx_continuous(buffer).await;
        if received.is_err() {
            // Set the radio up again before the next attempt.
            self.listening = false;
        }
        received
    }
}
