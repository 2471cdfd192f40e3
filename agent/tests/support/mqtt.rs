//! MQTT test fixtures: a real broker started by the test (an embedded rumqttd, or
//! Debian's mosquitto as a child process), a TCP proxy that plays the gateway's
//! backhaul (forwarding, down, or silently dropping every packet), and a subscriber
//! that records what the fleet backend would receive. Included with `#[path]`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuota_agent::upstream::message::EventMessage;

/// A free loopback TCP port for a broker, below the ephemeral range (32768 and up on
/// Linux): a port the kernel hands out for bind(0) or for the local end of an outgoing
/// connection could be taken by another test between this check and the broker's bind.
/// Tests of one process draw from a counter, so they never get the same port.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = 20_000 + (u64::from(std::process::id()) * 97) % 10_000;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(base + offset % 2_000).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_listener(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An embedded rumqttd on a free loopback port (MQTT 3.1.1), with optional users.
/// It runs on its own threads until the test process ends.
pub fn start_rumqttd(users: &[(&str, &str)]) -> u16 {
    let port = free_port();
    let auth = (!users.is_empty()).then(|| {
        users
            .iter()
            .map(|(user, password)| (user.to_string(), password.to_string()))
            .collect::<HashMap<_, _>>()
    });
    let server = rumqttd::ServerSettings {
        name: "v4-1".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1024 * 1024,
            max_inflight_count: 1000,
            auth,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..rumqttd::RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(error) = broker.start() {
            eprintln!("rumqttd stopped: {error}");
        }
    });
    wait_for_listener(port);
    port
}

/// Debian's mosquitto, if installed (`/usr/sbin/mosquitto`). In CI (`CI=true`) it
/// must be: `.ci/run` installs it.
pub fn mosquitto_binary() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/sbin/mosquitto");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must test against mosquitto: apt-get install mosquitto"
    );
    eprintln!("mosquitto is not installed: the mosquitto variant of this test is skipped");
    None
}

/// A mosquitto process on a fixed port, which the test can stop and start again.
pub struct Mosquitto {
    binary: PathBuf,
    pub port: u16,
    /// A second listener with TLS that requires a client certificate, if configured:
    /// its port and the CA, certificate and key files (PEM).
    pub tls: Option<(u16, PathBuf, PathBuf, PathBuf)>,
    directory: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start(binary: PathBuf) -> Mosquitto {
        let directory = tempfile::tempdir().unwrap();
        let mut mosquitto = Mosquitto {
            binary,
            port: free_port(),
            tls: None,
            directory,
            child: None,
        };
        mosquitto.resume();
        mosquitto
    }

    /// A broker with a plain listener and a TLS listener (`ca`, server `cert` and
    /// `key`, client certificates required).
    pub fn start_tls(binary: PathBuf, ca: PathBuf, cert: PathBuf, key: PathBuf) -> Mosquitto {
        let directory = tempfile::tempdir().unwrap();
        let mut mosquitto = Mosquitto {
            binary,
            port: free_port(),
            tls: Some((free_port(), ca, cert, key)),
            directory,
            child: None,
        };
        mosquitto.resume();
        mosquitto
    }

    /// Starts the broker (again) on its port.
    pub fn resume(&mut self) {
        let config = self.directory.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\nlog_dest stderr\nlog_type error\n",
                self.port,
                self.directory.path().display()
            ),
        )
        .unwrap();
        if let Some((port, ca, cert, key)) = &self.tls {
            let mut text = std::fs::read_to_string(&config).unwrap();
            text.push_str(&format!(
                "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                ca.display(),
                cert.display(),
                key.display()
            ));
            std::fs::write(&config, text).unwrap();
        }
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_listener(self.port);
        if let Some((port, ..)) = &self.tls {
            wait_for_listener(*port);
        }
    }

    /// Stops the broker (SIGTERM: it saves its sessions, every connection drops, new
    /// ones are refused until [`Mosquitto::resume`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the backhaul does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Backhaul {
    /// Bytes flow both ways.
    Up = 0,
    /// Connections are closed and refused.
    Down = 1,
    /// Connections stay open but every byte is silently dropped, both ways.
    Blackhole = 2,
}

/// A TCP proxy from a local port to the broker, whose behaviour the test switches.
pub struct BackhaulProxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    /// Delay added before each chunk is forwarded, ms (a slow link).
    delay_ms: Arc<AtomicU64>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
}

impl BackhaulProxy {
    pub fn start(broker_port: u16) -> BackhaulProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(Backhaul::Up as u8));
        let connections = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let proxy = BackhaulProxy {
            port,
            mode: mode.clone(),
            delay_ms: delay_ms.clone(),
            connections: connections.clone(),
        };
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if mode.load(Ordering::SeqCst) == Backhaul::Down as u8 {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(broker) = TcpStream::connect(("127.0.0.1", broker_port)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                for (from, to) in [
                    (client.try_clone().unwrap(), broker.try_clone().unwrap()),
                    (broker, client),
                ] {
                    let mode = mode.clone();
                    let delay_ms = delay_ms.clone();
                    std::thread::spawn(move || pump(from, to, &mode, &delay_ms));
                }
            }
        });
        proxy
    }

    pub fn set(&self, backhaul: Backhaul) {
        self.mode.store(backhaul as u8, Ordering::SeqCst);
    }

    /// Delays every forwarded chunk by `delay` (a slow backhaul).
    pub fn slow_down(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` while the backhaul is up; drops the bytes while it is a black
/// hole; closes both when it goes down or either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8, delay_ms: &AtomicU64) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let current = mode.load(Ordering::SeqCst);
        if current == Backhaul::Down as u8 {
            break;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                let delay = delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                if mode.load(Ordering::SeqCst) == Backhaul::Up as u8
                    && to.write_all(&buffer[..read]).is_err()
                {
                    break;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// The fleet backend: subscribed to `<prefix>/event/#` at QoS 1, recording every
/// message with its topic.
pub struct Backend {
    pub received: Arc<Mutex<Vec<(String, EventMessage)>>>,
    client: rumqttc::Client,
}

impl Backend {
    /// Subscribes (directly to the broker, not through the proxy) and waits for the
    /// SUBACK.
    pub fn subscribe(broker_port: u16, prefix: &str) -> Backend {
        Backend::subscribe_as(broker_port, prefix, None)
    }

    /// [`Backend::subscribe`] with a user name and password.
    pub fn subscribe_as(
        broker_port: u16,
        prefix: &str,
        credentials: Option<(&str, &str)>,
    ) -> Backend {
        let mut options =
            rumqttc::MqttOptions::new(format!("backend-{}", free_port()), "127.0.0.1", broker_port);
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        options.set_keep_alive(Duration::from_secs(5));
        // A persistent session: a broker that keeps sessions across a restart queues
        // what the agent publishes before the backend is back.
        options.set_clean_session(false);
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut connection) = rumqttc::Client::new(options, 100);
        let publisher = client.clone();
        let filters = [format!("{prefix}/event/#"), format!("{prefix}/response")];
        let received = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        let sink = received.clone();
        std::thread::spawn(move || {
            for notification in connection.iter() {
                match notification {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            let _ = client.try_subscribe_many(filters.iter().map(|filter| {
                                rumqttc::SubscribeFilter::new(
                                    filter.clone(),
                                    rumqttc::QoS::AtLeastOnce,
                                )
                            }));
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                        let message: EventMessage = serde_json::from_slice(&publish.payload)
                            .unwrap_or_else(|error| {
                                panic!("not an event message on {}: {error}", publish.topic)
                            });
                        sink.lock().unwrap().push((publish.topic.clone(), message));
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        subscribed_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the backend's subscription was not acknowledged");
        Backend {
            received,
            client: publisher,
        }
    }

    /// Publishes a command (QoS 1) on `<prefix>/command/<name>`.
    pub fn command(&self, prefix: &str, name: &str, body: &serde_json::Value) {
        self.client
            .publish(
                format!("{prefix}/command/{name}"),
                rumqttc::QoS::AtLeastOnce,
                false,
                serde_json::to_vec(body).unwrap(),
            )
            .unwrap();
    }

    /// The answers to command `command_id` received so far (`command_response`
    /// payloads).
    pub fn responses(&self, command_id: &str) -> Vec<serde_json::Value> {
        self.messages()
            .into_iter()
            .filter(|message| {
                message.kind == "command_response" && message.payload["command_id"] == command_id
            })
            .map(|message| message.payload)
            .collect()
    }

    /// Waits for the `count`th answer to `command_id` and returns it.
    pub fn wait_for_response(&self, command_id: &str, count: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let responses = self.responses(command_id);
            if responses.len() >= count {
                return responses[count - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no answer {count} to command {command_id}; got {responses:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn messages(&self) -> Vec<EventMessage> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, message)| message.clone())
            .collect()
    }

    /// Waits until a message with sequence number `seq` has arrived.
    pub fn wait_for_seq(&self, seq: i64, within: Duration) -> Vec<EventMessage> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.messages();
            if messages.iter().any(|message| message.seq == seq) {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "event {seq} never arrived; got {} messages, last seq {:?}",
                messages.len(),
                messages.last().map(|message| message.seq)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The messages once each (first arrival), and how many were duplicates; panics if
/// two different events share an id.
pub fn deduplicate(messages: &[EventMessage]) -> (Vec<EventMessage>, usize) {
    let mut seen: HashMap<String, EventMessage> = HashMap::new();
    let mut unique = Vec::new();
    let mut duplicates = 0;
    for message in messages {
        match seen.get(&message.id) {
            Some(first) => {
                assert_eq!(
                    first, message,
                    "two different events share id {}",
                    message.id
                );
                duplicates += 1;
            }
            None => {
                seen.insert(message.id.clone(), message.clone());
                unique.push(message.clone());
            }
        }
    }
    (unique, duplicates)
}
