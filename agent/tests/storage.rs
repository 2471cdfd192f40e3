//! Storage: schema and migrations, WAL, devices and sessions with their events written
//! in the same transaction, DevNonce replay, and FCntDown reservations that survive a
//! crash (the connection dropped without a clean shutdown).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fuota_agent::clock::WallTime;
use fuota_agent::identifiers::{parse_aes_key, AesKey, DevAddr, DevEui, JoinEui};
use fuota_agent::storage::migrations::SCHEMA_VERSION;
use fuota_agent::storage::{
    DevNonceUse, Device, DeviceClass, DeviceSession, EventKind, MacVersion, NewEvent, Storage,
    StorageError, FCNT_DOWN_RESERVATION,
};

const T0: WallTime = WallTime::from_unix_seconds(1_767_225_600);
const DEV_EUI: DevEui = DevEui::from_bytes([0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x01]);
const JOIN_EUI: JoinEui = JoinEui::from_bytes([0; 8]);

fn database() -> (tempfile::TempDir, PathBuf) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("agent.db");
    (directory, path)
}

fn device() -> Device {
    let mut device = Device::new(DEV_EUI, JOIN_EUI, MacVersion::V1_0_4);
    device.app_key = Some(parse_aes_key("2b7e151628aed2a6abf7158809cf4f3c").unwrap());
    device.gen_app_key = Some(parse_aes_key("000102030405060708090a0b0c0d0e0f").unwrap());
    device.class = DeviceClass::C;
    device.hardware_version = Some("nucleo-wl55jc1".into());
    device.firmware_version = Some("1.0.0".into());
    device.tags = BTreeMap::from([("site".to_string(), "north".to_string())]);
    device
}

fn session() -> DeviceSession {
    DeviceSession {
        dev_eui: DEV_EUI,
        dev_addr: DevAddr::from(0x2601_1bda),
        nwk_s_key: AesKey::from_bytes([1; 16]),
        s_nwk_s_int_key: None,
        nwk_s_enc_key: None,
        app_s_key: AesKey::from_bytes([2; 16]),
        last_f_cnt_up: None,
    }
}

fn storage_with_session(path: &Path) -> Storage {
    let mut storage = Storage::open(path).unwrap();
    storage
        .write(|tx| {
            tx.insert_device(&device(), T0)?;
            tx.store_session(&session(), T0, serde_json::json!({ "dev_nonce": 7 }))
        })
        .unwrap();
    storage
}

fn raw_connection(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn a_new_database_is_migrated_and_in_wal_mode() {
    let (_directory, path) = database();
    let storage = Storage::open(&path).unwrap();
    assert_eq!(storage.schema_version().unwrap(), SCHEMA_VERSION);
    let journal_mode: String = raw_connection(&path)
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(journal_mode, "wal");
    drop(storage);
    // Reopening applies nothing and keeps the version.
    let storage = Storage::open(&path).unwrap();
    assert_eq!(storage.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn a_database_from_a_newer_agent_is_refused() {
    let (_directory, path) = database();
    drop(Storage::open(&path).unwrap());
    raw_connection(&path)
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match Storage::open(&path) {
        Err(StorageError::UnknownSchemaVersion { found: 99, .. }) => {}
        other => panic!("expected UnknownSchemaVersion, got {other:?}"),
    }
}

#[test]
fn a_device_and_its_event_are_written_together() {
    let (_directory, path) = database();
    let mut storage = Storage::open(&path).unwrap();
    storage.write(|tx| tx.insert_device(&device(), T0)).unwrap();
    assert_eq!(storage.device(DEV_EUI).unwrap(), Some(device()));
    assert_eq!(storage.devices().unwrap(), vec![device()]);

    let events = storage.events_after(0, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::DeviceAdded);
    assert_eq!(events[0].dev_eui, Some(DEV_EUI));
    assert_eq!(events[0].time_ms, T0.unix_millis());
    assert_eq!(events[0].payload["mac_version"], "1.0.4");
    assert_eq!(events[0].payload["otaa"], true);
    let payload = events[0].payload.to_string();
    assert!(!payload.contains("2b7e1516"), "no key in events: {payload}");
}

#[test]
fn a_failed_transaction_leaves_neither_state_nor_event() {
    let (_directory, path) = database();
    let mut storage = Storage::open(&path).unwrap();
    let result: Result<(), StorageError> = storage.write(|tx| {
        tx.insert_device(&device(), T0)?;
        Err(StorageError::NoSession(DEV_EUI)) // a later step of the same change fails
    });
    assert!(result.is_err());
    assert_eq!(storage.device(DEV_EUI).unwrap(), None);
    assert!(storage.events_after(0, 10).unwrap().is_empty());
}

#[test]
fn a_duplicate_device_is_refused_without_an_event() {
    let (_directory, path) = database();
    let mut storage = Storage::open(&path).unwrap();
    storage.write(|tx| tx.insert_device(&device(), T0)).unwrap();
    match storage.write(|tx| tx.insert_device(&device(), T0)) {
        Err(StorageError::DeviceExists(eui)) => assert_eq!(eui, DEV_EUI),
        other => panic!("expected DeviceExists, got {other:?}"),
    }
    assert_eq!(storage.events_after(0, 10).unwrap().len(), 1);
}

#[test]
fn sessions_round_trip_and_report_their_creation() {
    let (_directory, path) = database();
    let storage = storage_with_session(&path);
    assert_eq!(storage.session(DEV_EUI).unwrap(), Some(session()));
    assert_eq!(
        storage
            .sessions_by_dev_addr(DevAddr::from(0x2601_1bda))
            .unwrap(),
        vec![session()]
    );
    let events = storage.device_events(DEV_EUI, 10).unwrap();
    assert_eq!(events[0].kind, EventKind::SessionCreated);
    assert_eq!(events[0].payload["dev_addr"], "26011bda");
    assert_eq!(events[0].payload["dev_nonce"], 7);
}

#[test]
fn a_session_for_an_unknown_device_is_refused() {
    let (_directory, path) = database();
    let mut storage = Storage::open(&path).unwrap();
    match storage.write(|tx| tx.store_session(&session(), T0, serde_json::json!({}))) {
        Err(StorageError::UnknownDevice(eui)) => assert_eq!(eui, DEV_EUI),
        other => panic!("expected UnknownDevice, got {other:?}"),
    }
}

#[test]
fn uplink_counters_and_firmware_versions_are_recorded() {
    let (_directory, path) = database();
    let mut storage = storage_with_session(&path);
    storage
        .write(|tx| {
            tx.set_last_f_cnt_up(DEV_EUI, 41)?;
            tx.set_firmware_version(DEV_EUI, "1.1.0", T0)
        })
        .unwrap();
    assert_eq!(
        storage.session(DEV_EUI).unwrap().unwrap().last_f_cnt_up,
        Some(41)
    );
    let device = storage.device(DEV_EUI).unwrap().unwrap();
    assert_eq!(device.firmware_version.as_deref(), Some("1.1.0"));
    let event = &storage.device_events(DEV_EUI, 1).unwrap()[0];
    assert_eq!(event.kind, EventKind::DeviceFirmwareVersion);
    assert_eq!(event.payload["previous"], "1.0.0");
}

#[test]
fn dev_nonces_are_recorded_once() {
    let (_directory, path) = database();
    let mut storage = storage_with_session(&path);
    let first = storage
        .write(|tx| tx.record_dev_nonce(DEV_EUI, JOIN_EUI, 7, T0))
        .unwrap();
    let replay = storage
        .write(|tx| tx.record_dev_nonce(DEV_EUI, JOIN_EUI, 7, T0))
        .unwrap();
    storage
        .write(|tx| tx.record_dev_nonce(DEV_EUI, JOIN_EUI, 3, T0))
        .unwrap();
    assert_eq!((first, replay), (DevNonceUse::New, DevNonceUse::Replayed));
    assert_eq!(
        storage.highest_dev_nonce(DEV_EUI, JOIN_EUI).unwrap(),
        Some(7)
    );
}

#[test]
fn removing_a_device_removes_its_session() {
    let (_directory, path) = database();
    let mut storage = storage_with_session(&path);
    storage.write(|tx| tx.remove_device(DEV_EUI, T0)).unwrap();
    assert_eq!(storage.device(DEV_EUI).unwrap(), None);
    assert_eq!(storage.session(DEV_EUI).unwrap(), None);
    assert!(matches!(
        storage.next_f_cnt_down(DEV_EUI),
        Err(StorageError::NoSession(_))
    ));
    assert_eq!(
        storage.device_events(DEV_EUI, 1).unwrap()[0].kind,
        EventKind::DeviceRemoved
    );
}

#[test]
fn events_page_by_id() {
    let (_directory, path) = database();
    let mut storage = Storage::open(&path).unwrap();
    for second in 0..5 {
        storage
            .append_event(&NewEvent::new(
                T0.saturating_add_micros(second * 1_000_000),
                EventKind::Uplink,
            ))
            .unwrap();
    }
    let first_page = storage.events_after(0, 3).unwrap();
    let second_page = storage.events_after(first_page[2].id, 3).unwrap();
    assert_eq!(first_page.len(), 3);
    assert_eq!(second_page.len(), 2);
    assert!(second_page[0].id > first_page[2].id);
}

#[test]
fn fcnt_down_counts_up_and_reserves_ahead() {
    let (_directory, path) = database();
    let mut storage = storage_with_session(&path);
    let counters: Vec<u32> = (0..3)
        .map(|_| storage.next_f_cnt_down(DEV_EUI).unwrap())
        .collect();
    assert_eq!(counters, vec![0, 1, 2]);
    let stored = storage.session_counters(DEV_EUI).unwrap().unwrap();
    assert_eq!(stored.f_cnt_down_reserved, FCNT_DOWN_RESERVATION);
}

#[test]
fn fcnt_down_is_never_reused_after_a_crash() {
    let (_directory, path) = database();
    let mut handed_out = Vec::new();
    for restart in 0..4 {
        let mut storage = if restart == 0 {
            storage_with_session(&path)
        } else {
            Storage::open(&path).unwrap()
        };
        // Cross a reservation boundary on some runs, stay inside one on others.
        for _ in 0..(FCNT_DOWN_RESERVATION as usize / 2 + restart * 23) {
            let counter = storage.next_f_cnt_down(DEV_EUI).unwrap();
            if let Some(&last) = handed_out.last() {
                assert!(counter > last, "counter {counter} after {last}");
            }
            handed_out.push(counter);
        }
        // Crash: the connection goes away without `shutdown`; the in-memory window is lost.
        drop(storage);
    }
    let mut storage = Storage::open(&path).unwrap();
    let next = storage.next_f_cnt_down(DEV_EUI).unwrap();
    assert!(next > *handed_out.iter().max().unwrap());
}

#[test]
fn a_clean_shutdown_gives_unused_reservations_back() {
    let (_directory, path) = database();
    let mut storage = storage_with_session(&path);
    for expected in 0..5 {
        assert_eq!(storage.next_f_cnt_down(DEV_EUI).unwrap(), expected);
    }
    storage.shutdown().unwrap();
    let mut storage = Storage::open(&path).unwrap();
    assert_eq!(storage.next_f_cnt_down(DEV_EUI).unwrap(), 5);
}

#[test]
fn a_new_session_starts_fcnt_down_at_zero() {
    let (_directory, path) = database();
    let mut storage = storage_with_session(&path);
    for _ in 0..10 {
        storage.next_f_cnt_down(DEV_EUI).unwrap();
    }
    storage
        .write(|tx| tx.store_session(&session(), T0, serde_json::json!({})))
        .unwrap();
    assert_eq!(storage.next_f_cnt_down(DEV_EUI).unwrap(), 0);
}

#[test]
fn an_exhausted_fcnt_down_asks_for_a_rejoin() {
    let (_directory, path) = database();
    drop(storage_with_session(&path));
    raw_connection(&path)
        .execute(
            "UPDATE device_sessions SET f_cnt_down_reserved = 4294967295",
            [],
        )
        .unwrap();
    let mut storage = Storage::open(&path).unwrap();
    assert_eq!(storage.next_f_cnt_down(DEV_EUI).unwrap(), u32::MAX);
    assert!(matches!(
        storage.next_f_cnt_down(DEV_EUI),
        Err(StorageError::FCntDownExhausted(_))
    ));
}

#[test]
fn an_older_database_is_copied_before_its_schema_is_migrated() {
    use fuota_agent::storage::migrations::{migrate_up_to, SCHEMA_VERSION};
    use fuota_agent::storage::pre_migration_copy_path;
    let (_directory, path) = database();
    let older = SCHEMA_VERSION - 1;
    {
        let mut connection = raw_connection(&path);
        migrate_up_to(&mut connection, older).unwrap();
        connection
            .execute(
                "INSERT INTO devices (dev_eui, join_eui, mac_version, class, tags, created_at_ms, updated_at_ms) \
                 VALUES ('0102030405060708', '0000000000000001', '1.0.3', 'A', '{}', 0, 0)",
                [],
            )
            .unwrap();
    }
    let storage = Storage::open(&path).unwrap();
    assert_eq!(storage.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(storage.devices().unwrap().len(), 1);
    let copy = pre_migration_copy_path(&path, older);
    let kept = raw_connection(&copy);
    let version: u32 = kept
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        version, older,
        "the copy is the database before the migration"
    );
    let devices: u32 = kept
        .query_row("SELECT count(*) FROM devices", [], |row| row.get(0))
        .unwrap();
    assert_eq!(devices, 1);
    drop(storage);
    // A current database is not copied again.
    let modified = std::fs::metadata(&copy).unwrap().modified().unwrap();
    Storage::open(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&copy).unwrap().modified().unwrap(),
        modified
    );
}
