//! Counters of the packet-forwarder link: what arrived, what was rejected and why,
//! what was sent. Lock-free, read as a [`CounterSnapshot`] (for logs, the status API and
//! later Prometheus metrics).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters, incremented by the link.
        #[derive(Debug, Default)]
        pub struct PacketForwarderCounters {
            $($(#[$doc])* pub(crate) $name: AtomicU64,)*
        }

        /// The counters at one instant.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        pub struct CounterSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl PacketForwarderCounters {
            /// The current values.
            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Datagrams received, whatever they were.
    datagrams_received,
    /// Datagrams rejected as malformed (truncated, wrong version, unknown identifier,
    /// invalid JSON, server-to-gateway types).
    bad_datagrams,
    /// Datagrams dropped because their gateway is not in the allow-list.
    unknown_gateway_datagrams,
    /// PUSH_DATA accepted (and acknowledged).
    push_data,
    /// PULL_DATA accepted (and acknowledged).
    pull_data,
    /// TX_ACK received and parsed.
    tx_acks,
    /// TX_ACKs whose token matched no pending downlink (late, duplicated, or not ours).
    unmatched_tx_acks,
    /// Uplinks delivered.
    uplinks,
    /// Packets inside a PUSH_DATA that could not be read (bad base64, size, fields).
    bad_rxpks,
    /// Packets with a failed or absent PHY CRC (not delivered).
    crc_not_ok_rxpks,
    /// Gateway status reports delivered.
    stats,
    /// Gateway status reports that could not be read.
    bad_stats,
    /// Events dropped because the consumer was too slow (its queue was full).
    events_dropped,
    /// PULL_RESP datagrams sent.
    downlinks_sent,
    /// Downlinks that could not be sent (no PULL_DATA yet, socket error).
    downlink_send_errors,
    /// Downlinks whose TX_ACK did not arrive in time.
    tx_ack_timeouts,
    /// Downlinks the gateway refused (TX_ACK with an error).
    tx_ack_rejections,
    /// Errors reading from or writing to the socket.
    socket_errors,
}

impl PacketForwarderCounters {
    pub(crate) fn increment(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }
}
