//! One MQTT connection, over rumqttc's MQTT 3.1.1 or MQTT 5 client (`[mqtt]
//! protocol`): the few operations and events the publisher needs, the same for both.
//!
//! The differences that matter are handled here: MQTT 5 keeps a session only for its
//! session expiry interval (set to [`SESSION_EXPIRY_S`] when the session is persistent,
//! since 0 would end it at every disconnect), and an MQTT 5 broker may refuse a single
//! publish in its PUBACK (not authorised, quota exceeded...), which is then not
//! delivered.

use rumqttc::v5::mqttbytes::v5 as v5_packets;
use rumqttc::{Outgoing, QoS};

/// How long an MQTT 5 broker keeps the agent's session after a disconnect, seconds
/// (7 days): commands sent while the gateway is offline wait that long.
pub const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;

/// The MQTT version spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1.
    V311,
    /// MQTT 5.
    V5,
}

/// Connection options of either version.
#[derive(Clone)]
pub enum LinkOptions {
    /// MQTT 3.1.1.
    V311(Box<rumqttc::MqttOptions>),
    /// MQTT 5.
    V5(Box<rumqttc::v5::MqttOptions>),
}

impl LinkOptions {
    /// Keeps the session at the broker across disconnects (queued commands wait).
    pub fn keep_session(&mut self) {
        match self {
            LinkOptions::V311(options) => {
                options.set_clean_session(false);
            }
            LinkOptions::V5(options) => {
                options
                    .set_clean_start(false)
                    .set_session_expiry_interval(Some(SESSION_EXPIRY_S));
            }
        }
    }

    /// Incoming publishes are acknowledged by [`LinkClient::try_ack`] only.
    pub fn set_manual_acks(&mut self) {
        match self {
            LinkOptions::V311(options) => {
                options.set_manual_acks(true);
            }
            LinkOptions::V5(options) => {
                options.set_manual_acks(true);
            }
        }
    }

    /// A new connection (not opened until the loop is polled).
    pub fn connect(&self, capacity: usize) -> (LinkClient, LinkLoop) {
        match self {
            LinkOptions::V311(options) => {
                let (client, eventloop) = rumqttc::AsyncClient::new((**options).clone(), capacity);
                (
                    LinkClient::V311(client),
                    LinkLoop::V311(Box::new(eventloop)),
                )
            }
            LinkOptions::V5(options) => {
                let (client, eventloop) =
                    rumqttc::v5::AsyncClient::new((**options).clone(), capacity);
                (LinkClient::V5(client), LinkLoop::V5(Box::new(eventloop)))
            }
        }
    }
}

/// A message the broker delivered to us.
#[derive(Debug, Clone)]
pub struct InboundPublish {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    original: Original,
}

#[derive(Debug, Clone)]
enum Original {
    V311(rumqttc::Publish),
    V5(v5_packets::Publish),
}

/// What happened on the connection.
#[derive(Debug)]
pub enum LinkEvent {
    /// CONNACK: connected.
    Connected,
    /// SUBACK: `granted` unless the broker refused the subscription.
    Subscribed {
        /// The broker accepted it.
        granted: bool,
    },
    /// A publish of ours went out with this packet id.
    PublishSent(u16),
    /// PUBACK for packet `packet_id`; `refusal` when an MQTT 5 broker refused it.
    Acknowledged {
        /// The packet id.
        packet_id: u16,
        /// Why the broker refused the publish, if it did.
        refusal: Option<String>,
    },
    /// A message for us.
    Inbound(Box<InboundPublish>),
    /// Our DISCONNECT went out.
    DisconnectSent,
    /// Anything else (pings...).
    Other,
}

/// The requests side of a connection.
pub enum LinkClient {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(rumqttc::v5::AsyncClient),
}

impl LinkClient {
    /// Queues a QoS 1 publish; fails when the request queue is full.
    pub fn try_publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        match self {
            LinkClient::V311(client) => client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|error| error.to_string()),
            LinkClient::V5(client) => client
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .map_err(|error| error.to_string()),
        }
    }

    /// Queues a QoS 1 subscription to `filter`.
    pub fn try_subscribe(&self, filter: String) -> Result<(), String> {
        match self {
            LinkClient::V311(client) => client
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|error| error.to_string()),
            LinkClient::V5(client) => client
                .try_subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .map_err(|error| error.to_string()),
        }
    }

    /// Acknowledges a message the broker delivered.
    pub fn try_ack(&self, publish: &InboundPublish) -> Result<(), String> {
        match (self, &publish.original) {
            (LinkClient::V311(client), Original::V311(original)) => {
                client.try_ack(original).map_err(|error| error.to_string())
            }
            (LinkClient::V5(client), Original::V5(original)) => {
                client.try_ack(original).map_err(|error| error.to_string())
            }
            _ => Err("a message acknowledged on a connection of another MQTT version".into()),
        }
    }

    /// Queues a DISCONNECT.
    pub fn try_disconnect(&self) {
        let _ = match self {
            LinkClient::V311(client) => client.try_disconnect().map_err(|error| error.to_string()),
            LinkClient::V5(client) => client.try_disconnect().map_err(|error| error.to_string()),
        };
    }
}

/// The network side of a connection: polled to make progress.
pub enum LinkLoop {
    /// MQTT 3.1.1.
    V311(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<rumqttc::v5::EventLoop>),
}

fn outgoing(outgoing: Outgoing) -> LinkEvent {
    match outgoing {
        Outgoing::Publish(packet_id) => LinkEvent::PublishSent(packet_id),
        Outgoing::Disconnect => LinkEvent::DisconnectSent,
        _ => LinkEvent::Other,
    }
}

impl LinkLoop {
    /// The next event; an error ends the connection.
    pub async fn poll(&mut self) -> Result<LinkEvent, String> {
        match self {
            LinkLoop::V311(eventloop) => {
                use rumqttc::{Event, Packet};
                Ok(
                    match eventloop.poll().await.map_err(|error| error.to_string())? {
                        Event::Incoming(Packet::ConnAck(_)) => LinkEvent::Connected,
                        Event::Incoming(Packet::SubAck(ack)) => LinkEvent::Subscribed {
                            granted: ack.return_codes.iter().all(|code| {
                                matches!(code, rumqttc::SubscribeReasonCode::Success(_))
                            }),
                        },
                        Event::Incoming(Packet::PubAck(ack)) => LinkEvent::Acknowledged {
                            packet_id: ack.pkid,
                            refusal: None,
                        },
                        Event::Incoming(Packet::Publish(publish)) => {
                            LinkEvent::Inbound(Box::new(InboundPublish {
                                topic: publish.topic.clone(),
                                payload: publish.payload.to_vec(),
                                original: Original::V311(publish),
                            }))
                        }
                        Event::Outgoing(sent) => outgoing(sent),
                        Event::Incoming(_) => LinkEvent::Other,
                    },
                )
            }
            LinkLoop::V5(eventloop) => {
                use rumqttc::v5::Event;
                use v5_packets::Packet;
                Ok(
                    match eventloop.poll().await.map_err(|error| error.to_string())? {
                        Event::Incoming(Packet::ConnAck(_)) => LinkEvent::Connected,
                        Event::Incoming(Packet::SubAck(ack)) => LinkEvent::Subscribed {
                            granted: ack.return_codes.iter().all(|code| {
                                matches!(code, v5_packets::SubscribeReasonCode::Success(_))
                            }),
                        },
                        Event::Incoming(Packet::PubAck(ack)) => {
                            let refusal = match ack.reason {
                                v5_packets::PubAckReason::Success
                                | v5_packets::PubAckReason::NoMatchingSubscribers => None,
                                reason => {
                                    Some(match ack.properties.and_then(|p| p.reason_string) {
                                        Some(text) => format!("{reason:?}: {text}"),
                                        None => format!("{reason:?}"),
                                    })
                                }
                            };
                            LinkEvent::Acknowledged {
                                packet_id: ack.pkid,
                                refusal,
                            }
                        }
                        Event::Incoming(Packet::Publish(publish)) => {
                            LinkEvent::Inbound(Box::new(InboundPublish {
                                topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                                payload: publish.payload.to_vec(),
                                original: Original::V5(publish),
                            }))
                        }
                        Event::Outgoing(sent) => outgoing(sent),
                        Event::Incoming(_) => LinkEvent::Other,
                    },
                )
            }
        }
    }
}
