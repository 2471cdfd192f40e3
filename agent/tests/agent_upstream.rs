//! The real `fuota-agent run` with `[mqtt]` configured: it publishes what it records,
//! reports the link in `fuotactl status`, loses nothing when killed with SIGKILL in the
//! middle of publishing (what it sends again carries the same ids), and refuses to
//! start on a password file others can read.

#[path = "support/agent_site.rs"]
mod agent_site;
#[path = "support/certificates.rs"]
mod certificates;
#[path = "support/https.rs"]
mod https;
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

fn command_site(broker: u16, gateway_id: &str) -> AgentSite {
    command_site_with(broker, gateway_id, "")
}

fn command_site_with(broker: u16, gateway_id: &str, extra: &str) -> AgentSite {
    let mut site = AgentSite::new("");
    add_mqtt_section(
        &site,
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{broker}\"\ngateway_id = \"{gateway_id}\"\n\
             reconnect_min_s = 1\nreconnect_max_s = 1\n{extra}"
        ),
    );
    site.run();
    site
}

/// Waits until the agent listens for commands.
fn wait_until_subscribed(site: &AgentSite) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while site.json(&["status"])["upstream"]["commands_subscribed"] != true {
        assert!(
            Instant::now() < deadline,
            "never subscribed:\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn new_device(dev_eui: &str) -> serde_json::Value {
    serde_json::json!({
        "dev_eui": dev_eui,
        "join_eui": "70b3d57ed0050000",
        "mac_version": "1.0.4",
        "app_key": TEST_KEY,
        "gen_app_key": TEST_KEY,
        "hardware_version": "board-a",
    })
}

fn device_count(site: &AgentSite) -> usize {
    site.json(&["device", "list"]).as_array().unwrap().len()
}

#[test]
fn commands_from_upstream_are_applied_once_by_id_and_answered() {
    let broker = start_rumqttd(&[]);
    let prefix = "fuota/gw-cmd";
    let backend = Backend::subscribe(broker, prefix);
    let site = command_site(broker, "gw-cmd");
    wait_until_subscribed(&site);

    let add = serde_json::json!({
        "id": "c-1",
        "devices": [new_device("0016c00100000001"), new_device("0016c00100000002")],
    });
    backend.command(prefix, "add_devices", &add);
    let answer = backend.wait_for_response("c-1", 1);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["duplicate"], false);
    assert_eq!(answer["result"]["added"].as_array().unwrap().len(), 2);
    assert_eq!(device_count(&site), 2);

    // The same command again (a redelivery): answered again, applied once.
    backend.command(prefix, "add_devices", &add);
    let again = backend.wait_for_response("c-1", 2);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["result"], answer["result"]);
    assert_eq!(device_count(&site), 2);
    // A new command registering the same devices: nothing to do, and it says so.
    backend.command(
        prefix,
        "add_devices",
        &serde_json::json!({ "id": "c-2", "devices": add["devices"] }),
    );
    let same = backend.wait_for_response("c-2", 1);
    assert_eq!(same["ok"], true);
    assert_eq!(
        same["result"]["already_registered"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A campaign created and started from upstream.
    let (sha256, _) = site.import_image("1.3.0");
    let create = serde_json::json!({
        "id": "c-3",
        "campaign": {
            "name": "from-upstream",
            "image_sha256": sha256,
            "targets": { "kind": "hardware_version", "hardware_version": "board-a" },
            "delivery": "multicast",
        },
        "start": true,
    });
    backend.command(prefix, "create_campaign", &create);
    let created = backend.wait_for_response("c-3", 1);
    assert_eq!(created["ok"], true, "{created}");
    assert_eq!(created["result"]["state"], "running");
    let campaign = created["result"]["campaign"].as_i64().unwrap();
    let campaigns = site.json(&["campaign", "list"]);
    assert_eq!(campaigns.as_array().unwrap().len(), 1);
    assert_eq!(campaigns[0]["name"], "from-upstream");

    // Cancelling twice (two commands) succeeds twice, cancels once.
    for id in ["c-4", "c-5"] {
        backend.command(
            prefix,
            "cancel_campaign",
            &serde_json::json!({ "id": id, "campaign": campaign }),
        );
        let cancelled = backend.wait_for_response(id, 1);
        assert_eq!(cancelled["ok"], true, "{cancelled}");
        assert_eq!(cancelled["result"]["state"], "cancelled");
    }

    // Mistakes are answered with what is wrong.
    backend.command(
        prefix,
        "remove_device",
        &serde_json::json!({ "id": "c-6", "dev_eui": "nope" }),
    );
    let refused = backend.wait_for_response("c-6", 1);
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"]["kind"], "invalid");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("dev_eui \"nope\""));
    backend.command(
        prefix,
        "start_campaign",
        &serde_json::json!({ "id": "c-7", "campaign": 999 }),
    );
    let missing = backend.wait_for_response("c-7", 1);
    assert_eq!(missing["error"]["kind"], "not_found");
    backend.command(prefix, "reboot", &serde_json::json!({ "id": "c-8" }));
    let unknown = backend.wait_for_response("c-8", 1);
    assert!(unknown["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown command"));
    site.ok(&["status"]);
}

#[test]
fn a_command_sent_while_the_agent_is_stopped_is_applied_when_it_comes_back() {
    command_while_stopped("");
}

#[test]
fn over_mqtt_5_a_command_sent_while_the_agent_is_stopped_is_applied_when_it_comes_back() {
    // MQTT 5 ends a session at the disconnect unless it has an expiry interval.
    command_while_stopped("protocol = \"5\"\n");
}

fn command_while_stopped(extra: &str) {
    let Some(binary) = mqtt::mosquitto_binary() else {
        return;
    };
    let broker = mqtt::Mosquitto::start(binary);
    let prefix = "fuota/gw-offline";
    let backend = Backend::subscribe(broker.port, prefix);
    let mut site = command_site_with(broker.port, "gw-offline", extra);
    site.add_device("0016c00100000009", "board-a");
    wait_until_subscribed(&site);
    site.stop();

    // The broker keeps the agent's session: the command waits there.
    backend.command(
        prefix,
        "remove_device",
        &serde_json::json!({ "id": "c-offline", "dev_eui": "0016c00100000009" }),
    );
    std::thread::sleep(Duration::from_millis(300));
    site.run();
    let answer = backend.wait_for_response("c-offline", 1);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["result"]["removed"], true);
    assert_eq!(device_count(&site), 0);
    site.stop();
}

/// An agent with `[mqtt]` commands on and the firmware server's CA trusted for
/// downloads; waits until it listens for commands.
fn download_site(broker: u16, gateway_id: &str, server: &https::FirmwareServer) -> AgentSite {
    let mut site = site_trusting(server);
    add_mqtt_section(
        &site,
        &format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:{broker}\"\ngateway_id = \"{gateway_id}\"\n\
             reconnect_min_s = 1\nreconnect_max_s = 1\n"
        ),
    );
    site.run();
    wait_until_subscribed(&site);
    site
}

/// An agent (not started) that trusts the firmware server's CA for downloads.
fn site_trusting(server: &https::FirmwareServer) -> AgentSite {
    let site = AgentSite::new("");
    let ca = site.path("firmware-ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let config = std::fs::read_to_string(&site.config).unwrap();
    let config = config.replacen(
        "trusted_keys = [",
        &format!("download_ca_file = \"{}\"\ntrusted_keys = [", ca.display()),
        1,
    );
    std::fs::write(&site.config, config).unwrap();
    site
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Nothing is left in the download directory.
fn assert_no_part_files(site: &AgentSite) {
    let left: Vec<_> = std::fs::read_dir(site.path("images/downloads"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the download directory: {left:?}");
}

fn cached_images(site: &AgentSite) -> Vec<String> {
    site.json(&["image", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|image| image["sha256"].as_str().unwrap().to_string())
        .collect()
}

/// Waits for the upstream event of `kind` about download `download`.
fn wait_for_download_event(
    backend: &Backend,
    kind: &str,
    download: i64,
    site: &AgentSite,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(event) = backend
            .messages()
            .into_iter()
            .find(|message| message.kind == kind && message.payload["download"] == download)
        {
            return event.payload;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} for download {download}:\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_announced_image_cut_half_way_resumes_and_enters_the_cache() {
    let broker = start_rumqttd(&[]);
    let prefix = "fuota/gw-dl";
    let backend = Backend::subscribe(broker, prefix);
    let server = https::FirmwareServer::start();
    let site = download_site(broker, "gw-dl", &server);
    let image = std::fs::read(site.signed_image("1.4.0")).unwrap();
    let sha256 = sha256_hex(&image);
    server.put("/images/app-1.4.0.img", image.clone());
    let half = image.len() / 2;
    server.cut_next_after(half);

    backend.command(
        prefix,
        "announce_image",
        &serde_json::json!({
            "id": "dl-1",
            "url": server.url("/images/app-1.4.0.img"),
            "sha256": sha256,
            "size": image.len(),
            "version": "1.4.0",
        }),
    );
    let answer = backend.wait_for_response("dl-1", 1);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["result"]["already_cached"], false);
    let download = answer["result"]["download"].as_i64().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while !cached_images(&site).contains(&sha256) {
        assert!(Instant::now() < deadline, "never imported:\n{}", site.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The second request asked for the second half only.
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].1, None);
    assert_eq!(
        requests[1].1.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
    // The backend heard it start and end, and the part file is gone.
    let started = wait_for_download_event(&backend, "image_download_started", download, &site);
    assert_eq!(started["sha256"], sha256);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !backend
        .messages()
        .iter()
        .any(|message| message.kind == "image_imported" && message.payload["sha256"] == sha256)
    {
        assert!(Instant::now() < deadline, "image_imported never published");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_no_part_files(&site);

    // Announcing it again: already in the cache, nothing fetched.
    backend.command(
        prefix,
        "announce_image",
        &serde_json::json!({ "id": "dl-2", "url": server.url("/images/app-1.4.0.img"), "sha256": sha256, "size": image.len() }),
    );
    let again = backend.wait_for_response("dl-2", 1);
    assert_eq!(again["result"]["already_cached"], true, "{again}");
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_corrupted_an_unsigned_or_a_missing_download_never_enters_the_cache() {
    let broker = start_rumqttd(&[]);
    let prefix = "fuota/gw-bad";
    let backend = Backend::subscribe(broker, prefix);
    let server = https::FirmwareServer::start();
    let site = download_site(broker, "gw-bad", &server);
    let image = std::fs::read(site.signed_image("1.5.0")).unwrap();

    // Corrupted on the way: one byte differs, the length is right.
    let mut corrupted = image.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x40;
    server.put("/corrupted.img", corrupted);
    // Signed by a key the agent does not trust: the announced hash is right.
    let other_key = site.path("other-key.pem");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let untrusted_path = site.path("untrusted.img");
    let signed = Command::new(env!("CARGO_BIN_EXE_fuotactl"))
        .args(["image", "sign", "--key"])
        .arg(&other_key)
        .args(["--version", "1.5.0", "--hardware-version", "0x00010002"])
        .arg(agent_site::fixture("body.bin"))
        .arg(&untrusted_path)
        .output()
        .unwrap();
    assert!(signed.status.success(), "{}", text(&signed.stderr));
    let untrusted = std::fs::read(&untrusted_path).unwrap();
    server.put("/untrusted.img", untrusted.clone());

    let cases = [
        (
            "bad-1",
            "/corrupted.img",
            sha256_hex(&image),
            image.len(),
            "SHA-256",
        ),
        (
            "bad-2",
            "/untrusted.img",
            sha256_hex(&untrusted),
            untrusted.len(),
            "refused by the image cache",
        ),
        ("bad-3", "/missing.img", sha256_hex(b"missing"), 1000, "404"),
    ];
    for (id, path, sha256, size, reason) in cases {
        backend.command(
            prefix,
            "announce_image",
            &serde_json::json!({ "id": id, "url": server.url(path), "sha256": sha256, "size": size }),
        );
        let answer = backend.wait_for_response(id, 1);
        assert_eq!(answer["ok"], true, "{answer}");
        let download = answer["result"]["download"].as_i64().unwrap();
        let failed = wait_for_download_event(&backend, "image_download_failed", download, &site);
        assert!(
            failed["reason"].as_str().unwrap().contains(reason),
            "{id}: {failed}"
        );
    }
    assert!(
        cached_images(&site).is_empty(),
        "{:?}",
        cached_images(&site)
    );
    assert_no_part_files(&site);

    // An announcement that is wrong on its face is refused at once.
    backend.command(
        prefix,
        "announce_image",
        &serde_json::json!({ "id": "bad-4", "url": "http://127.0.0.1/app.img", "sha256": sha256_hex(&image), "size": 10 }),
    );
    let refused = backend.wait_for_response("bad-4", 1);
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https"),
        "{refused}"
    );
}

#[test]
fn fuotactl_imports_from_a_url_without_mqtt_resuming_a_cut_download() {
    let server = https::FirmwareServer::start();
    let mut site = site_trusting(&server);
    site.run();
    let image = std::fs::read(site.signed_image("1.6.0")).unwrap();
    let sha256 = sha256_hex(&image);
    let size = image.len().to_string();
    server.put("/fw/app-1.6.0.img", image.clone());
    server.cut_next_after(image.len() / 3);
    let url = server.url("/fw/app-1.6.0.img");

    // Followed to the end: the cut is resumed, the image is in the cache.
    let out = site.ok(&[
        "image", "import", &url, "--sha256", &sha256, "--size", &size,
    ]);
    assert!(out.contains("imported"), "{out}");
    assert!(out.contains(&sha256), "{out}");
    assert_eq!(cached_images(&site), vec![sha256.clone()]);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[1].1.as_deref(),
        Some(format!("bytes={}-", image.len() / 3).as_str())
    );
    assert_no_part_files(&site);
    let listed = site.json(&["image", "show", &sha256]);
    assert_eq!(listed["name"], "app-1.6.0.img");
    assert_eq!(listed["version"], "1.6.0+0");

    // Again: cached already, nothing fetched.
    let again = site.ok(&[
        "image", "import", &url, "--sha256", &sha256, "--size", &size,
    ]);
    assert!(again.contains("cached already"), "{again}");
    assert_eq!(server.requests().len(), 2);

    // Another hash than announced: given up, exit 1 with the reason, nothing cached.
    let other = std::fs::read(site.signed_image("1.7.0")).unwrap();
    server.put("/fw/app-1.7.0.img", other.clone());
    let wrong = site.fails(
        1,
        &[
            "image",
            "import",
            &server.url("/fw/app-1.7.0.img"),
            "--sha256",
            &sha256_hex(b"something else"),
            "--size",
            &other.len().to_string(),
        ],
    );
    assert!(wrong.contains("SHA-256"), "{wrong}");
    assert!(wrong.contains("nothing entered the cache"), "{wrong}");
    assert_eq!(cached_images(&site), vec![sha256.clone()]);
    assert_no_part_files(&site);

    // Queued without waiting, then looked at by id.
    let queued = site.json(&[
        "image",
        "import",
        &server.url("/fw/app-1.7.0.img"),
        "--sha256",
        &sha256_hex(&other),
        "--size",
        &other.len().to_string(),
        "--no-wait",
    ]);
    let id = queued["id"].as_i64().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let download = site.json(&["image", "download", &id]);
        if download["state"] == "imported" {
            assert_eq!(download["bytes_done"], other.len());
            break;
        }
        assert_eq!(download["state"], "downloading", "{download}");
        assert!(Instant::now() < deadline, "never imported:\n{}", site.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(cached_images(&site).len(), 2);

    // Wrong on its face: refused at once with what to do.
    let no_hash = site.fails(2, &["image", "import", &url]);
    assert!(no_hash.contains("--sha256"), "{no_hash}");
    let plain_http = site.fails(
        1,
        &[
            "image",
            "import",
            "http://127.0.0.1:9/app.img",
            "--sha256",
            &sha256,
            "--size",
            "100",
        ],
    );
    assert!(plain_http.contains("https"), "{plain_http}");
    let unknown = site.fails(1, &["image", "download", "999"]);
    assert!(
        unknown.contains("no image download has id 999"),
        "{unknown}"
    );
    site.stop();
}
