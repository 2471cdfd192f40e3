//! The database schema as numbered migrations, and the code that applies them.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`; the version lives in
//! SQLite's `user_version` pragma. Each migration runs in its own transaction together
//! with the `user_version` update, so a crash mid-upgrade leaves the database at the
//! previous version, never in between. Migrations are append-only: a released migration
//! is never edited, a change is a new entry.
//!
//! Conventions: tables are `STRICT`; EUIs and DevAddrs are lower-case hexadecimal text
//! (readable with the `sqlite3` shell), keys are 16-byte blobs, times are Unix
//! milliseconds.

use rusqlite::{Connection, TransactionBehavior};

use super::StorageError;

/// Every migration, in order. The schema version is the number applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: devices, sessions with FCntDown reservation, DevNonces seen, the event log.
    r#"
    CREATE TABLE devices (
        dev_eui          TEXT PRIMARY KEY CHECK (length(dev_eui) = 16),
        join_eui         TEXT NOT NULL CHECK (length(join_eui) = 16),
        -- OTAA root keys; NULL for ABP-only devices. nwk_key is LoRaWAN 1.1 only.
        app_key          BLOB CHECK (app_key IS NULL OR length(app_key) = 16),
        nwk_key          BLOB CHECK (nwk_key IS NULL OR length(nwk_key) = 16),
        -- TS005 multicast key derivation (McRootKey from GenAppKey on 1.0.x devices).
        gen_app_key      BLOB CHECK (gen_app_key IS NULL OR length(gen_app_key) = 16),
        mac_version      TEXT NOT NULL CHECK (mac_version IN ('1.0.2', '1.0.3', '1.0.4', '1.1')),
        class            TEXT NOT NULL DEFAULT 'A' CHECK (class IN ('A', 'B', 'C')),
        hardware_version TEXT,
        firmware_version TEXT,
        -- JSON object of string tags.
        tags             TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(tags)),
        created_at_ms    INTEGER NOT NULL,
        updated_at_ms    INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE device_sessions (
        dev_eui             TEXT PRIMARY KEY REFERENCES devices (dev_eui) ON DELETE CASCADE,
        dev_addr            TEXT NOT NULL CHECK (length(dev_addr) = 8),
        -- LoRaWAN 1.0.x NwkSKey (in 1.1: FNwkSIntKey).
        nwk_s_key           BLOB NOT NULL CHECK (length(nwk_s_key) = 16),
        -- LoRaWAN 1.1 only.
        s_nwk_s_int_key     BLOB CHECK (s_nwk_s_int_key IS NULL OR length(s_nwk_s_int_key) = 16),
        nwk_s_enc_key       BLOB CHECK (nwk_s_enc_key IS NULL OR length(nwk_s_enc_key) = 16),
        app_s_key           BLOB NOT NULL CHECK (length(app_s_key) = 16),
        -- Last uplink FCnt accepted (32-bit, rollover handled by the network server);
        -- NULL before the first uplink of the session.
        last_f_cnt_up       INTEGER CHECK (last_f_cnt_up BETWEEN 0 AND 4294967295),
        -- Next FCntDown known to be unused as of the last write (informational).
        n_f_cnt_down        INTEGER NOT NULL DEFAULT 0 CHECK (n_f_cnt_down BETWEEN 0 AND 4294967296),
        -- High-water mark: every FCntDown ever handed out is below it. Written (and
        -- synced) before a value at or above the previous mark is used; on start, the
        -- next FCntDown is this mark.
        f_cnt_down_reserved INTEGER NOT NULL DEFAULT 0 CHECK (f_cnt_down_reserved BETWEEN 0 AND 4294967296),
        created_at_ms       INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX device_sessions_by_dev_addr ON device_sessions (dev_addr);

    CREATE TABLE dev_nonces (
        dev_eui       TEXT NOT NULL REFERENCES devices (dev_eui) ON DELETE CASCADE,
        join_eui      TEXT NOT NULL CHECK (length(join_eui) = 16),
        dev_nonce     INTEGER NOT NULL CHECK (dev_nonce BETWEEN 0 AND 65535),
        seen_at_ms    INTEGER NOT NULL,
        PRIMARY KEY (dev_eui, join_eui, dev_nonce)
    ) STRICT;

    CREATE TABLE events (
        id           INTEGER PRIMARY KEY,
        time_ms      INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        dev_eui      TEXT,
        gateway_eui  TEXT,
        payload      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload))
    ) STRICT;
    CREATE INDEX events_by_device ON events (dev_eui, id) WHERE dev_eui IS NOT NULL;
    "#,
    // 2: the firmware cache's metadata (the image files live in the cache directory,
    // named by the SHA-256 of their content).
    r#"
    CREATE TABLE firmware_images (
        sha256           TEXT PRIMARY KEY CHECK (length(sha256) = 64),
        kind             TEXT NOT NULL CHECK (kind IN ('mcuboot', 'opaque')),
        size             INTEGER NOT NULL CHECK (size > 0),
        -- The name it was imported under (file name), for people.
        name             TEXT NOT NULL,
        -- MCUboot version "major.minor.revision+build" (NULL for opaque images).
        version          TEXT,
        -- TS006 32-bit version (from the MCUboot header, or given for opaque images).
        ts006_version    INTEGER CHECK (ts006_version BETWEEN 0 AND 4294967295),
        hardware_version INTEGER CHECK (hardware_version BETWEEN 0 AND 4294967295),
        -- MCUboot's digest of header, body and protected TLVs (NULL for opaque images).
        image_digest     TEXT CHECK (image_digest IS NULL OR length(image_digest) = 64),
        -- The detached signature of an opaque image (NULL for MCUboot images).
        signature        BLOB,
        -- KEYHASH of the trusted key that verified it.
        signer_key_hash  TEXT NOT NULL CHECK (length(signer_key_hash) = 64),
        imported_at_ms   INTEGER NOT NULL
    ) STRICT;
    "#,
    // 3: events by kind and time: the downlinks of the last duty-cycle window are read
    // back at start, so a restarted agent keeps counting the airtime it already used.
    r#"
    CREATE INDEX events_by_kind_time ON events (kind, time_ms);
    "#,
    // 4: FUOTA campaigns, their per-device rows, and each device's TS004 SessionCnt
    // (it must grow across campaigns: devices refuse a replayed one).
    r#"
    CREATE TABLE campaigns (
        id                  INTEGER PRIMARY KEY,
        name                TEXT NOT NULL,
        image_sha256        TEXT NOT NULL CHECK (length(image_sha256) = 64),
        -- TS006 version the image installs, and the hardware version it is for.
        target_version      INTEGER NOT NULL CHECK (target_version BETWEEN 0 AND 4294967295),
        hardware_version    INTEGER CHECK (hardware_version BETWEEN 0 AND 4294967295),
        -- JSON: how the targets were chosen (list, hardware version, tag).
        targets             TEXT NOT NULL CHECK (json_valid(targets)),
        delivery            TEXT NOT NULL CHECK (delivery IN ('multicast', 'unicast')),
        -- JSON: the resolved parameters (plan figures and overrides).
        parameters          TEXT NOT NULL CHECK (json_valid(parameters)),
        state               TEXT NOT NULL CHECK (state IN ('created', 'running', 'paused', 'cancelled', 'finished')),
        -- JSON: the current step of the campaign and its counters.
        progress            TEXT NOT NULL CHECK (json_valid(progress)),
        -- The multicast group: McAddr and McKey (never in events).
        mc_addr             INTEGER NOT NULL CHECK (mc_addr BETWEEN 0 AND 4294967295),
        mc_key              BLOB NOT NULL CHECK (length(mc_key) = 16),
        -- Group FCnt high-water mark: every multicast FCnt handed out is below it;
        -- written (and synced) before a value at or above it is used.
        mc_fcnt_reserved    INTEGER NOT NULL DEFAULT 0 CHECK (mc_fcnt_reserved BETWEEN 0 AND 4294967296),
        created_at_ms       INTEGER NOT NULL,
        updated_at_ms       INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE campaign_devices (
        campaign_id   INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
        dev_eui       TEXT NOT NULL CHECK (length(dev_eui) = 16),
        -- The device's result ('in_progress' until it has one).
        status        TEXT NOT NULL,
        -- JSON: the step, the request waiting for an answer, what was learnt.
        step          TEXT NOT NULL CHECK (json_valid(step)),
        retries       INTEGER NOT NULL DEFAULT 0,
        last_seen_ms  INTEGER,
        missing       INTEGER,
        last_error    TEXT,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (campaign_id, dev_eui)
    ) STRICT;
    CREATE INDEX campaign_devices_by_device ON campaign_devices (dev_eui);

    CREATE TABLE frag_session_counters (
        dev_eui          TEXT PRIMARY KEY CHECK (length(dev_eui) = 16),
        last_session_cnt INTEGER NOT NULL CHECK (last_session_cnt BETWEEN 0 AND 65535)
    ) STRICT;
    "#,
    // 5: the upstream outbox. Events after `delivered_event_id` are waiting for the MQTT
    // broker's PUBACK; epochs make the published event ids unique across database
    // restores (a restored database continues under a new epoch, so the events it
    // writes never share an id with those the replaced gateway delivered).
    r#"
    CREATE TABLE upstream_cursor (
        id                  INTEGER PRIMARY KEY CHECK (id = 1),
        delivered_event_id  INTEGER NOT NULL DEFAULT 0 CHECK (delivered_event_id >= 0),
        delivered_at_ms     INTEGER
    ) STRICT;
    INSERT INTO upstream_cursor (id, delivered_event_id) VALUES (1, 0);

    CREATE TABLE event_epochs (
        -- The first event id published under this epoch.
        first_event_id  INTEGER PRIMARY KEY CHECK (first_event_id >= 0),
        epoch           TEXT NOT NULL UNIQUE CHECK (length(epoch) = 16),
        created_at_ms   INTEGER NOT NULL
    ) STRICT;
    INSERT INTO event_epochs (first_event_id, epoch, created_at_ms)
        VALUES (0, lower(hex(randomblob(8))), CAST(unixepoch('subsec') * 1000 AS INTEGER));
    "#,
    // 6: commands received from the fleet backend, by their id: a command delivered
    // twice (MQTT QoS 1) is applied once and answered again with the same response.
    r#"
    CREATE TABLE upstream_commands (
        command_id      TEXT PRIMARY KEY CHECK (length(command_id) BETWEEN 1 AND 128),
        command         TEXT NOT NULL,
        -- 'applying' from receipt until the response is recorded; a restart finds a
        -- command interrupted half-way in this state.
        state           TEXT NOT NULL CHECK (state IN ('applying', 'answered')),
        response        TEXT CHECK (response IS NULL OR json_valid(response)),
        received_at_ms  INTEGER NOT NULL,
        answered_at_ms  INTEGER
    ) STRICT;
    "#,
    // 7: firmware downloads the fleet backend announced, resumed after a restart.
    r#"
    CREATE TABLE image_downloads (
        id             INTEGER PRIMARY KEY,
        url            TEXT NOT NULL,
        sha256         TEXT NOT NULL CHECK (length(sha256) = 64),
        size           INTEGER NOT NULL CHECK (size > 0),
        name           TEXT NOT NULL,
        version        TEXT,
        state          TEXT NOT NULL CHECK (state IN ('downloading', 'imported', 'failed')),
        bytes_done     INTEGER NOT NULL DEFAULT 0,
        attempts       INTEGER NOT NULL DEFAULT 0,
        last_error     TEXT,
        created_at_ms  INTEGER NOT NULL,
        updated_at_ms  INTEGER NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX image_downloads_active ON image_downloads (sha256) WHERE state = 'downloading';
    "#,
    // 8: how far the campaigns' timeline is from the system clock after a step, so that
    // a restarted agent keeps the time base its running campaigns' devices were given.
    r#"
    CREATE TABLE campaign_timeline (
        id             INTEGER PRIMARY KEY CHECK (id = 1),
        offset_us      INTEGER NOT NULL,
        updated_at_ms  INTEGER NOT NULL
    ) STRICT;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The database's schema version.
pub fn schema_version(connection: &Connection) -> Result<u32, StorageError> {
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(StorageError::sql("reading the schema version"))?;
    u32::try_from(version).map_err(|_| StorageError::UnknownSchemaVersion {
        found: version,
        supported: SCHEMA_VERSION,
    })
}

/// Applies every migration the database lacks, one transaction each; returns the
/// versions before and after. A database newer than this build is refused.
pub fn migrate(connection: &mut Connection) -> Result<(u32, u32), StorageError> {
    migrate_up_to(connection, SCHEMA_VERSION)
}

/// Applies the migrations up to schema `target` only: a database as an older agent
/// left it (for tests of upgrades).
pub fn migrate_up_to(connection: &mut Connection, target: u32) -> Result<(u32, u32), StorageError> {
    let target = target.min(SCHEMA_VERSION);
    let before = schema_version(connection)?;
    if before > SCHEMA_VERSION {
        return Err(StorageError::UnknownSchemaVersion {
            found: i64::from(before),
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(before as usize)
    {
        let version = index + 1;
        let context = format!("applying schema migration {version}");
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(StorageError::sql_owned(context.clone()))?;
        transaction
            .execute_batch(sql)
            .map_err(StorageError::sql_owned(context.clone()))?;
        transaction
            .pragma_update(None, "user_version", version as i64)
            .map_err(StorageError::sql_owned(context.clone()))?;
        transaction
            .commit()
            .map_err(StorageError::sql_owned(context))?;
    }
    Ok((before, target.max(before)))
}
