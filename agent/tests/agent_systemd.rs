//! `fuota-agent run` under a service manager, as systemd runs it (Type=notify,
//! WatchdogSec=): a datagram socket plays systemd's NOTIFY_SOCKET. READY=1 comes once
//! the database is open and the packet-forwarder socket is bound (a PUSH_DATA sent
//! right after it is acknowledged), WATCHDOG=1 keeps coming from the running loop, and
//! SIGTERM brings STOPPING=1 and a clean exit.

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn next_message(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let length = socket
        .recv(&mut buffer)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let directory = tempfile::tempdir().unwrap();
    let notify_path = directory.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = directory.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndatabase = \"{dir}/agent.db\"\n[packet_forwarder]\nbind = \"127.0.0.1:{port}\"\n\
             [firmware]\ncache_directory = \"{dir}/images\"\n[api]\nsocket = \"{dir}/api.sock\"\ngroup = \"\"\n",
            dir = directory.path().display()
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_fuota-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let ready = next_message(&notify);
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        ready.contains(&format!(
            "STATUS=serving packet forwarders on 127.0.0.1:{port}"
        )),
        "{ready}"
    );
    // Bound by the time it said so: a PUSH_DATA is acknowledged at once.
    let gateway = UdpSocket::bind("127.0.0.1:0").unwrap();
    gateway
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut push_data = vec![2, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    push_data.extend_from_slice(br#"{"stat":{}}"#);
    gateway.send_to(&push_data, ("127.0.0.1", port)).unwrap();
    let mut ack = [0u8; 16];
    let (length, _) = gateway.recv_from(&mut ack).expect("PUSH_ACK");
    assert_eq!(&ack[..length], &[2, 0, 7, 1]);

    // The watchdog is fed, and STATUS= says what the agent serves.
    let started = Instant::now();
    let (mut watchdog, mut status) = (false, false);
    while !(watchdog && status) {
        assert!(started.elapsed() < WAIT, "no WATCHDOG=1 or no STATUS= line");
        let message = next_message(&notify);
        watchdog |= message.contains("WATCHDOG=1");
        status |= message.contains("STATUS=serving 0 devices; no campaign running");
    }

    assert!(Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap()
        .success());
    loop {
        let message = next_message(&notify);
        if message.contains("STOPPING=1") {
            break;
        }
        assert!(
            message.contains("WATCHDOG=1") || message.starts_with("STATUS="),
            "unexpected {message}"
        );
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < WAIT, "the agent did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
