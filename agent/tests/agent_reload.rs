//! SIGHUP (`systemctl reload fuota-agent`) on the running agent: a new trusted key and
//! log level take effect at once, a change that needs a restart is named as such, and a
//! configuration with a mistake is refused while the agent runs on.

#[path = "support/agent_site.rs"]
mod agent_site;

use std::process::Command;
use std::time::{Duration, Instant};

use agent_site::AgentSite;

fn hang_up(site: &AgentSite, pid: u32, expect_in_log: &str) {
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !site.log().contains(expect_in_log) {
        assert!(
            Instant::now() < deadline,
            "no {expect_in_log:?} in the log:\n{}",
            site.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_applies_keys_and_level_and_names_what_needs_a_restart() {
    let mut site = AgentSite::new("");
    let configured = std::fs::read_to_string(&site.config).unwrap();
    let key_line = configured
        .lines()
        .find(|line| line.starts_with("trusted_keys"))
        .unwrap()
        .to_string();
    std::fs::write(
        &site.config,
        configured.replace(&key_line, "trusted_keys = []"),
    )
    .unwrap();
    site.run();
    let pid = site.pid();

    let image = site.signed_image("1.3.0");
    let refused = site.fails(1, &["image", "import", image.to_str().unwrap()]);
    assert!(refused.contains("no trusted keys"), "{refused}");

    // The key and a log level, reloaded.
    std::fs::write(
        &site.config,
        format!("{configured}[logging]\nlevel = \"debug\"\n"),
    )
    .unwrap();
    hang_up(
        &site,
        pid,
        "SIGHUP: configuration reloaded: log level \"debug\", 1 trusted keys",
    );
    let imported = site.json(&["image", "import", image.to_str().unwrap()]);
    assert_eq!(imported["already_cached"], false);
    // Debug logging is on now (the API logs accepted callers at debug).
    site.ok(&["status"]);
    assert!(site.log().contains("API caller accepted"), "{}", site.log());

    // A new UDP port needs a restart, and says so.
    let port_line = configured
        .lines()
        .find(|line| line.starts_with("bind = "))
        .unwrap();
    let moved = configured.replace(port_line, "bind = \"127.0.0.1:1\"");
    std::fs::write(
        &site.config,
        format!("{moved}[logging]\nlevel = \"debug\"\n"),
    )
    .unwrap();
    hang_up(
        &site,
        pid,
        "[packet_forwarder] changed and take effect at the next restart",
    );

    // A mistake is refused; the agent runs on with what it had.
    std::fs::write(
        &site.config,
        format!("{configured}[logging]\nlevel = \"loud\"\n"),
    )
    .unwrap();
    hang_up(&site, pid, "the running configuration stays");
    let log = site.log();
    assert!(log.contains("invalid log level \"loud\""), "{log}");
    let status = site.json(&["status"]);
    assert_eq!(status["images"], 1);
    site.stop();
}
