//! Firmware downloads (announced by the fleet backend, or asked for through the local
//! API): one row per download, kept until it ends, so a restarted agent resumes what it
//! was fetching. The bytes themselves are in a `.part` file beside the image cache (the downloader's business); this table holds
//! what was announced (URL, SHA-256, size), how far it got, and how it ended. Each
//! start and failure appends its event in the same transaction.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use super::events::insert_event;
use super::{connect_migrated, EventKind, NewEvent, StorageError};
use crate::clock::WallTime;

/// What the backend announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnnouncedImage {
    /// Where to fetch it (https).
    pub url: String,
    /// Its SHA-256, lower-case hexadecimal.
    pub sha256: String,
    /// Its size, bytes.
    pub size: u64,
    /// The name to file it under in the cache.
    pub name: String,
    /// The version the backend says it is (informational; the image's own header is
    /// what counts).
    pub version: Option<String>,
}

/// A download's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadState {
    /// Being fetched (or waiting to retry).
    Downloading,
    /// Verified and in the cache.
    Imported,
    /// Given up; the reason is in `last_error`.
    Failed,
}

impl DownloadState {
    /// The stored name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            DownloadState::Downloading => "downloading",
            DownloadState::Imported => "imported",
            DownloadState::Failed => "failed",
        }
    }
}

/// A stored download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageDownload {
    /// Its id.
    pub id: i64,
    /// What was announced.
    pub image: AnnouncedImage,
    /// Its state.
    pub state: DownloadState,
    /// Bytes fetched so far.
    pub bytes_done: u64,
    /// Attempts that failed so far.
    pub attempts: u32,
    /// Why the last attempt failed, or why it was given up.
    pub last_error: Option<String>,
}

/// The downloader's connection to the database.
#[derive(Debug)]
pub struct DownloadStore {
    connection: Connection,
}

fn download_from_row(row: &Row<'_>) -> rusqlite::Result<(ImageDownload, String)> {
    let size: i64 = row.get(3)?;
    let bytes_done: i64 = row.get(7)?;
    let attempts: i64 = row.get(8)?;
    Ok((
        ImageDownload {
            id: row.get(0)?,
            image: AnnouncedImage {
                url: row.get(1)?,
                sha256: row.get(2)?,
                size: u64::try_from(size).unwrap_or(0),
                name: row.get(4)?,
                version: row.get(5)?,
            },
            state: DownloadState::Downloading,
            bytes_done: u64::try_from(bytes_done).unwrap_or(0),
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            last_error: row.get(9)?,
        },
        row.get(6)?,
    ))
}

const SELECT: &str =
    "SELECT id, url, sha256, size, name, version, state, bytes_done, attempts, last_error \
                      FROM image_downloads";

impl DownloadStore {
    /// Opens the downloads of the database at `path` (opened and migrated by the agent's
    /// writer already).
    pub fn open(path: &Path) -> Result<DownloadStore, StorageError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = connect_migrated(path, flags)?;
        Ok(DownloadStore { connection })
    }

    fn query(
        &self,
        filter: &str,
        value: &dyn rusqlite::ToSql,
    ) -> Result<Vec<ImageDownload>, StorageError> {
        let mut statement = self
            .connection
            .prepare(&format!("{SELECT} WHERE {filter} ORDER BY id"))
            .map_err(StorageError::sql("preparing a download query"))?;
        let rows = statement
            .query_map([value], download_from_row)
            .map_err(StorageError::sql("reading downloads"))?;
        let mut downloads = Vec::new();
        for row in rows {
            let (mut download, state) = row.map_err(StorageError::sql("reading a download"))?;
            download.state = match state.as_str() {
                "downloading" => DownloadState::Downloading,
                "imported" => DownloadState::Imported,
                "failed" => DownloadState::Failed,
                other => {
                    return Err(StorageError::InvalidStoredValue {
                        column: "image_downloads.state",
                        reason: format!("{other:?}"),
                    })
                }
            };
            downloads.push(download);
        }
        Ok(downloads)
    }

    /// Every download still under way, oldest first.
    pub fn active(&self) -> Result<Vec<ImageDownload>, StorageError> {
        self.query("state = ?1", &"downloading")
    }

    /// One download.
    pub fn get(&self, id: i64) -> Result<Option<ImageDownload>, StorageError> {
        Ok(self.query("id = ?1", &id)?.into_iter().next())
    }

    /// Records a new download of `image` (with its `image_download_started` event), or
    /// returns the one already under way for the same SHA-256. The flag says whether
    /// it is new.
    pub fn start(
        &mut self,
        image: &AnnouncedImage,
        now: WallTime,
    ) -> Result<(ImageDownload, bool), StorageError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StorageError::sql("beginning a download"))?;
        let existing: Option<i64> = transaction
            .query_row(
                "SELECT id FROM image_downloads WHERE sha256 = ?1 AND state = 'downloading'",
                params![image.sha256],
                |row| row.get(0),
            )
            .optional()
            .map_err(StorageError::sql("looking for a download"))?;
        let (id, new) = match existing {
            Some(id) => (id, false),
            None => {
                transaction
                    .execute(
                        "INSERT INTO image_downloads (url, sha256, size, name, version, state, \
                         created_at_ms, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, 'downloading', ?6, ?6)",
                        params![
                            image.url,
                            image.sha256,
                            i64::try_from(image.size).unwrap_or(i64::MAX),
                            image.name,
                            image.version,
                            now.unix_millis()
                        ],
                    )
                    .map_err(StorageError::sql("recording a download"))?;
                let id = transaction.last_insert_rowid();
                insert_event(
                    &transaction,
                    &NewEvent::new(now, EventKind::ImageDownloadStarted).payload(
                        serde_json::json!({
                            "download": id,
                            "url": redacted_url(&image.url),
                            "sha256": image.sha256,
                            "size": image.size,
                            "version": image.version,
                        }),
                    ),
                )?;
                (id, true)
            }
        };
        transaction
            .commit()
            .map_err(StorageError::sql("committing a download"))?;
        let download = self.get(id)?.ok_or(StorageError::InvalidStoredValue {
            column: "image_downloads.id",
            reason: format!("download {id} vanished"),
        })?;
        Ok((download, new))
    }

    /// Records how far a download got, and why its last attempt failed (if it did).
    pub fn progress(
        &mut self,
        id: i64,
        bytes_done: u64,
        failed_attempt: Option<&str>,
        now: WallTime,
    ) -> Result<(), StorageError> {
        self.connection
            .execute(
                "UPDATE image_downloads SET bytes_done = ?2, updated_at_ms = ?3, \
                 attempts = attempts + ?4, last_error = coalesce(?5, last_error) WHERE id = ?1",
                params![
                    id,
                    i64::try_from(bytes_done).unwrap_or(i64::MAX),
                    now.unix_millis(),
                    i64::from(failed_attempt.is_some()),
                    failed_attempt
                ],
            )
            .map_err(StorageError::sql("recording download progress"))?;
        Ok(())
    }

    /// Ends a download: imported, or failed with `error` (and its
    /// `image_download_failed` event).
    pub fn finish(
        &mut self,
        id: i64,
        state: DownloadState,
        error: Option<&str>,
        now: WallTime,
    ) -> Result<(), StorageError> {
        let download = self.get(id)?;
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StorageError::sql("beginning a download's end"))?;
        transaction
            .execute(
                "UPDATE image_downloads SET state = ?2, last_error = coalesce(?3, last_error), \
                 updated_at_ms = ?4 WHERE id = ?1",
                params![id, state.as_str(), error, now.unix_millis()],
            )
            .map_err(StorageError::sql("ending a download"))?;
        if state == DownloadState::Failed {
            insert_event(
                &transaction,
                &NewEvent::new(now, EventKind::ImageDownloadFailed).payload(serde_json::json!({
                    "download": id,
                    "sha256": download.as_ref().map(|download| download.image.sha256.clone()),
                    "url": download.as_ref().map(|download| redacted_url(&download.image.url)),
                    "reason": error,
                })),
            )?;
        }
        transaction
            .commit()
            .map_err(StorageError::sql("committing a download's end"))?;
        Ok(())
    }
}

/// `url` without its query string and user info, which may carry credentials (signed
/// URLs), for events and logs.
pub fn redacted_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(slash) => rest.split_at(slash),
                None => (rest, ""),
            };
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => without_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::outbox::Outbox;
    use crate::storage::Storage;

    fn announced(sha: char) -> AnnouncedImage {
        AnnouncedImage {
            url: "https://user:secret@firmware.example.com/app.img?X-Signature=abc".into(),
            sha256: sha.to_string().repeat(64),
            size: 1000,
            name: "app.img".into(),
            version: Some("1.3.0".into()),
        }
    }

    #[test]
    fn a_download_is_started_once_per_image_and_its_end_is_recorded_with_events() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("agent.db");
        let _storage = Storage::open(&path).expect("storage");
        let mut store = DownloadStore::open(&path).expect("downloads");
        let now = WallTime::from_unix_seconds(1_790_000_000);
        let (first, new) = store.start(&announced('a'), now).expect("start");
        assert!(new);
        let (again, new) = store.start(&announced('a'), now).expect("start again");
        assert!(!new);
        assert_eq!(again.id, first.id);
        store
            .progress(first.id, 400, Some("connection reset"), now)
            .expect("progress");
        let active = store.active().expect("active");
        assert_eq!(active.len(), 1);
        assert_eq!((active[0].bytes_done, active[0].attempts), (400, 1));
        assert_eq!(active[0].last_error.as_deref(), Some("connection reset"));
        store
            .finish(
                first.id,
                DownloadState::Failed,
                Some("SHA-256 mismatch"),
                now,
            )
            .expect("finish");
        assert!(store.active().expect("active").is_empty());
        assert_eq!(
            store.get(first.id).expect("get").expect("row").state,
            DownloadState::Failed
        );
        // A new announcement of the same image after a failure is a new download.
        let (retry, new) = store
            .start(&announced('a'), now)
            .expect("start after failure");
        assert!(new);
        assert_ne!(retry.id, first.id);

        let outbox = Outbox::open(&path).expect("outbox");
        let events = outbox.events_after(0, 10).expect("events");
        let kinds: Vec<EventKind> = events.iter().map(|event| event.event.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::ImageDownloadStarted,
                EventKind::ImageDownloadFailed,
                EventKind::ImageDownloadStarted
            ]
        );
        // Credentials in the URL never reach an event.
        assert_eq!(
            events[0].event.payload["url"],
            "https://firmware.example.com/app.img"
        );
        assert_eq!(events[1].event.payload["reason"], "SHA-256 mismatch");
    }
}
