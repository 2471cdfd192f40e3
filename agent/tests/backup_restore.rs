//! `fuota-agent backup` and `restore` as a technician replacing a failed gateway uses
//! them: a backup taken while the agent runs mid-campaign, restored on a new site, gives
//! an agent with the same devices, image and campaign; restore refuses to run beside an
//! agent, to overwrite a database without --force (and keeps it with --force), and to
//! use a damaged backup.

#[path = "support/agent_site.rs"]
mod agent_site;

use agent_site::{text, AgentSite};

#[test]
fn a_backup_taken_mid_campaign_restores_on_a_new_gateway() {
    let old = AgentSite::start("");
    for n in 1..=2 {
        old.add_device(&format!("70b3d57ed005000{n}"), "board-a");
    }
    let (sha256, image) = old.import_image("1.3.0");
    let campaign = old.create_campaign("north", &sha256, "board-a", true);

    // Online, while the agent runs.
    let backup = old.path("backup-1");
    let output = old.agent_command(&["backup", backup.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("and 1 images"), "{stdout}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["images"][0]["sha256"], sha256.as_str());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the backup holds keys");
    // A backup never overwrites.
    let output = old.agent_command(&["backup", backup.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("exists already"),
        "{}",
        text(&output.stderr)
    );

    // The new gateway.
    let mut new = AgentSite::new("");
    let output = new.agent_command(&["restore", backup.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    new.run();
    let devices = new.json(&["device", "list"]);
    assert_eq!(devices.as_array().unwrap().len(), 2);
    assert_eq!(devices[0]["has_app_key"], true);
    let shown = new.json(&["campaign", "show", &campaign]);
    assert_eq!(shown["state"], "running");
    assert_eq!(shown["devices"], 2);
    assert!(new.ok(&["image", "list"]).contains(&sha256));
    // The restored image is usable: a second import of it is a no-op.
    let again = new.json(&["image", "import", image.to_str().unwrap()]);
    assert_eq!(again["already_cached"], true);

    // Not beside a running agent.
    let output = new.agent_command(&["restore", "--force", backup.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("stop it first"),
        "{}",
        text(&output.stderr)
    );
    new.ok(&["campaign", "cancel", &campaign]);
    new.stop();

    // Not over a database without --force; with it, the replaced one is kept.
    let output = new.agent_command(&["restore", backup.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--force"),
        "{}",
        text(&output.stderr)
    );
    let output = new.agent_command(&["restore", "--force", backup.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let kept = stdout
        .lines()
        .find_map(|line| line.strip_prefix("the database it replaced is kept as "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(std::path::Path::new(kept).exists());
    new.run();
    // The backup's state (running), not the cancelled one.
    assert_eq!(
        new.json(&["campaign", "show", &campaign])["state"],
        "running"
    );
    new.stop();

    // A damaged backup is refused before anything changes.
    let image_file = backup.join("images").join(format!("{sha256}.img"));
    let mut bytes = std::fs::read(&image_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&image_file, bytes).unwrap();
    let before = std::fs::read(new.path("agent.db")).unwrap();
    let output = new.agent_command(&["restore", "--force", backup.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("damaged"), "{stderr}");
    assert_eq!(std::fs::read(new.path("agent.db")).unwrap(), before);
}
