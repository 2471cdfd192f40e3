//! `fuotactl` against a running `fuota-agent run`, as a technician uses it: every
//! command of the local API in human and JSON output, the exit codes (0 done, 1 refused,
//! 3 no agent), all-or-nothing CSV imports, keys that never come back out, and callers
//! outside the API group refused while members (primary or supplementary) are served.

use std::process::Command;

#[path = "support/agent_site.rs"]
mod agent_site;

use agent_site::{fixture, text, AgentSite as Agent};

const APP_KEY: &str = "00112233445566778899aabbccddeeff";
const GEN_APP_KEY: &str = "ffeeddccbbaa99887766554433221100";

#[test]
fn a_technician_registers_devices_imports_an_image_and_drives_a_campaign() {
    let agent = Agent::start("");

    // Status, human and JSON.
    let status = agent.ok(&["status"]);
    assert!(
        status.contains(&format!("fuota-agent {}", env!("CARGO_PKG_VERSION"))),
        "{status}"
    );
    assert!(status.contains("devices    0"), "{status}");
    let status = agent.json(&["status"]);
    assert_eq!(status["devices"], 0);
    assert_eq!(status["counters"]["uplinks"], 0);

    // One device by hand: its keys never come back out.
    let added = agent.ok(&[
        "device",
        "add",
        "--dev-eui",
        "70b3d57ed0050001",
        "--join-eui",
        "70b3d57ed0050000",
        "--app-key",
        APP_KEY,
        "--gen-app-key",
        GEN_APP_KEY,
        "--hardware-version",
        "board-a",
        "--tag",
        "site=north",
    ]);
    assert!(added.contains("added device 70b3d57ed0050001"), "{added}");
    let shown = agent.ok(&["device", "show", "70b3d57ed0050001"]);
    assert!(
        shown.contains("board-a") && shown.contains("site=north"),
        "{shown}"
    );
    let device = agent.json(&["device", "show", "70b3d57ed0050001"]);
    assert_eq!(device["has_app_key"], true);
    assert_eq!(device["has_nwk_key"], false);
    assert_eq!(device["has_gen_app_key"], true);
    let everything = format!(
        "{}{}{}",
        shown,
        device,
        agent.ok(&["--json", "device", "list"])
    );
    assert!(!everything.contains(APP_KEY) && !everything.contains(GEN_APP_KEY));
    // A second registration of the same DevEUI is refused (exit 1).
    let refused = agent.fails(
        1,
        &[
            "device",
            "add",
            "--dev-eui",
            "70b3d57ed0050001",
            "--join-eui",
            "70b3d57ed0050000",
        ],
    );
    assert!(refused.contains("70b3d57ed0050001"), "{refused}");
    // A wrong key is refused without echoing it.
    let refused = agent.fails(
        1,
        &[
            "device",
            "add",
            "--dev-eui",
            "70b3d57ed0050009",
            "--join-eui",
            "70b3d57ed0050000",
            "--app-key",
            "secretsecret",
        ],
    );
    assert!(
        refused.contains("app_key") && !refused.contains("secretsecret"),
        "{refused}"
    );

    // A CSV import is all or nothing.
    let csv = agent.path("devices.csv");
    std::fs::write(
        &csv,
        format!(
            "dev_eui,join_eui,mac_version,app_key,gen_app_key,hardware_version,tags\n\
             70b3d57ed0050002,70b3d57ed0050000,1.0.4,{APP_KEY},{GEN_APP_KEY},board-a,site=north\n\
             70b3d57ed0050003,70b3d57ed0050000,1.0.9,{APP_KEY},{GEN_APP_KEY},board-a,\n"
        ),
    )
    .unwrap();
    let refused = agent.fails(1, &["device", "import", csv.to_str().unwrap()]);
    assert!(
        refused.contains("device 2") && refused.contains("mac_version"),
        "{refused}"
    );
    assert_eq!(agent.json(&["device", "list"]).as_array().unwrap().len(), 1);
    std::fs::write(
        &csv,
        format!(
            "dev_eui,join_eui,mac_version,app_key,gen_app_key,hardware_version,tags\n\
             70b3d57ed0050002,70b3d57ed0050000,1.0.4,{APP_KEY},{GEN_APP_KEY},board-a,site=north\n\
             # a comment line\n\
             70b3d57ed0050003,70b3d57ed0050000,1.0.3,{APP_KEY},{GEN_APP_KEY},board-b,\n"
        ),
    )
    .unwrap();
    let imported = agent.ok(&["device", "import", csv.to_str().unwrap()]);
    assert!(imported.contains("added 2 devices"), "{imported}");
    let list = agent.ok(&["device", "list"]);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.starts_with("DEV_EUI"), "{list}");

    // Images: import, a second import is a no-op, an unsigned file is refused.
    let image = agent.signed_image("1.3.0");
    let imported = agent.json(&["image", "import", image.to_str().unwrap()]);
    assert_eq!(imported["already_cached"], false);
    let sha256 = imported["image"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(imported["image"]["ts006_version"], "1.3.0");
    let again = agent.ok(&["image", "import", image.to_str().unwrap()]);
    assert!(again.contains("cached already"), "{again}");
    let refused = agent.fails(
        1,
        &["image", "import", fixture("body.bin").to_str().unwrap()],
    );
    assert!(!refused.is_empty());
    let images = agent.ok(&["image", "list"]);
    assert!(
        images.contains(&sha256) && images.contains("1.3.0"),
        "{images}"
    );
    assert!(agent.ok(&["image", "show", &sha256]).contains("0x00010002"));

    // A campaign for the board-a devices, through its lifecycle.
    let created = agent.json(&[
        "campaign",
        "create",
        "--name",
        "north",
        "--image",
        &sha256,
        "--hardware-version",
        "board-a",
    ]);
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["state"], "created");
    let id_text = id.to_string();
    let shown = agent.json(&["campaign", "show", &id_text]);
    assert_eq!(shown["devices"], 2);
    assert_eq!(shown["delivery"], "multicast");
    assert_eq!(shown["device_results"].as_array().unwrap().len(), 2);
    assert!(agent
        .ok(&["campaign", "start", &id_text])
        .contains("is running"));
    assert!(agent
        .ok(&["campaign", "pause", &id_text])
        .contains("is paused"));
    assert!(agent
        .ok(&["campaign", "resume", &id_text])
        .contains("is running"));
    let list = agent.ok(&["campaign", "list"]);
    assert!(
        list.contains("north") && list.contains("running") && list.contains("0/2"),
        "{list}"
    );
    let human = agent.ok(&["campaign", "show", &id_text]);
    assert!(
        human.contains("70b3d57ed0050001") && human.contains("in_progress"),
        "{human}"
    );

    // While it runs, its devices and image cannot be removed.
    let refused = agent.fails(1, &["device", "remove", "70b3d57ed0050001"]);
    assert!(refused.contains("still active"), "{refused}");
    let refused = agent.fails(1, &["image", "remove", &sha256]);
    assert!(refused.contains("still active"), "{refused}");
    // A device that is in a campaign is not taken by a second one.
    let refused = agent.fails(
        1,
        &[
            "campaign",
            "create",
            "--name",
            "again",
            "--image",
            &sha256,
            "--device",
            "70b3d57ed0050002",
        ],
    );
    assert!(refused.contains("already in campaign"), "{refused}");

    assert!(agent
        .ok(&["campaign", "cancel", &id_text])
        .contains("is cancelled"));
    let refused = agent.fails(1, &["campaign", "start", &id_text]);
    assert!(refused.contains("cancelled"), "{refused}");
    // Watching an ended campaign with unsuccessful devices says so and exits 1.
    let output = agent.fuotactl(&["campaign", "watch", &id_text]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).contains("cancelled"),
        "{}",
        text(&output.stdout)
    );
    assert!(
        text(&output.stderr).contains("2 of 2 devices not updated"),
        "{}",
        text(&output.stderr)
    );
    let refused = agent.fails(1, &["campaign", "show", "999"]);
    assert!(refused.contains("no campaign 999"), "{refused}");

    // Now they can go.
    assert!(agent
        .ok(&["device", "remove", "70b3d57ed0050003"])
        .contains("removed"));
    assert_eq!(agent.json(&["device", "list"]).as_array().unwrap().len(), 2);
    agent.fails(1, &["device", "show", "70b3d57ed0050003"]);

    // The event log saw it all.
    let events = agent.ok(&["events", "--limit", "1000"]);
    for kind in [
        "device_added",
        "device_removed",
        "image_imported",
        "campaign_state",
    ] {
        assert!(events.contains(kind), "{kind} missing from\n{events}");
    }
    let device_events = agent.ok(&["--json", "events", "--device", "70b3d57ed0050001"]);
    assert!(!device_events.is_empty());
    for line in device_events.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["dev_eui"], "70b3d57ed0050001", "{line}");
    }
}

#[test]
fn without_an_agent_fuotactl_says_so_and_exits_3() {
    let directory = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fuotactl"))
        .arg("--socket")
        .arg(directory.path().join("api.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("no agent is listening"), "{stderr}");
}

#[test]
fn callers_outside_the_api_group_are_refused_and_members_are_served() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run fuotactl as other users");
        return;
    }
    // The group "users" (gid 100) is the API group; uid 65534 (nobody) calls.
    let Some(group) = nix::unistd::Group::from_name("users").ok().flatten() else {
        eprintln!("skipped: no group \"users\"");
        return;
    };
    let gid = group.gid.as_raw().to_string();
    let agent = Agent::start("users");
    let metadata = std::fs::metadata(&agent.socket).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(metadata.mode() & 0o777, 0o660);
    assert_eq!(metadata.gid(), group.gid.as_raw());
    // Let nobody reach the socket and its directory, so the agent's own check decides.
    std::fs::set_permissions(
        agent.directory.path(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let as_user = |groups: &str, regid: &str| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", &format!("--regid={regid}")])
            .arg(if groups.is_empty() {
                "--clear-groups".to_string()
            } else {
                format!("--groups={groups}")
            })
            .arg(env!("CARGO_BIN_EXE_fuotactl"))
            .arg("--socket")
            .arg(&agent.socket)
            .arg("status");
        command.output().unwrap()
    };

    // Outside the group: the socket's mode keeps them out.
    let output = as_user("", "65534");
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("permission denied"),
        "{}",
        text(&output.stderr)
    );

    // With the socket opened to all, the agent's credential check refuses them (403).
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = as_user("", "65534");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("uid 65534 may not use the fuota-agent API"),
        "{stderr}"
    );
    assert!(stderr.contains("\"users\""), "{stderr}");
    assert!(
        agent.log().contains("API caller refused"),
        "{}",
        agent.log()
    );

    // A supplementary member and a primary member are served.
    let output = as_user(&gid, "65534");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = as_user("", &gid);
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn completions_and_man_pages_cover_every_command() {
    let directory = tempfile::tempdir().unwrap();
    for (binary, section, pages) in [
        (
            env!("CARGO_BIN_EXE_fuotactl"),
            "1",
            &[
                "fuotactl",
                "fuotactl-campaign-watch",
                "fuotactl-device-import",
                "fuotactl-events",
            ][..],
        ),
        (
            env!("CARGO_BIN_EXE_fuota-agent"),
            "8",
            &["fuota-agent", "fuota-agent-run", "fuota-agent-check-config"][..],
        ),
    ] {
        let output = Command::new(binary)
            .arg("manpages")
            .arg(directory.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        for page in pages {
            let path = directory.path().join(format!("{page}.{section}"));
            let roff = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            assert!(roff.contains(".TH"), "{page} is not a man page");
        }
        for shell in ["bash", "zsh", "fish"] {
            let output = Command::new(binary)
                .args(["completions", shell])
                .output()
                .unwrap();
            assert!(output.status.success());
            let script = text(&output.stdout);
            assert!(script.contains("completions"), "{binary} {shell}");
        }
    }
    let bash = Command::new(env!("CARGO_BIN_EXE_fuotactl"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let script = text(&bash.stdout);
    for word in ["campaign", "watch", "--hardware-version", "--socket"] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    // The campaign-watch page says what the command does.
    let watch =
        std::fs::read_to_string(directory.path().join("fuotactl-campaign-watch.1")).unwrap();
    assert!(watch.contains("every device succeeded"), "{watch}");
}

/// One HTTP/1.1 request over TCP; the status code and body.
fn http(address: &str, request_line: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{request_line} HTTP/1.1\r\nHost: agent\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn the_monitoring_listener_serves_metrics_and_status_and_changes_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut agent = Agent::new("");
    let mut config = std::fs::read_to_string(&agent.config).unwrap();
    // [api] is the configuration's last section.
    config.push_str(&format!("metrics_listen = \"{address}\"\n"));
    std::fs::write(&agent.config, config).unwrap();
    agent.run();
    agent.add_device("70b3d57ed0050001", "board-a");
    let (sha256, _) = agent.import_image("1.3.0");
    agent.ok(&[
        "campaign",
        "create",
        "--name",
        "m",
        "--image",
        &sha256,
        "--device",
        "70b3d57ed0050001",
        "--start",
    ]);

    let (code, metrics) = http(&address, "GET /metrics");
    assert_eq!(code, 200, "{metrics}");
    for line in [
        "fuota_devices 1",
        "fuota_images 1",
        "fuota_campaigns{state=\"running\"} 1",
        "fuota_campaign_devices{campaign=\"1\"} 1",
        "fuota_campaign_device_results{campaign=\"1\",status=\"in_progress\"} 1",
        "fuota_uplinks_total 0",
    ] {
        assert!(
            metrics.lines().any(|got| got == line),
            "no {line:?} in\n{metrics}"
        );
    }
    let (code, status) = http(&address, "GET /v1/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["devices"], 1);
    // Read-only: nothing that changes the agent is served here.
    let (code, _) = http(&address, "POST /v1/campaigns/1/cancel");
    assert_eq!(code, 404);
    let (code, _) = http(&address, "GET /v1/devices");
    assert_eq!(code, 404);
    assert_eq!(agent.json(&["campaign", "show", "1"])["state"], "running");
}
