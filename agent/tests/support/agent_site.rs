//! A gateway's agent for end-to-end tests: a scratch directory with a configuration
//! (database, image cache, API socket, a free loopback UDP port, the fixture key as the
//! trusted key), the real `fuota-agent run` started and stopped in it, and `fuotactl`
//! run against it. Included with `#[path]` by the tests that drive the binaries.

#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../node-firmware/lorawan-fuota/tests/fixtures/images"
);

/// The key [`AgentSite::add_device`] registers devices with.
pub const TEST_KEY: &str = "00112233445566778899aabbccddeeff";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The site; the agent, when running, is killed on drop.
pub struct AgentSite {
    child: Option<Child>,
    pub directory: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl AgentSite {
    /// A new site with the agent running, its API open to `api_group` ("": root and
    /// the agent's user).
    pub fn start(api_group: &str) -> AgentSite {
        let mut site = AgentSite::new(api_group);
        site.run();
        site
    }

    /// A new site, agent not started.
    pub fn new(api_group: &str) -> AgentSite {
        let directory = tempfile::tempdir().unwrap();
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let socket = directory.path().join("api.sock");
        let config = directory.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[storage]\ndatabase = \"{dir}/agent.db\"\n\
                 [packet_forwarder]\nbind = \"127.0.0.1:{port}\"\n\
                 [firmware]\ncache_directory = \"{dir}/images\"\ntrusted_keys = [\"{key}\"]\n\
                 [api]\nsocket = \"{socket}\"\ngroup = \"{api_group}\"\n",
                dir = directory.path().display(),
                key = fixture("pubkey.pem").display(),
                socket = socket.display(),
            ),
        )
        .unwrap();
        AgentSite {
            child: None,
            directory,
            socket,
            config,
        }
    }

    /// Starts the agent and waits until `fuotactl status` answers.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "the agent runs already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("agent.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fuota-agent"))
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.fuotactl(&["status"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent's API did not come up; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Reaps an agent the test killed itself (SIGKILL), so it can be run again.
    pub fn forget_killed(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// The running agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the agent is not running").id()
    }

    /// Stops the agent with SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("the agent is not running");
        let terminated = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(terminated.success());
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "the agent stopped with {status}: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    pub fn fuotactl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fuotactl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs fuotactl, asserts it succeeded, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.fuotactl(args);
        assert!(
            output.status.success(),
            "fuotactl {args:?} failed ({:?}): {}\nagent log:\n{}",
            output.status.code(),
            text(&output.stderr),
            self.log()
        );
        text(&output.stdout)
    }

    /// Runs fuotactl --json, asserts it succeeded, returns the document.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let stdout = self.ok(&with_json);
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
    }

    /// Runs fuotactl, asserts it failed with `code`, returns stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let output = self.fuotactl(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "fuotactl {args:?}: stdout {} stderr {}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stderr)
    }

    /// Runs `fuota-agent <args> --config <this site's>`.
    pub fn agent_command(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fuota-agent"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// Registers an OTAA device with an AppKey and a GenAppKey (a fixed test key).
    pub fn add_device(&self, dev_eui: &str, hardware_version: &str) {
        self.ok(&[
            "device",
            "add",
            "--dev-eui",
            dev_eui,
            "--join-eui",
            "70b3d57ed0050000",
            "--app-key",
            TEST_KEY,
            "--gen-app-key",
            TEST_KEY,
            "--hardware-version",
            hardware_version,
        ]);
    }

    /// Creates a campaign `name` of image `sha256` for the devices of hardware
    /// `hardware_version` (and starts it with `start`); returns its id.
    pub fn create_campaign(
        &self,
        name: &str,
        sha256: &str,
        hardware_version: &str,
        start: bool,
    ) -> String {
        let mut args = vec![
            "campaign",
            "create",
            "--name",
            name,
            "--image",
            sha256,
            "--hardware-version",
            hardware_version,
        ];
        if start {
            args.push("--start");
        }
        let created = self.json(&args);
        created["id"].as_i64().unwrap().to_string()
    }

    /// Signs the fixture body at `version` and imports it; returns its SHA-256 and the
    /// image file.
    pub fn import_image(&self, version: &str) -> (String, PathBuf) {
        let image = self.signed_image(version);
        let imported = self.json(&["image", "import", image.to_str().unwrap()]);
        let sha256 = imported["image"]["sha256"].as_str().unwrap().to_string();
        (sha256, image)
    }

    /// A signed image of the fixture body at `version`, for hardware 0x00010002.
    pub fn signed_image(&self, version: &str) -> PathBuf {
        let output = self.path(&format!("app-{version}.img"));
        let signed = Command::new(env!("CARGO_BIN_EXE_fuotactl"))
            .args(["image", "sign", "--key"])
            .arg(fixture("key.pem"))
            .args(["--version", version, "--hardware-version", "0x00010002"])
            .arg(fixture("body.bin"))
            .arg(&output)
            .output()
            .unwrap();
        assert!(signed.status.success(), "{}", text(&signed.stderr));
        output
    }
}

impl Drop for AgentSite {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
