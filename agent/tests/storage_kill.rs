//! FCntDown survives a real `kill -9`: a child process (this test binary, re-run in
//! child mode) hands out counters as fast as it can and prints each one; the parent
//! SIGKILLs it at an arbitrary instant, reopens the database, and checks that the next
//! counter is above every counter the child ever printed. Repeated, so kills land both
//! inside a reserved window and around reservation writes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use fuota_agent::clock::WallTime;
use fuota_agent::identifiers::{AesKey, DevAddr, DevEui, JoinEui};
use fuota_agent::storage::{Device, DeviceSession, MacVersion, Storage};

const CHILD_DATABASE_VARIABLE: &str = "FUOTA_AGENT_TEST_FCNT_CHILD_DATABASE";
const TEST_NAME: &str = "fcnt_down_is_never_reused_after_kill_9";
const DEV_EUI: DevEui = DevEui::from_bytes([0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0, 0, 2]);
/// Counters the parent waits for before killing (several reservations' worth).
const COUNTERS_BEFORE_KILL: [usize; 4] = [1, 100, 157, 300];
/// The child gives up on its own after this many, should the parent vanish.
const CHILD_LIMIT: u32 = 1_000_000;

fn child(database: &Path) {
    let mut storage = Storage::open(database).unwrap();
    for _ in 0..CHILD_LIMIT {
        let counter = storage.next_f_cnt_down(DEV_EUI).unwrap();
        println!("FCNT {counter}");
    }
}

fn set_up(database: &Path) {
    let mut storage = Storage::open(database).unwrap();
    let at = WallTime::from_unix_seconds(1_767_225_600);
    storage
        .write(|tx| {
            tx.insert_device(
                &Device::new(DEV_EUI, JoinEui::from(0), MacVersion::V1_0_3),
                at,
            )?;
            tx.store_session(
                &DeviceSession {
                    dev_eui: DEV_EUI,
                    dev_addr: DevAddr::from(0x2601_0002),
                    nwk_s_key: AesKey::from_bytes([3; 16]),
                    s_nwk_s_int_key: None,
                    nwk_s_enc_key: None,
                    app_s_key: AesKey::from_bytes([4; 16]),
                    last_f_cnt_up: None,
                },
                at,
                serde_json::json!({}),
            )
        })
        .unwrap();
    storage.shutdown().unwrap();
}

#[test]
fn fcnt_down_is_never_reused_after_kill_9() {
    if let Some(database) = std::env::var_os(CHILD_DATABASE_VARIABLE) {
        child(Path::new(&database));
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let database = directory.path().join("agent.db");
    set_up(&database);

    let mut highest_printed: Option<u32> = None;
    for wanted in COUNTERS_BEFORE_KILL {
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DATABASE_VARIABLE, &database)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        while printed.len() < wanted {
            let line = lines.next().expect("child output").unwrap();
            if let Some(counter) = line.strip_prefix("FCNT ") {
                printed.push(counter.parse::<u32>().unwrap());
            }
        }
        process.kill().unwrap(); // SIGKILL
        let status = process.wait().unwrap();
        assert!(!status.success(), "the child was killed");
        // Lines already in the pipe were handed out too.
        for line in lines {
            if let Some(counter) = line.unwrap().strip_prefix("FCNT ") {
                printed.push(counter.parse::<u32>().unwrap());
            }
        }
        let first = printed[0];
        if let Some(previous) = highest_printed {
            assert!(
                first > previous,
                "after a kill, counter {first} reused (highest before: {previous})"
            );
        }
        assert!(printed.windows(2).all(|pair| pair[0] < pair[1]));
        highest_printed = printed.last().copied();
    }

    let mut storage = Storage::open(&database).unwrap();
    let next = storage.next_f_cnt_down(DEV_EUI).unwrap();
    assert!(next > highest_printed.unwrap());
}
