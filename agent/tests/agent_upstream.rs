//! The real `fuota-agent run` with `[mqtt]` configured: it publishes what it records,
//! reports the link in `fuotactl status`, loses nothing when killed with SIGKILL in the
//! middle of publishing (what it sends again carries the same ids), and refuses to
//! start on a password file others can read.

#[path = "support/agent_site.rs"]
mod agent_site;
#[path = "support/mqtt.rs"]
mod mqtt;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use agent_site::{text, AgentSite, TEST_KEY};
use fuota_agent::storage::Storage;
use mqtt::{deduplicate, start_rumqttd, Backend, BackhaulProxy};

fn add_mqtt_section(site: &AgentSite, section: &str) {
    let mut config = std::fs::read_to_string(&site.config).unwrap();
    config.push_str(section);
    std::fs::write(&site.config, config).unwrap();
}

fn stored_ids(site: &AgentSite) -> Vec<i64> {
    let reader = Storage::open_reader(&site.path("agent.db")).unwrap();
    reader
        .events_after(0, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|event| event.id)
        .collect()
}

#[test]
fn the_agent_killed_while_publishing_loses_nothing_and_duplicates_carry_the_same_id() {
    let broker = start_rumqttd(&[("fleet", "s3cret")]);
    let proxy = BackhaulProxy::start(broker);
    let backend = Backend::subscribe_as(broker, "fuota/gw-kill", Some(("fleet", "s3cret")));
    let mut site = AgentSite::new("");
    let password = site.path("mqtt-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    add_mqtt_section(
        &site,
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{}\"\ngateway_id = \"gw-kill\"\n\
             username = \"fleet\"\npassword_file = \"{}\"\nmax_in_flight = 4\n\
             reconnect_min_s = 1\nreconnect_max_s = 1\n",
            proxy.port,
            password.display()
        ),
    );
    site.run();
    let status = site.json(&["status"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while site.json(&["status"])["upstream"]["connected"] != true {
        assert!(
            Instant::now() < deadline,
            "never connected: {status}\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let human = site.ok(&["status"]);
    assert!(
        human.contains(&format!(
            "upstream   mqtt://127.0.0.1:{} connected",
            proxy.port
        )),
        "{human}"
    );

    // 300 devices in one import: 300 events to publish, over a slow backhaul.
    proxy.slow_down(Duration::from_millis(3));
    let csv = site.path("devices.csv");
    let mut rows =
        String::from("dev_eui,join_eui,mac_version,app_key,gen_app_key,hardware_version\n");
    for index in 0..300u64 {
        rows.push_str(&format!(
            "{:016x},70b3d57ed0050000,1.0.4,{TEST_KEY},{TEST_KEY},board-a\n",
            0x0016_c001_0000_0000u64 + index
        ));
    }
    std::fs::write(&csv, rows).unwrap();
    site.ok(&["device", "import", csv.to_str().unwrap()]);

    // Kill it in the middle of publishing them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let added = backend
            .messages()
            .iter()
            .filter(|message| message.kind == "device_added")
            .count();
        if added >= 20 {
            assert!(
                added < 300,
                "everything went out before the kill; slow the proxy down"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing never started:\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .args(["-KILL", &site.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    site.forget_killed();
    proxy.slow_down(Duration::ZERO);

    site.run();
    let ids = stored_ids(&site);
    let messages = backend.wait_for_seq(*ids.last().unwrap(), Duration::from_secs(60));
    let (unique, duplicates) = deduplicate(&messages);
    let sequence: Vec<i64> = unique.iter().map(|message| message.seq).collect();
    let ids = stored_ids(&site);
    assert_eq!(
        &sequence[..],
        &ids[..sequence.len()],
        "an event was lost or out of order"
    );
    assert_eq!(
        unique
            .iter()
            .filter(|message| message.kind == "device_added")
            .count(),
        300
    );
    eprintln!(
        "{} messages, {duplicates} duplicates after the kill",
        messages.len()
    );
    site.stop();
}

#[test]
fn a_password_file_others_can_read_stops_the_agent_and_check_config_says_why() {
    let site = AgentSite::new("");
    let password = site.path("mqtt-password");
    std::fs::write(&password, "s3cret").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    add_mqtt_section(
        &site,
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:1\"\nusername = \"fleet\"\npassword_file = \"{}\"\n",
            password.display()
        ),
    );
    let checked = site.agent_command(&["check-config"]);
    assert_eq!(checked.status.code(), Some(1));
    let message = text(&checked.stderr);
    assert!(message.contains("password_file"), "{message}");
    assert!(message.contains("mode 0644"), "{message}");
    assert!(message.contains("chmod 0640"), "{message}");

    let run = site.agent_command(&["run"]);
    assert!(!run.status.success());
    let log = text(&run.stderr);
    assert!(log.contains("cannot start upstream sync ([mqtt])"), "{log}");
    assert!(log.contains("mode 0644"), "{log}");

    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o640)).unwrap();
    let checked = site.agent_command(&["check-config"]);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
}
