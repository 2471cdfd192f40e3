//! Upstream sync against real brokers: an embedded rumqttd behind a backhaul the test
//! takes down or turns into a black hole, and Debian's mosquitto stopped and started
//! again. Events written during an outage all arrive once (by id), in order, after it;
//! the quota policy drops plain uplinks only and says so in the sequence.

#[path = "support/certificates.rs"]
mod certificates;
#[path = "support/mqtt.rs"]
mod mqtt;

use std::path::Path;
use std::time::{Duration, Instant};

use fuota_agent::clock::WallTime;
use fuota_agent::config::{Config, MqttConfig};
use fuota_agent::identifiers::DevEui;
use fuota_agent::storage::outbox::Outbox;
use fuota_agent::storage::{EventKind, NewEvent, Storage};
use fuota_agent::upstream::message::EventMessage;
use fuota_agent::upstream::{Publisher, UpstreamStatus};
use mqtt::{deduplicate, start_rumqttd, Backend, Backhaul, BackhaulProxy, Mosquitto};

const PREFIX: &str = "fuota/gw-test";

fn mqtt_config(port: u16, extra: &str) -> MqttConfig {
    let text = format!(
        "[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\ngateway_id = \"gw-test\"\n\
         reconnect_min_s = 1\nreconnect_max_s = 1\nack_timeout_s = 2\nkeep_alive_s = 5\n{extra}"
    );
    Config::parse(&text, "test").unwrap().mqtt.unwrap()
}

/// A publisher running on its own runtime until dropped.
struct RunningPublisher {
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    status: tokio::sync::watch::Receiver<UpstreamStatus>,
}

impl RunningPublisher {
    fn start(config: &MqttConfig, database: &Path, quota_check: Duration) -> RunningPublisher {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let outbox = Outbox::open(database).unwrap();
        let publisher = Publisher::new(config, outbox)
            .unwrap()
            .with_quota_check_interval(quota_check);
        let status = publisher.status();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(publisher.run(async move {
            let _ = stopped.await;
        }));
        RunningPublisher {
            runtime,
            stop: Some(stop),
            task: Some(task),
            status,
        }
    }

    fn status(&self) -> UpstreamStatus {
        self.status.borrow().clone()
    }

    fn wait_until(&self, what: &str, within: Duration, done: impl Fn(&UpstreamStatus) -> bool) {
        let deadline = Instant::now() + within;
        while !done(&self.status()) {
            assert!(
                Instant::now() < deadline,
                "{what}: status {:?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            self.runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await })
                .expect("the publisher did not stop")
                .unwrap();
        }
    }
}

fn at_now() -> WallTime {
    WallTime::from_system_time(std::time::SystemTime::now())
}

/// Appends `count` events of mixed kinds; returns their ids.
fn append_events(storage: &mut Storage, count: usize) -> Vec<i64> {
    (0..count)
        .map(|index| {
            let event = if index % 5 == 0 {
                NewEvent::new(at_now(), EventKind::CampaignDeviceResult)
                    .device(DevEui::from(index as u64 + 1))
                    .payload(serde_json::json!({ "campaign_id": 1, "status": "successful" }))
            } else {
                NewEvent::new(at_now(), EventKind::Uplink)
                    .device(DevEui::from(index as u64 + 1))
                    .payload(serde_json::json!({ "f_cnt": index, "rssi": -80 }))
            };
            storage.append_event(&event).unwrap()
        })
        .collect()
}

/// Every event id in the database, in order.
fn stored_ids(storage: &Storage) -> Vec<i64> {
    storage
        .events_after(0, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|event| event.id)
        .collect()
}

/// Asserts the backend got every stored event exactly once by id, first arrivals in
/// sequence order, and returns them.
fn assert_delivered_once_in_order(backend: &Backend, storage: &Storage) -> Vec<EventMessage> {
    let ids = stored_ids(storage);
    let last = *ids.last().unwrap();
    let messages = backend.wait_for_seq(last, Duration::from_secs(60));
    let (unique, duplicates) = deduplicate(&messages);
    let sequence: Vec<i64> = unique.iter().map(|message| message.seq).collect();
    assert_eq!(
        sequence, ids,
        "not every event arrived once, in order ({duplicates} duplicates)"
    );
    for message in &unique {
        assert_eq!(message.gateway_id, "gw-test");
        assert!(message.id.ends_with(&format!("-{}", message.seq)));
    }
    unique
}

fn open_storage() -> (tempfile::TempDir, std::path::PathBuf, Storage) {
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("agent.db");
    let storage = Storage::open(&database).unwrap();
    (directory, database, storage)
}

#[test]
fn events_written_while_the_backhaul_is_down_arrive_once_and_in_order_when_it_returns() {
    let broker = start_rumqttd(&[]);
    let proxy = BackhaulProxy::start(broker);
    let backend = Backend::subscribe(broker, PREFIX);
    let (_directory, database, mut storage) = open_storage();

    proxy.set(Backhaul::Down);
    append_events(&mut storage, 20);
    let publisher = RunningPublisher::start(
        &mqtt_config(proxy.port, ""),
        &database,
        Duration::from_secs(10),
    );
    publisher.wait_until(
        "a failed connection attempt",
        Duration::from_secs(10),
        |status| status.last_error.is_some(),
    );
    append_events(&mut storage, 30);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        backend.messages().is_empty(),
        "something was delivered through a down backhaul"
    );
    assert!(!publisher.status().connected);
    assert_eq!(publisher.status().delivered_event_id, 0);

    proxy.set(Backhaul::Up);
    let delivered = assert_delivered_once_in_order(&backend, &storage);
    assert_eq!(delivered.len(), 50);
    // Topics by kind, payloads as stored.
    let topics: Vec<String> = backend
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(topic, _)| topic.clone())
        .collect();
    assert!(topics.contains(&format!("{PREFIX}/event/uplink")));
    assert!(topics.contains(&format!("{PREFIX}/event/campaign_device_result")));
    let result = delivered
        .iter()
        .find(|message| message.kind == "campaign_device_result")
        .unwrap();
    assert_eq!(result.payload["status"], "successful");
    assert!(result.dev_eui.is_some());

    // The cursor is durable: a new publisher (an agent restarted) sends nothing again.
    let last = *stored_ids(&storage).last().unwrap();
    publisher.wait_until(
        "the cursor at the last event",
        Duration::from_secs(10),
        |status| status.delivered_event_id == last && status.outbox_events == 0,
    );
    publisher.stop();
    assert_eq!(
        Outbox::open(&database)
            .unwrap()
            .delivered_event_id()
            .unwrap(),
        last
    );
    let before = backend.messages().len();
    let again = RunningPublisher::start(
        &mqtt_config(proxy.port, ""),
        &database,
        Duration::from_secs(10),
    );
    again.wait_until("connected again", Duration::from_secs(10), |status| {
        status.connected
    });
    append_events(&mut storage, 1);
    assert_delivered_once_in_order(&backend, &storage);
    assert_eq!(
        backend.messages().len(),
        before + 1,
        "a restart published old events again"
    );
    again.stop();
}

#[test]
fn a_backhaul_that_silently_drops_packets_is_given_up_and_nothing_is_lost() {
    let broker = start_rumqttd(&[]);
    let proxy = BackhaulProxy::start(broker);
    let backend = Backend::subscribe(broker, PREFIX);
    let (_directory, database, mut storage) = open_storage();
    let publisher = RunningPublisher::start(
        &mqtt_config(proxy.port, ""),
        &database,
        Duration::from_secs(10),
    );
    append_events(&mut storage, 10);
    assert_delivered_once_in_order(&backend, &storage);
    assert_eq!(
        publisher.status().connections,
        1,
        "{:?}",
        publisher.status()
    );
    let connections_before = publisher.status().connections;

    proxy.set(Backhaul::Blackhole);
    append_events(&mut storage, 25);
    // The publishes go into the void: no PUBACK within ack_timeout_s (2 s) ends the
    // connection.
    publisher.wait_until(
        "the dead connection given up",
        Duration::from_secs(15),
        |status| {
            !status.connected
                && status.last_error.as_deref().is_some_and(|error| {
                    error.contains("PUBACK") || error.contains("connection lost")
                })
        },
    );
    proxy.set(Backhaul::Up);
    let delivered = assert_delivered_once_in_order(&backend, &storage);
    assert_eq!(delivered.len(), 35);
    assert!(publisher.status().connections > connections_before);
    publisher.stop();
}

#[test]
fn over_the_quota_plain_uplinks_go_results_stay_and_the_gap_is_in_the_sequence() {
    let broker = start_rumqttd(&[]);
    let proxy = BackhaulProxy::start(broker);
    let backend = Backend::subscribe(broker, PREFIX);
    let (_directory, database, mut storage) = open_storage();
    proxy.set(Backhaul::Down);
    // About 2.5 MB of uplinks against a 1 MiB quota, with a device result every 100.
    let filler = "f".repeat(700);
    let mut results = Vec::new();
    let mut uplinks = 0u64;
    storage
        .write(|tx| {
            for index in 0..3000u64 {
                if index % 100 == 0 {
                    results.push(
                        tx.append_event(
                            &NewEvent::new(at_now(), EventKind::CampaignDeviceResult)
                                .device(DevEui::from(index + 1))
                                .payload(serde_json::json!({ "status": "successful" })),
                        )?,
                    );
                }
                tx.append_event(
                    &NewEvent::new(at_now(), EventKind::Uplink)
                        .device(DevEui::from(index + 1))
                        .payload(serde_json::json!({ "f_cnt": index, "raw": filler })),
                )?;
                uplinks += 1;
            }
            Ok(())
        })
        .unwrap();
    let publisher = RunningPublisher::start(
        &mqtt_config(proxy.port, "outbox_quota_mb = 1\n"),
        &database,
        Duration::from_millis(100),
    );
    publisher.wait_until("uplinks dropped", Duration::from_secs(10), |status| {
        status.dropped_since_start > 0
    });
    let status = publisher.status();
    assert!(
        status.outbox_bytes <= 1024 * 1024,
        "outbox still {} bytes",
        status.outbox_bytes
    );
    let dropped = status.dropped_since_start;

    proxy.set(Backhaul::Up);
    let delivered = assert_delivered_once_in_order(&backend, &storage);
    // Every result arrived.
    for id in &results {
        assert!(
            delivered
                .iter()
                .any(|message| message.seq == *id && message.kind == "campaign_device_result"),
            "result {id} was lost"
        );
    }
    // The gaps account for every uplink that did not arrive, and for every hole in the
    // sequence.
    let gaps: Vec<&EventMessage> = delivered
        .iter()
        .filter(|message| message.kind == "outbox_gap")
        .collect();
    assert!(!gaps.is_empty());
    let dropped_in_gaps: u64 = gaps
        .iter()
        .map(|gap| gap.payload["kinds"]["uplink"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(dropped_in_gaps, dropped);
    let arrived_uplinks = delivered
        .iter()
        .filter(|message| message.kind == "uplink")
        .count() as u64;
    assert_eq!(arrived_uplinks + dropped, uplinks);
    let sequence: Vec<i64> = delivered.iter().map(|message| message.seq).collect();
    for pair in sequence.windows(2) {
        if pair[1] != pair[0] + 1 {
            let explained = gaps.iter().any(|gap| {
                let first = gap.payload["first_id"].as_i64().unwrap();
                let last = gap.payload["last_id"].as_i64().unwrap();
                first <= pair[0] && pair[1] <= last + 1
            });
            assert!(
                explained,
                "hole between {} and {} with no gap event",
                pair[0], pair[1]
            );
        }
    }
    publisher.stop();
}

#[test]
fn against_mosquitto_events_written_while_the_broker_is_stopped_arrive_once_in_order() {
    broker_stopped_and_started_again("");
}

#[test]
fn over_mqtt_5_events_written_while_the_broker_is_stopped_arrive_once_in_order() {
    broker_stopped_and_started_again("protocol = \"5\"\n");
}

fn broker_stopped_and_started_again(extra: &str) {
    let Some(binary) = mqtt::mosquitto_binary() else {
        return;
    };
    let mut broker = Mosquitto::start(binary);
    let backend = Backend::subscribe(broker.port, PREFIX);
    let (_directory, database, mut storage) = open_storage();
    let publisher = RunningPublisher::start(
        &mqtt_config(broker.port, extra),
        &database,
        Duration::from_secs(10),
    );
    append_events(&mut storage, 10);
    assert_delivered_once_in_order(&backend, &storage);

    broker.stop();
    append_events(&mut storage, 40);
    publisher.wait_until(
        "the broker's loss noticed",
        Duration::from_secs(15),
        |status| !status.connected,
    );
    std::thread::sleep(Duration::from_millis(1500));
    broker.resume();
    let delivered = assert_delivered_once_in_order(&backend, &storage);
    assert_eq!(delivered.len(), 50);
    assert!(publisher.status().connections >= 2);
    publisher.stop();
}

/// A CA, and a certificate signed by it: (CA PEM, certificate PEM, key PEM).
fn certificates(subject_alt_names: &[&str], client: bool) -> (String, String, String) {
    let issued = certificates::issue(subject_alt_names, client);
    (issued.ca_pem, issued.certificate_pem, issued.key_pem)
}

#[test]
fn over_tls_with_a_client_certificate_events_arrive_and_a_broker_of_another_ca_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let Some(binary) = mqtt::mosquitto_binary() else {
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let (server_ca, server_cert, server_key) = certificates(&["127.0.0.1", "localhost"], false);
    let (client_ca, client_cert, client_key) = certificates(&[], true);
    // The broker trusts the client's CA; the agent trusts the server's.
    let broker = Mosquitto::start_tls(
        binary,
        write("client-ca.pem", &client_ca),
        write("server.pem", &server_cert),
        write("server.key", &server_key),
    );
    let tls_port = broker.tls.as_ref().unwrap().0;
    let backend = Backend::subscribe(broker.port, PREFIX);
    let (_directory, database, mut storage) = open_storage();
    let tls = |ca: &Path| {
        format!(
            "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            ca.display(),
            write("client.pem", &client_cert).display(),
            write("client.key", &client_key).display()
        )
    };
    let secure = |extra: &str| {
        let text = format!(
            "[mqtt]\nbroker = \"mqtts://127.0.0.1:{tls_port}\"\ngateway_id = \"gw-test\"\n\
             reconnect_min_s = 1\nreconnect_max_s = 1\nack_timeout_s = 2\nkeep_alive_s = 5\n{extra}"
        );
        Config::parse(&text, "test").unwrap().mqtt.unwrap()
    };
    append_events(&mut storage, 10);
    let publisher = RunningPublisher::start(
        &secure(&tls(&write("server-ca.pem", &server_ca))),
        &database,
        Duration::from_secs(10),
    );
    assert_delivered_once_in_order(&backend, &storage);
    publisher.stop();

    // A broker whose certificate does not chain to ca_file: no connection, and the
    // status says why.
    let (other_ca, _, _) = certificates(&["127.0.0.1"], false);
    let refused = RunningPublisher::start(
        &secure(&tls(&write("other-ca.pem", &other_ca))),
        &database,
        Duration::from_secs(10),
    );
    refused.wait_until("the broker refused", Duration::from_secs(10), |status| {
        status
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("certificate") || error.contains("UnknownIssuer"))
    });
    assert!(!refused.status().connected);
    refused.stop();
}
