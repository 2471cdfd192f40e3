//! fuotactl's live commands against a running agent: `campaign watch` on a terminal
//! (a pseudo-terminal from util-linux `script`) redraws its bars in place and exits
//! when the campaign ends; `events --follow` prints new events as they happen.

#[path = "support/agent_site.rs"]
mod agent_site;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_site::AgentSite;

/// Collects a child's stdout on a thread.
fn collect(mut stdout: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let output = Arc::new(Mutex::new(Vec::new()));
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(read) = stdout.read(&mut buffer) {
            if read == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buffer[..read]);
        }
    });
    output
}

fn text_of(output: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&output.lock().unwrap()).into_owned()
}

fn wait_for(output: &Arc<Mutex<Vec<u8>>>, what: &str, needle: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !needle(&text_of(output)) {
        assert!(
            Instant::now() < deadline,
            "{what}; output so far:\n{}",
            text_of(output)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running agent with two board-a devices, an image and a started campaign; its id.
fn running_campaign() -> (AgentSite, String) {
    let site = AgentSite::start("");
    site.add_device("70b3d57ed0050001", "board-a");
    site.add_device("70b3d57ed0050002", "board-a");
    let (sha256, _) = site.import_image("1.3.0");
    let id = site.create_campaign("north", &sha256, "board-a", true);
    (site, id)
}

#[test]
fn campaign_watch_on_a_terminal_redraws_its_bars_until_the_campaign_ends() {
    let (site, id) = running_campaign();
    let command = format!(
        "{} --socket {} campaign watch {id} --interval-s 1",
        env!("CARGO_BIN_EXE_fuotactl"),
        site.socket.display()
    );
    // `script` gives fuotactl a pseudo-terminal as its stdout; -e passes its exit code.
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script");
    let output = collect(child.stdout.take().unwrap());
    // Two frames: the second moves the cursor up over the first (3 lines: the
    // campaign, the devices bar, 2 device lines = 4) and redraws it.
    wait_for(&output, "no redrawn frame", |text| text.contains("\x1b[4A"));
    let text = text_of(&output);
    assert!(
        text.contains(&format!("campaign {id} north  running")),
        "{text}"
    );
    assert!(
        text.contains("devices  [------------------------------] 0/2 ended"),
        "{text}"
    );
    assert!(text.contains("70b3d57ed0050001  ["), "{text}");
    assert!(text.contains("70b3d57ed0050002  ["), "{text}");
    assert!(
        text.contains("\x1b[2K"),
        "lines are cleared before being drawn: {text:?}"
    );

    site.ok(&["campaign", "cancel", &id]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "watch did not end:\n{}",
            text_of(&output)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Cancelled: the last frame says so, and the exit code says not everything updated.
    assert_eq!(status.code(), Some(1), "{}", text_of(&output));
    let text = text_of(&output);
    let last_frame = &text[text.rfind("\x1b[4A").unwrap()..];
    assert!(last_frame.contains("cancelled"), "{last_frame:?}");
    assert!(last_frame.contains("2/2 ended"), "{last_frame:?}");
}

#[test]
fn events_follow_prints_new_events_as_they_happen() {
    let site = AgentSite::start("");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fuotactl"))
        .arg("--socket")
        .arg(&site.socket)
        .args(["events", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = collect(child.stdout.take().unwrap());
    // What is there already, under a header.
    wait_for(&output, "no header", |text| {
        text.contains("KIND") && text.contains("agent_started")
    });
    assert!(!text_of(&output).contains("device_added"));
    // Then each new event, as it happens.
    site.add_device("70b3d57ed0050009", "board-a");
    wait_for(&output, "the new device never showed", |text| {
        text.lines()
            .any(|line| line.contains("device_added") && line.contains("70b3d57ed0050009"))
    });
    site.ok(&["device", "remove", "70b3d57ed0050009"]);
    wait_for(&output, "the removal never showed", |text| {
        text.contains("device_removed")
    });
    // The header came once.
    assert_eq!(text_of(&output).matches("KIND").count(), 1);
    let _ = child.kill();
    let _ = child.wait();
}
