//! Upstream sync figures: how fast a backlog drains to a real broker, and what the
//! outbox's bookkeeping costs at the size a long outage leaves.
//!
//! `cargo run --release -p fuota-agent --example upstream_report [-- EVENTS]`
//!
//! Writes EVENTS uplink events (default 100 000, about 300 bytes each, as a gateway
//! hearing a few hundred devices writes in a day), measures the outbox depth query and a
//! quota check that halves the backlog, then starts an embedded rumqttd and a subscriber
//! and times the publisher draining the rest (QoS 1, default in-flight window).

#[path = "../tests/support/mqtt.rs"]
mod mqtt;

use std::time::{Duration, Instant, SystemTime};

use fuota_agent::clock::WallTime;
use fuota_agent::config::Config;
use fuota_agent::identifiers::DevEui;
use fuota_agent::storage::outbox::Outbox;
use fuota_agent::storage::{EventKind, NewEvent, Storage};
use fuota_agent::upstream::Publisher;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: u64 = match std::env::args().nth(1) {
        Some(count) => count
            .parse()
            .map_err(|_| format!("EVENTS must be a number, not {count:?}"))?,
        None => 100_000,
    };
    let directory = tempfile::tempdir()?;
    let database = directory.path().join("agent.db");
    let mut storage = Storage::open(&database)?;
    let now = WallTime::from_system_time(SystemTime::now());

    let started = Instant::now();
    storage.write(|tx| {
        for index in 0..events {
            tx.append_event(
                &NewEvent::new(now, EventKind::Uplink)
                    .device(DevEui::from(0x0016_c001_0000_0000 + index % 500))
                    .payload(serde_json::json!({
                        "f_cnt": index,
                        "f_port": 10,
                        "confirmed": false,
                        "size": 12,
                        "data": "AAECAwQFBgcICQoL",
                        "frequency_hz": 868_100_000,
                        "data_rate": 5,
                        "rssi_dbm": -87,
                        "snr_db": 7.5,
                    })),
            )?;
        }
        Ok(())
    })?;
    let written = started.elapsed();
    println!(
        "wrote {events} uplink events in {:.2} s ({:.0} events/s, one transaction)",
        written.as_secs_f64(),
        events as f64 / written.as_secs_f64()
    );

    let mut outbox = Outbox::open(&database)?;
    let started = Instant::now();
    let depth = outbox.depth()?;
    println!(
        "outbox depth query: {} events, {:.1} MiB, in {:.1} ms",
        depth.events,
        depth.bytes as f64 / 1_048_576.0,
        started.elapsed().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let outcome = outbox.enforce_quota(depth.bytes / 2, 0, now)?;
    println!(
        "quota check halving it: dropped {} uplinks into {} gap events in {:.1} ms",
        outcome.dropped_total(),
        outcome.gap_event_ids.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let again = outbox.enforce_quota(depth.bytes / 2, 0, now)?;
    println!(
        "quota check with nothing to drop: {:.1} ms (dropped {})",
        started.elapsed().as_secs_f64() * 1e3,
        again.dropped_total()
    );
    let remaining = outbox.depth()?.events;

    let broker = mqtt::start_rumqttd(&[]);
    let backend = mqtt::Backend::subscribe(broker, "fuota/report");
    let config = Config::parse(
        &format!("[mqtt]\nbroker = \"mqtt://127.0.0.1:{broker}\"\ngateway_id = \"report\"\n"),
        "report",
    )?
    .mqtt
    .ok_or("no [mqtt] section")?;
    let publisher = Publisher::new(&config, outbox)?;
    let mut status = publisher.status();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = runtime.spawn(publisher.run(async move {
        let _ = stopped.await;
    }));
    let drained = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(600), async {
            loop {
                if status.borrow().delivered_since_start >= remaining {
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
    });
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let _ = runtime.block_on(task);
    if drained.is_err() {
        return Err("the backlog did not drain within 10 minutes".into());
    }
    let received = backend.messages().len();
    println!(
        "drained {remaining} events to rumqttd in {:.2} s ({:.0} events/s, QoS 1, window {}); the subscriber got {received}",
        elapsed.as_secs_f64(),
        remaining as f64 / elapsed.as_secs_f64(),
        config.max_in_flight
    );
    Ok(())
}
