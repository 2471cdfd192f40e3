//! Load generator for the pass-through: how much latency and CPU the agent adds when a
//! gateway sends 500 uplinks per second that all belong to an upstream network server.
//!
//! It runs the real daemon (`fuota-agent run`, built in release mode beside this
//! example) with one upstream, plays the gateway (one PUSH_DATA per uplink) and the
//! upstream (a socket that timestamps what arrives), and prints the latency percentiles
//! through the agent against a direct gateway→upstream baseline on the same loopback,
//! and the agent process's CPU use from /proc.
//!
//! ```sh
//! cargo build --release -p fuota-agent
//! cargo run --release -p fuota-agent --example pass_through_load -- [rate] [seconds]
//! ```

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;

const GATEWAY: [u8; 8] = [0x00, 0x16, 0xc0, 0x01, 0xff, 0x10, 0xa2, 0x35];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rate: u32 = args
        .next()
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(500);
    let seconds: u32 = args
        .next()
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(10);
    let count = rate * seconds;

    let baseline = run(rate, count, None)?;
    let agent_binary = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|release| release.join("fuota-agent"))
        .ok_or("cannot find the target directory")?;
    if !agent_binary.exists() {
        return Err(format!(
            "{} not found: build it first with `cargo build --release -p fuota-agent`",
            agent_binary.display()
        )
        .into());
    }
    let through = run(rate, count, Some(agent_binary))?;

    println!("pass-through load: {rate} uplinks/s for {seconds} s ({count} uplinks)");
    println!(
        "  direct  (gateway -> upstream): p50 {:>6} us  p99 {:>6} us  max {:>6} us  received {}/{}",
        baseline.p50_us, baseline.p99_us, baseline.max_us, baseline.received, count
    );
    println!(
        "  through the agent            : p50 {:>6} us  p99 {:>6} us  max {:>6} us  received {}/{}",
        through.p50_us, through.p99_us, through.max_us, through.received, count
    );
    println!(
        "  added by the agent           : p50 {:>6} us  p99 {:>6} us",
        through.p50_us.saturating_sub(baseline.p50_us),
        through.p99_us.saturating_sub(baseline.p99_us)
    );
    if let Some(cpu) = through.agent_cpu_percent {
        println!("  agent CPU                    : {cpu:.1} % of one core");
    }
    Ok(())
}

struct Figures {
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    received: usize,
    agent_cpu_percent: Option<f64>,
}

fn run(
    rate: u32,
    count: u32,
    agent: Option<PathBuf>,
) -> Result<Figures, Box<dyn std::error::Error>> {
    let upstream = UdpSocket::bind("127.0.0.1:0")?;
    upstream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let upstream_address = upstream.local_addr()?;
    let gateway = UdpSocket::bind("127.0.0.1:0")?;
    gateway.set_read_timeout(Some(Duration::from_millis(5)))?;

    let mut child = None;
    let mut directory = None;
    let target = match &agent {
        None => upstream_address,
        Some(binary) => {
            let dir = tempfile::tempdir()?;
            let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
            let config = dir.path().join("agent.toml");
            std::fs::write(
                &config,
                format!(
                    "[storage]\ndatabase = \"{}\"\n[packet_forwarder]\nbind = \"127.0.0.1:{port}\"\n\
                     [[upstream]]\nname = \"load\"\nserver = \"{upstream_address}\"\n[logging]\nlevel = \"warn\"\n",
                    dir.path().join("agent.db").display()
                ),
            )?;
            child = Some(
                Command::new(binary)
                    .args(["run", "--config"])
                    .arg(&config)
                    .stderr(Stdio::null())
                    .spawn()?,
            );
            directory = Some(dir);
            let agent_address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
            // Wait until the agent acknowledges, and open the downlink path.
            let started = Instant::now();
            let mut buffer = [0u8; 64];
            loop {
                if started.elapsed() > Duration::from_secs(10) {
                    return Err("the agent did not start".into());
                }
                let mut pull_data = vec![2, 0, 0, 0x02];
                pull_data.extend_from_slice(&GATEWAY);
                gateway.send_to(&pull_data, agent_address)?;
                if gateway.recv_from(&mut buffer).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            agent_address
        }
    };
    let pid = child.as_ref().map(|child| child.id());
    let cpu_before = pid.and_then(process_cpu_ticks);

    // The upstream timestamps what arrives, by sequence number (in the payload).
    let (arrivals_tx, arrivals_rx) = mpsc::channel::<(u32, Instant)>();
    let sink = std::thread::spawn(move || {
        let mut buffer = vec![0u8; 4096];
        while let Ok((len, _)) = upstream.recv_from(&mut buffer) {
            if len > 12 && buffer[3] == 0x00 {
                if let Some(sequence) = sequence_of(&buffer[12..len]) {
                    let _ = arrivals_tx.send((sequence, Instant::now()));
                }
            }
        }
    });

    let interval = Duration::from_secs(1) / rate;
    let started = Instant::now();
    let mut sent_at = Vec::with_capacity(count as usize);
    let mut ack_buffer = [0u8; 64];
    for sequence in 0..count {
        let due = started + interval * sequence;
        while Instant::now() < due {
            // Drain PUSH_ACKs while waiting.
            let _ = gateway.recv_from(&mut ack_buffer);
            std::thread::yield_now();
        }
        let datagram = push_data(sequence);
        sent_at.push(Instant::now());
        gateway.send_to(&datagram, target)?;
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(600));
    let cpu_after = pid.and_then(process_cpu_ticks);
    if let Some(mut child) = child {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    drop(directory);
    let _ = sink.join();

    let mut latencies: Vec<u64> = arrivals_rx
        .try_iter()
        .filter_map(|(sequence, at)| {
            let sent = sent_at.get(sequence as usize)?;
            Some(u64::try_from(at.duration_since(*sent).as_micros()).unwrap_or(u64::MAX))
        })
        .collect();
    latencies.sort_unstable();
    let percentile = |p: usize| {
        latencies
            .get((latencies.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let agent_cpu_percent = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => {
            Some((after - before) as f64 / ticks_per_second / (elapsed.as_secs_f64() + 0.6) * 100.0)
        }
        _ => None,
    };
    Ok(Figures {
        p50_us: percentile(50),
        p99_us: percentile(99),
        max_us: latencies.last().copied().unwrap_or(0),
        received: latencies.len(),
        agent_cpu_percent,
    })
}

/// A PUSH_DATA with one foreign uplink whose FRMPayload carries the sequence number.
fn push_data(sequence: u32) -> Vec<u8> {
    let mut frame = vec![0x40, 0x01, 0x00, 0x00, 0x26, 0x00, 0x00, 0x00, 0x01];
    frame.extend_from_slice(&sequence.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    let body = format!(
        r#"{{"rxpk":[{{"tmst":{},"chan":0,"rfch":0,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-60,"lsnr":7.0,"size":{},"data":"{}"}}]}}"#,
        sequence.wrapping_mul(2000),
        frame.len(),
        base64::engine::general_purpose::STANDARD.encode(&frame)
    );
    let mut datagram = vec![2, (sequence >> 8) as u8, sequence as u8, 0x00];
    datagram.extend_from_slice(&GATEWAY);
    datagram.extend_from_slice(body.as_bytes());
    datagram
}

fn sequence_of(json: &[u8]) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let data = value["rxpk"][0]["data"].as_str()?;
    let frame = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    let bytes: [u8; 4] = frame.get(9..13)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// utime + stime of a process, in clock ticks.
fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}
