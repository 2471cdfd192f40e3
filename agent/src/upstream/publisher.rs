//! The publisher: one task that drains the outbox to the broker, in order, and keeps
//! it within its quota.
//!
//! Each connection starts from the outbox cursor (the last event the broker
//! acknowledged). Up to `max_in_flight` events are published at once, QoS 1; rumqttc
//! reports each publish's packet id as it goes out, and each PUBACK; the cursor moves to
//! the last event of the acknowledged prefix, so it never passes an event the broker
//! has not taken. Any failure (connection refused, reset, a PING or a publish left
//! unanswered past its timeout: a backhaul that silently drops packets) ends the
//! connection; the next one, after a backoff delay that doubles up to
//! `reconnect_max_s`, publishes again everything after the cursor, with the same ids.
//!
//! Meanwhile the quota is checked every [`QUOTA_CHECK_INTERVAL`], connected or not.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::commands::CommandProcessor;
use super::link::{InboundPublish, LinkClient, LinkEvent, LinkOptions};
use super::message::{command_filter, event_topic, EventMessage};
use super::{connection_options, UpstreamError};
use crate::clock::WallTime;
use crate::config::MqttConfig;
use crate::storage::outbox::{Outbox, OutboxEvent};

/// How often the outbox quota is checked.
pub const QUOTA_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// How long to wait before reading the outbox again when it was found empty.
const IDLE_READ_INTERVAL: Duration = Duration::from_millis(200);

/// Events read from the outbox at a time.
const READ_BATCH: usize = 256;

/// A connection that lasted this long counts as working: the next failure starts the
/// backoff from its minimum again.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

/// What the publisher is doing, for `fuotactl status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    /// The broker (`mqtts://host:port`).
    pub broker: String,
    /// Connected (CONNACK received) right now.
    pub connected: bool,
    /// Subscribed to the backend's commands on this connection (SUBACK received).
    #[serde(default)]
    pub commands_subscribed: bool,
    /// Events waiting for the broker's acknowledgement.
    pub outbox_events: u64,
    /// Their estimated size, bytes.
    pub outbox_bytes: u64,
    /// The configured quota, bytes.
    pub outbox_quota_bytes: u64,
    /// The last event the broker acknowledged.
    pub delivered_event_id: i64,
    /// Events acknowledged since the agent started.
    pub delivered_since_start: u64,
    /// Events dropped by the quota policy since the agent started.
    pub dropped_since_start: u64,
    /// Connections opened since the agent started.
    pub connections: u64,
    /// Why the last connection ended, if it failed.
    pub last_error: Option<String>,
}

/// The publisher task's state.
pub struct Publisher {
    options: LinkOptions,
    gateway_id: String,
    topic_prefix: String,
    ack_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    window: usize,
    quota_bytes: u64,
    quota_check_interval: Duration,
    /// When the quota is checked next (one schedule across connections and waits).
    quota_due: Instant,
    outbox: Outbox,
    status: watch::Sender<UpstreamStatus>,
    over_quota_reported: bool,
    commands: Option<CommandProcessor>,
}

/// How a connection ended.
enum SessionEnd {
    Shutdown,
    Failed { error: String, stable: bool },
}

/// A publish handed to the connection.
struct InFlight {
    seq: i64,
    packet_id: Option<u16>,
    acked: bool,
    sent_at: Instant,
}

fn now() -> WallTime {
    WallTime::from_system_time(SystemTime::now())
}

impl Publisher {
    /// A publisher for `config` over `outbox`. Reads the secret files and TLS
    /// material now, so a mistake stops the agent at start with its reason.
    pub fn new(config: &MqttConfig, outbox: Outbox) -> Result<Publisher, UpstreamError> {
        let options = connection_options(config)?;
        let depth = outbox.depth()?;
        let status = UpstreamStatus {
            broker: config.broker.to_string(),
            outbox_events: depth.events,
            outbox_bytes: depth.bytes,
            outbox_quota_bytes: config.outbox_quota_bytes,
            delivered_event_id: depth.delivered_event_id,
            ..UpstreamStatus::default()
        };
        Ok(Publisher {
            options,
            gateway_id: config.gateway_id.clone(),
            topic_prefix: config.topic_prefix.clone(),
            ack_timeout: config.ack_timeout,
            reconnect_min: config.reconnect_min,
            reconnect_max: config.reconnect_max,
            window: usize::from(config.max_in_flight.max(1)),
            quota_bytes: config.outbox_quota_bytes,
            quota_check_interval: QUOTA_CHECK_INTERVAL,
            quota_due: Instant::now(),
            outbox,
            status: watch::channel(status).0,
            over_quota_reported: false,
            commands: None,
        })
    }

    /// Also subscribes to the backend's commands and applies them with `processor`.
    /// The MQTT session becomes persistent (commands sent while the gateway is offline
    /// wait at the broker), and each command is acknowledged only once its answer is
    /// recorded (a command cut short by a crash is delivered again).
    pub fn with_commands(mut self, processor: CommandProcessor) -> Self {
        self.options.keep_session();
        self.options.set_manual_acks();
        self.commands = Some(processor);
        self
    }

    /// Checks the quota every `interval` instead of [`QUOTA_CHECK_INTERVAL`] (tests).
    pub fn with_quota_check_interval(mut self, interval: Duration) -> Self {
        self.quota_check_interval = interval;
        self
    }

    /// Follows the publisher's status.
    pub fn status(&self) -> watch::Receiver<UpstreamStatus> {
        self.status.subscribe()
    }

    /// Publishes until `shutdown` completes; then disconnects cleanly. Errors are
    /// logged and retried, never returned: the backhaul may come back any time.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut delay = self.reconnect_min;
        loop {
            match self.session(shutdown.as_mut()).await {
                SessionEnd::Shutdown => {
                    self.status.send_modify(|status| {
                        status.connected = false;
                        status.commands_subscribed = false;
                    });
                    return;
                }
                SessionEnd::Failed { error, stable } => {
                    if stable {
                        delay = self.reconnect_min;
                    }
                    let wait = with_jitter(delay);
                    warn!(broker = %self.status.borrow().broker, "MQTT: {error}; reconnecting in {:.1} s", wait.as_secs_f64());
                    self.status.send_modify(|status| {
                        status.connected = false;
                        status.commands_subscribed = false;
                        status.last_error = Some(error);
                    });
                    if self.wait_offline(wait, shutdown.as_mut()).await {
                        return;
                    }
                    delay = (delay * 2).min(self.reconnect_max);
                }
            }
        }
    }

    /// Waits `wait` while disconnected, checking the quota; true if shut down.
    async fn wait_offline(
        &mut self,
        wait: Duration,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                () = &mut shutdown => return true,
                () = tokio::time::sleep_until(until) => return false,
                () = tokio::time::sleep_until(self.quota_due) => {
                    let delivered = self.status.borrow().delivered_event_id;
                    self.check_quota(delivered);
                }
            }
        }
    }

    /// One connection, from connect to its end.
    async fn session(&mut self, mut shutdown: Pin<&mut impl Future<Output = ()>>) -> SessionEnd {
        let (client, mut eventloop) = self.options.connect(self.window * 2 + 8);
        let mut connected_at: Option<Instant> = None;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut buffer: VecDeque<OutboxEvent> = VecDeque::new();
        let mut next_read_at = Instant::now();
        let mut enqueued_up_to = match self.outbox.delivered_event_id() {
            Ok(id) => id,
            Err(error) => {
                return SessionEnd::Failed {
                    error: format!("reading the outbox: {error}"),
                    stable: false,
                }
            }
        };
        let failed = |error: String, connected_at: Option<Instant>| SessionEnd::Failed {
            error,
            stable: connected_at.is_some_and(|at| at.elapsed() >= STABLE_CONNECTION),
        };
        loop {
            if connected_at.is_some() {
                if let Err(error) = self.fill_window(
                    &client,
                    &mut in_flight,
                    &mut buffer,
                    &mut next_read_at,
                    &mut enqueued_up_to,
                ) {
                    return failed(error, connected_at);
                }
            }
            let ack_deadline = in_flight
                .iter()
                .find(|publish| !publish.acked)
                .map(|publish| publish.sent_at + self.ack_timeout);
            let may_read =
                connected_at.is_some() && buffer.is_empty() && in_flight.len() < self.window;
            tokio::select! {
                () = &mut shutdown => {
                    client.try_disconnect();
                    // Let the DISCONNECT go out; PUBACKs that arrive meanwhile count.
                    let drain = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Ok(event) = eventloop.poll().await {
                            if matches!(event, LinkEvent::DisconnectSent) {
                                break;
                            }
                            let _ = self.handle(event, &mut in_flight, &mut connected_at);
                        }
                    });
                    let _ = drain.await;
                    info!("MQTT: disconnected");
                    return SessionEnd::Shutdown;
                }
                polled = eventloop.poll() => match polled {
                    Ok(LinkEvent::Inbound(publish)) => {
                        if let Err(error) = self.command(&client, &publish).await {
                            return failed(error, connected_at);
                        }
                    }
                    Ok(event) => {
                        // Subscribed on every connection, even when the broker kept the
                        // session: one cut before its SUBACK may not hold the subscription.
                        let subscribe = matches!(&event, LinkEvent::Connected);
                        if let Err(error) = self.handle(event, &mut in_flight, &mut connected_at) {
                            return failed(error, connected_at);
                        }
                        if subscribe && self.commands.is_some() {
                            if let Err(error) = client.try_subscribe(command_filter(&self.topic_prefix)) {
                                return failed(format!("subscribing to the commands: {error}"), connected_at);
                            }
                        }
                    }
                    Err(error) => {
                        let what = if connected_at.is_some() { "connection lost" } else { "cannot connect" };
                        return failed(format!("{what}: {error}"), connected_at);
                    }
                },
                () = sleep_until_or_never(ack_deadline) => {
                    let waiting = in_flight.iter().find(|publish| !publish.acked).map(|publish| publish.seq);
                    return failed(
                        format!(
                            "no PUBACK for event {} within {} s: the connection is taken as dead",
                            waiting.unwrap_or_default(),
                            self.ack_timeout.as_secs()
                        ),
                        connected_at,
                    );
                }
                () = tokio::time::sleep_until(next_read_at), if may_read => {}
                () = tokio::time::sleep_until(self.quota_due) => self.check_quota(enqueued_up_to),
            }
        }
    }

    /// Applies a command message and acknowledges it once its answer is recorded.
    async fn command(
        &mut self,
        client: &LinkClient,
        publish: &InboundPublish,
    ) -> Result<(), String> {
        let prefix = format!("{}/command/", self.topic_prefix);
        if let (Some(processor), Some(name)) = (&self.commands, publish.topic.strip_prefix(&prefix))
        {
            processor
                .process(&mut self.outbox, name, &publish.payload, now())
                .await
                .map_err(|error| format!("recording the answer to a command: {error}"))?;
        } else {
            debug!(topic = %publish.topic, "MQTT: a message on a topic we do not handle");
        }
        client
            .try_ack(publish)
            .map_err(|error| format!("acknowledging a command: {error}"))
    }

    /// Hands events to the connection until the window is full or the outbox empty.
    fn fill_window(
        &mut self,
        client: &LinkClient,
        in_flight: &mut VecDeque<InFlight>,
        buffer: &mut VecDeque<OutboxEvent>,
        next_read_at: &mut Instant,
        enqueued_up_to: &mut i64,
    ) -> Result<(), String> {
        while in_flight.len() < self.window {
            if buffer.is_empty() {
                if Instant::now() < *next_read_at {
                    return Ok(());
                }
                let events = self
                    .outbox
                    .events_after(*enqueued_up_to, READ_BATCH)
                    .map_err(|error| format!("reading the outbox: {error}"))?;
                *next_read_at = if events.len() < READ_BATCH {
                    Instant::now() + IDLE_READ_INTERVAL
                } else {
                    Instant::now()
                };
                if events.is_empty() {
                    return Ok(());
                }
                buffer.extend(events);
            }
            let Some(event) = buffer.front() else {
                return Ok(());
            };
            let message = EventMessage::from_outbox(event, &self.gateway_id);
            let payload = match serde_json::to_vec(&message) {
                Ok(payload) => payload,
                Err(error) => return Err(format!("encoding event {}: {error}", message.seq)),
            };
            let topic = event_topic(&self.topic_prefix, &message.kind);
            match client.try_publish(topic, payload) {
                Ok(()) => {
                    *enqueued_up_to = message.seq;
                    buffer.pop_front();
                    in_flight.push_back(InFlight {
                        seq: message.seq,
                        packet_id: None,
                        acked: false,
                        sent_at: Instant::now(),
                    });
                }
                // The request channel is full: the connection takes them in turn.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// One event of the connection.
    fn handle(
        &mut self,
        event: LinkEvent,
        in_flight: &mut VecDeque<InFlight>,
        connected_at: &mut Option<Instant>,
    ) -> Result<(), String> {
        match event {
            LinkEvent::Connected => {
                *connected_at = Some(Instant::now());
                info!(broker = %self.status.borrow().broker, "MQTT: connected");
                self.status.send_modify(|status| {
                    status.connected = true;
                    status.connections += 1;
                });
            }
            LinkEvent::Subscribed { granted: true } => {
                info!("MQTT: listening for commands");
                self.status
                    .send_modify(|status| status.commands_subscribed = true);
            }
            LinkEvent::Subscribed { granted: false } => {
                return Err(format!(
                    "the broker refused the subscription to {}: check its access rules",
                    command_filter(&self.topic_prefix)
                ));
            }
            LinkEvent::PublishSent(packet_id) => {
                if let Some(publish) = in_flight
                    .iter_mut()
                    .find(|publish| publish.packet_id.is_none())
                {
                    publish.packet_id = Some(packet_id);
                    publish.sent_at = Instant::now();
                }
            }
            LinkEvent::Acknowledged { packet_id, refusal } => {
                let Some(publish) = in_flight
                    .iter_mut()
                    .find(|publish| publish.packet_id == Some(packet_id) && !publish.acked)
                else {
                    debug!(packet_id, "MQTT: PUBACK for no publish of ours");
                    return Ok(());
                };
                if let Some(reason) = refusal {
                    // Not delivered: it stays in the outbox, and goes again after the
                    // reconnection delay (a broker's quota or rules may change).
                    return Err(format!(
                        "the broker refused event {}: {reason}",
                        publish.seq
                    ));
                }
                publish.acked = true;
                let mut delivered = None;
                let mut count = 0u64;
                while in_flight.front().is_some_and(|publish| publish.acked) {
                    delivered = in_flight.pop_front().map(|publish| publish.seq);
                    count += 1;
                }
                if let Some(seq) = delivered {
                    self.outbox
                        .mark_delivered(seq, now())
                        .map_err(|error| format!("moving the outbox cursor: {error}"))?;
                    self.status.send_modify(|status| {
                        status.delivered_event_id = seq;
                        status.delivered_since_start += count;
                        status.outbox_events = status.outbox_events.saturating_sub(count);
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies the quota policy, logs what it dropped, refreshes the depth figures.
    fn check_quota(&mut self, publishing_up_to: i64) {
        self.quota_due = Instant::now() + self.quota_check_interval;
        let outcome = match self
            .outbox
            .enforce_quota(self.quota_bytes, publishing_up_to, now())
        {
            Ok(outcome) => outcome,
            Err(error) => {
                warn!("MQTT outbox quota check: {error}");
                return;
            }
        };
        let dropped = outcome.dropped_total();
        if dropped > 0 {
            warn!(
                dropped,
                kinds = ?outcome.dropped,
                quota_bytes = self.quota_bytes,
                "MQTT outbox over its quota: dropped the oldest undelivered telemetry (an outbox_gap event says what)"
            );
        }
        if outcome.still_over_bytes > 0 && !self.over_quota_reported {
            warn!(
                over_bytes = outcome.still_over_bytes,
                "MQTT outbox over its quota with nothing left to drop: results are kept regardless"
            );
        }
        self.over_quota_reported = outcome.still_over_bytes > 0;
        let depth = if dropped > 0 {
            self.outbox.depth().ok()
        } else {
            Some(outcome.before)
        };
        self.status.send_modify(|status| {
            status.dropped_since_start += dropped;
            if let Some(depth) = depth {
                status.outbox_events = depth.events;
                status.outbox_bytes = depth.bytes;
            }
        });
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `delay` plus up to 25 % at random, so gateways that lost the same broker do not all
/// come back in the same second.
fn with_jitter(delay: Duration) -> Duration {
    let mut bytes = [0u8; 2];
    let spread = match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    delay + delay.mul_f64(0.25 * spread)
}
