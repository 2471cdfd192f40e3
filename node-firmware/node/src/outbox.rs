//! What the node hands the firmware: [`Uplink`]s to transmit and [`Action`]s to apply,
//! and the queue of immediate answers waiting for an uplink opportunity.
//!
//! Answers to one downlink on one FPort are concatenated into one uplink while they fit
//! the configured payload limit (the specifications allow it; it saves airtime). Answers
//! whose content depends on the moment of sending (AppTimeReq's DeviceTime, delayed
//! FragSessionStatusAns) are not queued here: their package builds them when the uplink
//! is taken, see `FuotaNode::poll_uplink`.

use lorawan_fuota::codec::{Command, EncodeError, Writer};

use crate::config::MAX_UPLINK_PAYLOAD;
use crate::time::Instant;

/// Payload bytes of an uplink.
pub type UplinkPayload = heapless::Vec<u8, MAX_UPLINK_PAYLOAD>;

/// An application uplink the firmware must send (unconfirmed, on `fport`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// FPort of the package.
    pub fport: u8,
    /// FRMPayload (plaintext; the MAC encrypts it).
    pub payload: UplinkPayload,
    /// The payload holds a DeviceTime taken when this uplink was polled (TS003
    /// AppTimeReq / DeviceAppTimePeriodicityAns): send it right away, once (NbTrans = 1,
    /// TS003 v1 also asks to suspend ADR for it), never from a retry queue.
    pub carries_device_time: bool,
}

/// Something the firmware must do at the time it is returned by
/// `FuotaNode::poll_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start listening in Class C on the multicast session's channel (RX1/RX2 of the
    /// unicast session keep their own parameters). Feed every frame received there to
    /// `FuotaNode::handle_multicast_frame`.
    StartClassC {
        /// The multicast group of the session.
        mc_group_id: u8,
        /// DLFreq, Hz.
        frequency_hz: u32,
        /// DR index of the region.
        data_rate: u8,
    },
    /// The Class C session ended (timeout, block complete, group deleted): back to
    /// Class A.
    ReturnToClassA,
    /// Reboot now (after sending nothing more). When `install_update` is set, the
    /// update was already marked pending through `UpdateAgent`.
    Reboot {
        /// A verified image was handed to the bootloader.
        install_update: bool,
    },
    /// A new fragmentation session needs the decoder workspace, which the previous
    /// session's decoder still holds. Give it back and restart the node on it:
    /// `node = FuotaNode::start(node.into_parts(), workspace, now).0` (the session state
    /// carries over; nothing is lost).
    RecycleWorkspace,
}

/// One queued uplink.
#[derive(Debug, Clone)]
struct QueuedUplink {
    fport: u8,
    queued_at: Instant,
    payload: UplinkPayload,
}

/// Immediate answers waiting to be sent, FIFO per FPort.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    queue: heapless::Vec<QueuedUplink, 8>,
    limit: usize,
    dropped: u32,
}

impl Outbox {
    /// An empty outbox building payloads of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Outbox {
            queue: heapless::Vec::new(),
            limit: limit.min(MAX_UPLINK_PAYLOAD),
            dropped: 0,
        }
    }

    /// Answers that could not be queued (queue full or encoding failure).
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Queues `answer` on `fport`, after the answers already waiting for that port.
    pub fn push<'a, C: Command<'a>>(&mut self, now: Instant, fport: u8, answer: &C) {
        let mut encoded = [0u8; MAX_UPLINK_PAYLOAD];
        let length = match answer.encode_to(&mut encoded) {
            Ok(length) => length,
            Err(EncodeError::BufferTooSmall { .. } | EncodeError::InvalidField { .. }) => {
                self.dropped = self.dropped.saturating_add(1);
                return;
            }
        };
        let bytes = &encoded[..length];
        let limit = self.limit;
        if let Some(last) = self.queue.iter_mut().rev().find(|q| q.fport == fport) {
            if last.payload.len() + bytes.len() <= limit
                && last.payload.extend_from_slice(bytes).is_ok()
            {
                return;
            }
        }
        let mut payload = UplinkPayload::new();
        if bytes.len() > limit || payload.extend_from_slice(bytes).is_err() {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        let entry = QueuedUplink {
            fport,
            queued_at: now,
            payload,
        };
        if self.queue.push(entry).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// When the oldest queued answer was queued, and its port.
    pub fn oldest(&self) -> Option<(Instant, u8)> {
        self.queue
            .iter()
            .map(|q| (q.queued_at, q.fport))
            .min_by_key(|(at, _)| *at)
    }

    /// Moves the answers queued for `fport` into `out`, oldest first, while they fit
    /// within `limit` bytes in total.
    pub fn take_port(&mut self, fport: u8, out: &mut UplinkPayload, limit: usize) {
        while let Some(index) = self.queue.iter().position(|q| q.fport == fport) {
            let fits = self
                .queue
                .get(index)
                .is_some_and(|q| out.len() + q.payload.len() <= limit);
            if !fits {
                return;
            }
            let entry = self.queue.remove(index);
            if out.extend_from_slice(&entry.payload).is_err() {
                return;
            }
        }
    }

    /// The payload limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Appends one command to `out` if it fits within `limit`; true if it was appended.
pub(crate) fn append_command<'a, C: Command<'a>>(
    out: &mut UplinkPayload,
    limit: usize,
    command: &C,
) -> bool {
    let mut encoded = [0u8; MAX_UPLINK_PAYLOAD];
    let mut writer = Writer::new(&mut encoded);
    if command.encode(&mut writer).is_err() {
        return false;
    }
    let length = writer.len();
    out.len() + length <= limit && out.extend_from_slice(&encoded[..length]).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lorawan_fuota::codec::firmware_management::Uplink as Ts006;

    #[test]
    fn answers_on_one_port_are_concatenated_within_the_limit() {
        let mut outbox = Outbox::new(12);
        let now = Instant::from_secs(1);
        let answer = Ts006::DevVersionAns {
            firmware_version: 1,
            hardware_version: 2,
        };
        outbox.push(now, 203, &answer); // 9 bytes
        outbox.push(now, 203, &Ts006::DevRebootCountdownAns { countdown: 5 }); // 4 bytes
        outbox.push(now, 200, &Ts006::DevRebootCountdownAns { countdown: 6 });
        let mut out = UplinkPayload::new();
        outbox.take_port(203, &mut out, 12);
        assert_eq!(out.len(), 9);
        let mut second = UplinkPayload::new();
        outbox.take_port(203, &mut second, 12);
        assert_eq!(second.as_slice(), &[0x03, 5, 0, 0]);
        assert_eq!(outbox.oldest(), Some((now, 200)));
    }
}
