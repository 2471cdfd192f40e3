//! Firmware downloads over HTTPS: the images the fleet backend announces (the
//! `announce_image` command) and those an operator asks for (`POST
//! /v1/images/downloads`, `fuotactl image import https://…`), fetched in the background,
//! resumed, checked, and imported through the same verification as a local import.
//!
//! A download writes into `<cache directory>/downloads/<sha256>.part`. Each attempt
//! asks for the bytes it lacks (`Range: bytes=<have>-`); a server that ignores the range
//! (200) or answers with another one starts the file again. A connection that breaks,
//! stalls for [`STALL_TIMEOUT`] or ends early is retried after a delay that doubles from
//! [`RETRY_MIN`] to [`RETRY_MAX`], up to [`MAX_ATTEMPTS`] times, across restarts of the
//! agent (the rows in `image_downloads` say what is under way). A body longer than
//! announced, a SHA-256 other than announced, a server that says the file is not there,
//! and an image the cache refuses (bad signature, untrusted key) end the download at
//! once: the part file is removed and nothing enters the cache. Each end is an event
//! (`image_imported`, or `image_download_failed` with the reason).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::UpstreamError;
use crate::clock::WallTime;
use crate::service::operations::Operation;
use crate::service::{ServiceCommand, ServiceHandle};
use crate::storage::image_downloads::{
    redacted_url, AnnouncedImage, DownloadState, DownloadStore, ImageDownload,
};
use crate::storage::StorageError;

/// Largest image a download accepts, bytes (the node's slot is far smaller).
pub const MAX_IMAGE_BYTES: u64 = 16 * 1024 * 1024;
/// Attempts before a download is given up.
pub const MAX_ATTEMPTS: u32 = 20;
/// First delay before retrying.
pub const RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest delay before retrying.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// A body that sends nothing for this long is taken as a dead connection.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn now() -> WallTime {
    WallTime::from_system_time(SystemTime::now())
}

/// Where announcements go: the downloads' table, and a wake-up for the downloader.
#[derive(Clone, Debug)]
pub struct DownloadQueue {
    store: Arc<Mutex<DownloadStore>>,
    wake: Arc<Notify>,
}

impl DownloadQueue {
    fn store(&self) -> std::sync::MutexGuard<'_, DownloadStore> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One download, as it stands.
    pub fn get(&self, id: i64) -> Result<Option<ImageDownload>, StorageError> {
        self.store().get(id)
    }

    /// Records the announcement (or finds the download of the same image under way)
    /// and wakes the downloader. The flag says whether it is a new download.
    pub fn announce(&self, image: &AnnouncedImage) -> Result<(ImageDownload, bool), StorageError> {
        let started = self.store().start(image, now())?;
        self.wake.notify_one();
        Ok(started)
    }
}

/// How one attempt ended, when it did not get every byte.
enum AttemptError {
    /// Worth trying again.
    Transient(String),
    /// Never going to work: give up now.
    Permanent(String),
}

/// The background downloader.
pub struct Downloader {
    queue: DownloadQueue,
    client: reqwest::Client,
    directory: PathBuf,
    handle: ServiceHandle,
    retry_min: Duration,
}

impl Downloader {
    /// A downloader into `cache_directory/downloads`, trusting `ca_file` (or the system's
    /// CA store), importing through `handle`.
    pub fn new(
        store: DownloadStore,
        cache_directory: &Path,
        ca_file: Option<&Path>,
        handle: ServiceHandle,
    ) -> Result<Downloader, UpstreamError> {
        let tls = super::tls::https_client_config(ca_file)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .https_only(true)
            .user_agent(concat!("fuota-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| UpstreamError::Http(error.to_string()))?;
        let directory = cache_directory.join("downloads");
        std::fs::create_dir_all(&directory).map_err(|source| UpstreamError::DownloadDirectory {
            path: directory.clone(),
            source,
        })?;
        Ok(Downloader {
            queue: DownloadQueue {
                store: Arc::new(Mutex::new(store)),
                wake: Arc::new(Notify::new()),
            },
            client,
            directory,
            handle,
            retry_min: RETRY_MIN,
        })
    }

    /// Retries after `delay` first (tests) instead of [`RETRY_MIN`].
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_min = delay;
        self
    }

    /// The queue announcements go to.
    pub fn queue(&self) -> DownloadQueue {
        self.queue.clone()
    }

    /// Downloads what is under way, then waits for announcements, until `shutdown`.
    /// A download interrupted by the shutdown resumes at the next start.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let active = match self.queue.store().active() {
                Ok(active) => active,
                Err(error) => {
                    warn!("downloads: {error}");
                    Vec::new()
                }
            };
            for download in active {
                tokio::select! {
                    () = &mut shutdown => return,
                    () = self.download(download) => {}
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.queue.wake.notified() => {}
                // A failed read of the table above is tried again now and then.
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    }

    fn part_path(&self, download: &ImageDownload) -> PathBuf {
        self.directory
            .join(format!("{}.part", download.image.sha256))
    }

    fn record(&self, result: Result<(), StorageError>) {
        if let Err(error) = result {
            warn!("downloads: recording progress: {error}");
        }
    }

    /// Ends `download` as failed, removing what was fetched.
    fn give_up(&self, download: &ImageDownload, reason: &str) {
        warn!(
            download = download.id,
            url = %redacted_url(&download.image.url),
            "image download given up: {reason}"
        );
        let _ = std::fs::remove_file(self.part_path(download));
        self.record(self.queue.store().finish(
            download.id,
            DownloadState::Failed,
            Some(reason),
            now(),
        ));
    }

    /// Fetches `download` to its end: imported or given up.
    async fn download(&self, download: ImageDownload) {
        let part = self.part_path(&download);
        let mut attempts = download.attempts;
        let mut delay = self.retry_min;
        info!(download = download.id, url = %redacted_url(&download.image.url), "downloading an image");
        loop {
            match self.attempt(&download, &part).await {
                Ok(()) => break,
                Err(AttemptError::Permanent(reason)) => return self.give_up(&download, &reason),
                Err(AttemptError::Transient(reason)) => {
                    attempts += 1;
                    let have = file_length(&part);
                    self.record(self.queue.store().progress(
                        download.id,
                        have,
                        Some(&reason),
                        now(),
                    ));
                    if attempts >= MAX_ATTEMPTS {
                        return self.give_up(
                            &download,
                            &format!("gave up after {attempts} attempts; the last: {reason}"),
                        );
                    }
                    warn!(
                        download = download.id,
                        have,
                        "image download interrupted ({reason}); resuming in {} s",
                        delay.as_secs()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
        // Every byte is here: check it is what was announced, then import it.
        let bytes = match std::fs::read(&part) {
            Ok(bytes) => bytes,
            Err(error) => {
                return self.give_up(&download, &format!("reading the download: {error}"))
            }
        };
        let sha256: String = Sha256::digest(&bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        if sha256 != download.image.sha256 {
            return self.give_up(
                &download,
                &format!(
                    "the download's SHA-256 is {sha256}, the announcement said {}: corrupted or not the announced file",
                    download.image.sha256
                ),
            );
        }
        let imported = crate::api::ask(&self.handle, |reply| {
            ServiceCommand::Operation(Operation::ImportImage {
                bytes,
                name: download.image.name.clone(),
                reply,
            })
        })
        .await;
        match imported {
            None => {} // Shutting down: resumed (and verified again) at the next start.
            Some(Err(error)) => {
                self.give_up(&download, &format!("refused by the image cache: {error}"))
            }
            Some(Ok(_)) => {
                info!(download = download.id, sha256 = %download.image.sha256, "downloaded image imported");
                let _ = std::fs::remove_file(&part);
                self.record(self.queue.store().finish(
                    download.id,
                    DownloadState::Imported,
                    None,
                    now(),
                ));
            }
        }
    }

    /// One request: appends the missing bytes to `part`.
    async fn attempt(&self, download: &ImageDownload, part: &Path) -> Result<(), AttemptError> {
        let size = download.image.size;
        let mut have = file_length(part);
        if have > size {
            truncate(part)?;
            have = 0;
        }
        if have == size {
            return Ok(());
        }
        let mut request = self.client.get(&download.image.url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let response = request
            .send()
            .await
            .map_err(|error| AttemptError::Transient(describe(&error)))?;
        let status = response.status();
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|value| value.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((start, total))
                        if start == have && total.is_none_or(|total| total == size) => {}
                    Some((_, Some(total))) if total != size => {
                        return Err(AttemptError::Permanent(format!(
                            "the server's file is {total} bytes, the announcement said {size}"
                        )))
                    }
                    _ => {
                        truncate(part)?;
                        return Err(AttemptError::Transient(
                            "the server answered another range; starting the file again".into(),
                        ));
                    }
                }
            }
            StatusCode::OK => {
                if have > 0 {
                    // The server ignores ranges: the whole file again.
                    truncate(part)?;
                    have = 0;
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                truncate(part)?;
                return Err(AttemptError::Transient(
                    "the server refused the range; starting the file again".into(),
                ));
            }
            status
                if status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT =>
            {
                return Err(AttemptError::Transient(format!(
                    "the server answered {status}"
                )));
            }
            status => {
                return Err(AttemptError::Permanent(format!(
                    "the server answered {status}: check the announced URL"
                )))
            }
        }
        if let Some(length) = response.content_length() {
            if have + length > size {
                return Err(AttemptError::Permanent(format!(
                    "the server sends {} bytes, the announcement said {size}",
                    have + length
                )));
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(|error| {
                AttemptError::Permanent(format!("writing {}: {error}", part.display()))
            })?;
        let mut body = response.bytes_stream();
        let mut last_recorded = have;
        loop {
            let chunk = match tokio::time::timeout(STALL_TIMEOUT, body.next()).await {
                Err(_) => {
                    sync(&file);
                    return Err(AttemptError::Transient(format!(
                        "nothing received for {} s",
                        STALL_TIMEOUT.as_secs()
                    )));
                }
                Ok(None) => break,
                Ok(Some(Err(error))) => {
                    sync(&file);
                    return Err(AttemptError::Transient(describe(&error)));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            have += chunk.len() as u64;
            if have > size {
                return Err(AttemptError::Permanent(format!(
                    "the server sent more than the {size} bytes announced"
                )));
            }
            file.write_all(&chunk).map_err(|error| {
                AttemptError::Permanent(format!("writing {}: {error}", part.display()))
            })?;
            if have - last_recorded >= 256 * 1024 {
                self.record(self.queue.store().progress(download.id, have, None, now()));
                last_recorded = have;
            }
        }
        sync(&file);
        self.record(self.queue.store().progress(download.id, have, None, now()));
        if have < size {
            return Err(AttemptError::Transient(format!(
                "the connection ended after {have} of {size} bytes"
            )));
        }
        Ok(())
    }
}

/// An error with its causes (reqwest's own message is terse).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn file_length(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|metadata| metadata.len())
        .unwrap_or(0)
}

fn truncate(path: &Path) -> Result<(), AttemptError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(AttemptError::Permanent(format!(
            "removing {}: {error}",
            path.display()
        ))),
    }
}

fn sync(file: &std::fs::File) {
    if let Err(error) = file.sync_data() {
        warn!("downloads: syncing the part file: {error}");
    }
}

/// `bytes <start>-<end>/<total or *>` → (start, total).
fn parse_content_range(text: &str) -> Option<(u64, Option<u64>)> {
    let range = text.trim().strip_prefix("bytes ")?;
    let (span, total) = range.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    let total = match total {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    Some((start.parse().ok()?, total))
}

/// An announcement from what a backend or an operator gave: the SHA-256 in lower case,
/// the name defaulting to the URL's last path segment (or `<sha256>.img`), checked
/// with [`check_announcement`].
pub fn announcement(
    url: String,
    sha256: &str,
    size: u64,
    name: Option<String>,
    version: Option<String>,
) -> Result<AnnouncedImage, String> {
    let sha256 = sha256.to_ascii_lowercase();
    let name = match name {
        Some(name) => name,
        None => url
            .split(['?', '#'])
            .next()
            .and_then(|path| path.rsplit('/').next())
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{sha256}.img")),
    };
    let image = AnnouncedImage {
        url,
        sha256,
        size,
        name,
        version,
    };
    check_announcement(&image)?;
    Ok(image)
}

/// Checks an announcement: https URL, SHA-256, size.
pub fn check_announcement(image: &AnnouncedImage) -> Result<(), String> {
    let url = reqwest::Url::parse(&image.url)
        .map_err(|error| format!("url {:?}: {error}", redacted_url(&image.url)))?;
    if url.scheme() != "https" {
        return Err(format!(
            "url {:?}: only https:// downloads are accepted",
            redacted_url(&image.url)
        ));
    }
    if image.sha256.len() != 64 || !image.sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(format!(
            "sha256 {:?}: expected 64 hexadecimal digits",
            image.sha256
        ));
    }
    if image.size == 0 || image.size > MAX_IMAGE_BYTES {
        return Err(format!(
            "size {}: expected 1 to {MAX_IMAGE_BYTES} bytes",
            image.size
        ));
    }
    if image.name.is_empty() || image.name.len() > 255 || image.name.contains('/') {
        return Err(format!(
            "name {:?}: 1 to 255 characters, no '/'",
            image.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_read() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, None)));
        assert_eq!(parse_content_range("items 0-9/10"), None);
        assert_eq!(parse_content_range("bytes x-9/10"), None);
    }

    #[test]
    fn announcements_need_https_a_sha256_and_a_sensible_size() {
        let good = AnnouncedImage {
            url: "https://firmware.example.com/app-1.3.0.img".into(),
            sha256: "a".repeat(64),
            size: 120_000,
            name: "app-1.3.0.img".into(),
            version: None,
        };
        assert_eq!(check_announcement(&good), Ok(()));
        let plain = AnnouncedImage {
            url: "http://firmware.example.com/app.img".into(),
            ..good.clone()
        };
        assert!(check_announcement(&plain).unwrap_err().contains("https"));
        let short = AnnouncedImage {
            sha256: "abc".into(),
            ..good.clone()
        };
        assert!(check_announcement(&short)
            .unwrap_err()
            .contains("64 hexadecimal"));
        let huge = AnnouncedImage {
            size: MAX_IMAGE_BYTES + 1,
            ..good.clone()
        };
        assert!(check_announcement(&huge).unwrap_err().contains("size"));
        let nested = AnnouncedImage {
            name: "../app.img".into(),
            ..good
        };
        assert!(check_announcement(&nested).unwrap_err().contains("no '/'"));
    }
}
