//! Prometheus metrics of the monitoring listener, built at each scrape from the same
//! status the API reports: traffic counters, TX_ACK errors by the gateway's error
//! name, duty-cycle use and budget per gateway and band, devices, images, campaigns by
//! state, and each active campaign's devices by result. The upstream outbox depth joins
//! them with the MQTT sync.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::views::{CampaignSummaryView, StatusView};

type Labels = Vec<(String, String)>;

fn counter(value: u64) -> Counter {
    let counter = Counter::default();
    counter.inc_by(value);
    counter
}

fn gauge(value: i64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(value);
    gauge
}

fn name_of<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "unknown".into(),
    }
}

/// The metrics in the OpenMetrics text format.
pub fn render(
    status: &StatusView,
    active_campaigns: &[CampaignSummaryView],
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("fuota");
    let counters = &status.counters;
    registry.register(
        "uplinks",
        "Uplinks received from all gateways since the agent started",
        counter(counters.uplinks),
    );
    registry.register(
        "foreign_uplinks",
        "Uplinks of devices the agent does not serve, passed through",
        counter(counters.foreign_uplinks),
    );
    registry.register(
        "downlinks",
        "Downlinks handed to gateways",
        counter(counters.downlinks_sent),
    );
    registry.register(
        "answers_lost",
        "Class A answers that found no receive window",
        counter(counters.answers_lost),
    );
    let tx_ack_errors = Family::<Labels, Counter>::default();
    for (kind, count) in &status.tx_ack_errors_by_kind {
        tx_ack_errors
            .get_or_create(&vec![("kind".into(), kind.clone())])
            .inc_by(*count);
    }
    registry.register(
        "tx_ack_errors",
        "Downlinks a gateway refused, by its TX_ACK error",
        tx_ack_errors,
    );
    let used = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let budget = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for gateway in &status.gateways {
        for band in &gateway.bands {
            let labels = vec![
                ("gateway".into(), gateway.gateway_eui.clone()),
                ("band".into(), band.band.clone()),
            ];
            used.get_or_create(&labels).set(band.used_us as f64 / 1e6);
            if let Some(limit) = band.budget_us {
                budget.get_or_create(&labels).set(limit as f64 / 1e6);
            }
        }
    }
    registry.register(
        "duty_cycle_used_seconds",
        "Airtime used in the band's duty-cycle window ending now",
        used,
    );
    registry.register(
        "duty_cycle_budget_seconds",
        "Airtime allowed in the band's duty-cycle window",
        budget,
    );
    registry.register(
        "devices",
        "Registered devices",
        gauge(status.devices as i64),
    );
    registry.register(
        "images",
        "Cached firmware images",
        gauge(status.images as i64),
    );
    registry.register(
        "uptime_seconds",
        "Seconds since the agent started",
        gauge(status.uptime_s as i64),
    );
    let campaigns = Family::<Labels, Gauge>::default();
    for (state, count) in &status.campaigns {
        campaigns
            .get_or_create(&vec![("state".into(), name_of(state))])
            .set(*count as i64);
    }
    registry.register("campaigns", "Campaigns by state", campaigns);
    let results = Family::<Labels, Gauge>::default();
    let targeted = Family::<Labels, Gauge>::default();
    for campaign in active_campaigns {
        let id = campaign.id.to_string();
        targeted
            .get_or_create(&vec![("campaign".into(), id.clone())])
            .set(campaign.devices as i64);
        for (result, count) in &campaign.results {
            results
                .get_or_create(&vec![
                    ("campaign".into(), id.clone()),
                    ("status".into(), name_of(result)),
                ])
                .set(*count as i64);
        }
    }
    registry.register(
        "campaign_devices",
        "Devices targeted by each active campaign",
        targeted,
    );
    registry.register(
        "campaign_device_results",
        "Devices of each active campaign by result so far (in_progress until they end)",
        results,
    );
    if let Some(upstream) = &status.upstream {
        registry.register(
            "mqtt_connected",
            "1 while the agent is connected to the MQTT broker",
            gauge(i64::from(upstream.connected)),
        );
        registry.register(
            "outbox_events",
            "Events waiting for the MQTT broker's acknowledgement (the outbox depth)",
            gauge(upstream.outbox_events as i64),
        );
        registry.register(
            "outbox_bytes",
            "Estimated disk size of the outbox",
            gauge(upstream.outbox_bytes as i64),
        );
        registry.register(
            "outbox_quota_bytes",
            "Disk quota of the outbox",
            gauge(upstream.outbox_quota_bytes as i64),
        );
        registry.register(
            "mqtt_delivered_events",
            "Events the MQTT broker acknowledged since the agent started",
            counter(upstream.delivered_since_start),
        );
        registry.register(
            "outbox_dropped_events",
            "Events the outbox quota dropped since the agent started",
            counter(upstream.dropped_since_start),
        );
        registry.register(
            "mqtt_connections",
            "MQTT connections opened since the agent started",
            counter(upstream.connections),
        );
    }
    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::views::{BandView, CountersView, GatewayView};
    use crate::campaign::{CampaignState, DeviceStatus};

    #[test]
    fn every_figure_appears_with_its_labels() {
        let status = StatusView {
            version: "0.1.0".into(),
            uptime_s: 42,
            database: "/var/lib/fuota-agent/agent.db".into(),
            devices: 3,
            images: 1,
            campaigns: BTreeMap::from([(CampaignState::Running, 1)]),
            counters: CountersView {
                uplinks: 10,
                foreign_uplinks: 4,
                downlinks_sent: 7,
                tx_ack_errors: 3,
                answers_lost: 1,
            },
            tx_ack_errors_by_kind: BTreeMap::from([
                ("TOO_LATE".to_string(), 2),
                ("COLLISION_PACKET".to_string(), 1),
            ]),
            gateways: vec![GatewayView {
                gateway_eui: "0016c001ff10a235".into(),
                bands: vec![BandView {
                    band: "869.4-869.65 MHz".into(),
                    used_us: 1_500_000,
                    budget_us: Some(360_000_000),
                }],
            }],
            upstream: Some(crate::upstream::UpstreamStatus {
                broker: "mqtts://broker.example.com:8883".into(),
                connected: true,
                commands_subscribed: true,
                outbox_events: 12,
                outbox_bytes: 4096,
                outbox_quota_bytes: 268_435_456,
                delivered_event_id: 99,
                delivered_since_start: 80,
                dropped_since_start: 5,
                connections: 2,
                last_error: None,
            }),
        };
        let campaign = CampaignSummaryView {
            id: 7,
            name: "north".into(),
            state: CampaignState::Running,
            step: "broadcast".into(),
            image_sha256: "ab".into(),
            target_version: "1.3.0".into(),
            delivery: "multicast".into(),
            devices: 3,
            results: BTreeMap::from([(DeviceStatus::InProgress, 2), (DeviceStatus::Successful, 1)]),
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let text = render(&status, &[campaign]).expect("encodes");
        for line in [
            "fuota_uplinks_total 10",
            "fuota_foreign_uplinks_total 4",
            "fuota_downlinks_total 7",
            "fuota_answers_lost_total 1",
            "fuota_tx_ack_errors_total{kind=\"TOO_LATE\"} 2",
            "fuota_tx_ack_errors_total{kind=\"COLLISION_PACKET\"} 1",
            "fuota_duty_cycle_used_seconds{gateway=\"0016c001ff10a235\",band=\"869.4-869.65 MHz\"} 1.5",
            "fuota_duty_cycle_budget_seconds{gateway=\"0016c001ff10a235\",band=\"869.4-869.65 MHz\"} 360.0",
            "fuota_devices 3",
            "fuota_images 1",
            "fuota_campaigns{state=\"running\"} 1",
            "fuota_campaign_devices{campaign=\"7\"} 3",
            "fuota_campaign_device_results{campaign=\"7\",status=\"in_progress\"} 2",
            "fuota_campaign_device_results{campaign=\"7\",status=\"successful\"} 1",
            "fuota_mqtt_connected 1",
            "fuota_outbox_events 12",
            "fuota_outbox_bytes 4096",
            "fuota_outbox_quota_bytes 268435456",
            "fuota_mqtt_delivered_events_total 80",
            "fuota_outbox_dropped_events_total 5",
            "fuota_mqtt_connections_total 2",
            "# TYPE fuota_uplinks counter",
            "# EOF",
        ] {
            assert!(text.lines().any(|got| got == line), "no {line:?} in\n{text}");
        }
    }
}
