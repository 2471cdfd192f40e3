//! The local API's routes: each reads through the API's read-only connection or asks the
//! core loop, and answers a document of [`super::views`] or an [`ErrorView`] with a
//! status code that says what kind of failure it was (400 wrong request, 403 refused,
//! 404 unknown, 409 conflicts with the current state, 500/503 the agent's fault).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::ask;
use super::views::{
    BandView, CampaignDeviceView, CampaignRef, CampaignSummaryView, CampaignView, CountersView,
    DeviceView, DownloadView, ErrorView, EventView, GatewayView, ImageView, ImportView, NewDevice,
    NewDownload, StatusView,
};
use crate::campaign::{Campaign, CampaignError, CampaignId, CampaignSpec, CampaignState};
use crate::identifiers::{AesKey, DevEui, JoinEui};
use crate::service::campaigns::CampaignRequest;
use crate::service::operations::{Operation, OperationError, OperationErrorKind};
use crate::service::{ServiceCommand, ServiceHandle};
use crate::storage::image_downloads::{redacted_url, ImageDownload};
use crate::storage::{Device, DeviceClass, Event, FirmwareImageRecord, MacVersion, Storage};
use crate::upstream::download::{announcement, DownloadQueue};
use lorawan_fuota::image::ImageVersion;

/// Largest request body: an image for the download slot, with room to spare.
const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Events per page by default, and at most.
const DEFAULT_EVENTS: usize = 100;
const MAX_EVENTS: usize = 1000;

#[derive(Clone)]
pub(super) struct ApiState {
    pub handle: ServiceHandle,
    pub reader: Arc<Mutex<Storage>>,
    pub started: Instant,
    /// The MQTT publisher's status, when upstream sync is on.
    pub upstream: Option<tokio::sync::watch::Receiver<crate::upstream::UpstreamStatus>>,
    /// The image downloader's queue, when it runs.
    pub downloads: Option<DownloadQueue>,
}

impl ApiState {
    fn reader(&self) -> MutexGuard<'_, Storage> {
        // A handler that panicked mid-read leaves nothing half-done: reads only.
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The routes of an accepted caller.
pub(super) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/devices", get(list_devices).post(add_device))
        .route("/v1/devices/import", post(import_devices))
        .route(
            "/v1/devices/{dev_eui}",
            get(show_device).delete(remove_device),
        )
        .route("/v1/images", get(list_images).post(import_image))
        .route("/v1/images/downloads", post(start_download))
        .route("/v1/images/downloads/{id}", get(show_download))
        .route("/v1/images/{sha256}", get(show_image).delete(remove_image))
        .route("/v1/campaigns", get(list_campaigns).post(create_campaign))
        .route("/v1/campaigns/{id}", get(show_campaign))
        .route("/v1/campaigns/{id}/{action}", post(campaign_action))
        .route("/v1/events", get(events))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// What a refused caller gets, whatever it asks.
pub(super) fn refusal(message: String) -> Router {
    Router::new().fallback(move || {
        let message = message.clone();
        async move { Failure(StatusCode::FORBIDDEN, message) }
    })
}

/// A failed request: its status and message.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorView { error: self.1 })).into_response()
    }
}

impl Failure {
    fn bad_request(message: impl Into<String>) -> Self {
        Failure(StatusCode::BAD_REQUEST, message.into())
    }
    fn not_found(message: impl Into<String>) -> Self {
        Failure(StatusCode::NOT_FOUND, message.into())
    }
    fn internal(message: impl std::fmt::Display) -> Self {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
    fn stopped() -> Self {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent's core loop has stopped; see the agent's log (journalctl -u fuota-agent)"
                .into(),
        )
    }
}

impl From<crate::storage::StorageError> for Failure {
    fn from(error: crate::storage::StorageError) -> Self {
        Failure::internal(format!("reading the database: {error}"))
    }
}

impl From<OperationError> for Failure {
    fn from(error: OperationError) -> Self {
        let status = match error.kind {
            OperationErrorKind::Invalid => StatusCode::BAD_REQUEST,
            OperationErrorKind::NotFound => StatusCode::NOT_FOUND,
            OperationErrorKind::Conflict => StatusCode::CONFLICT,
            OperationErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, error.message)
    }
}

impl From<CampaignError> for Failure {
    fn from(error: CampaignError) -> Self {
        let status = match &error {
            CampaignError::UnknownCampaign(_) => StatusCode::NOT_FOUND,
            CampaignError::DeviceBusy { .. } | CampaignError::InvalidState { .. } => {
                StatusCode::CONFLICT
            }
            CampaignError::Storage(_)
            | CampaignError::Random(_)
            | CampaignError::NoGpsTime
            | CampaignError::GroupFCntExhausted(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Failure(status, error.to_string())
    }
}

type Answer<T> = Result<Json<T>, Failure>;

async fn unknown_route() -> Failure {
    Failure::not_found(
        "no such API route; the routes are listed in docs/api.md (GET /v1/status, /v1/devices, \
         /v1/images, /v1/campaigns, /v1/events)",
    )
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Failure> {
    body.map(|Json(value)| value).map_err(|rejection| {
        Failure::bad_request(format!("request body: {}", rejection.body_text()))
    })
}

fn dev_eui_of(text: &str) -> Result<DevEui, Failure> {
    text.parse()
        .map_err(|error| Failure::bad_request(format!("DevEUI {text:?}: {error}")))
}

fn campaign_id_of(text: &str) -> Result<CampaignId, Failure> {
    text.parse()
        .map_err(|_| Failure::bad_request(format!("campaign id {text:?}: expected a number")))
}

async fn status(State(state): State<ApiState>) -> Answer<StatusView> {
    Ok(Json(status_view(&state).await?))
}

/// The routes of the loopback monitoring listener: status and metrics, nothing that
/// changes anything, nothing secret.
pub(super) fn monitoring_router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            Failure::not_found("this listener serves GET /metrics and GET /v1/status only")
        })
        .with_state(state)
}

async fn metrics(State(state): State<ApiState>) -> Result<Response, Failure> {
    let status = status_view(&state).await?;
    let campaigns = {
        let reader = state.reader();
        let campaigns = reader.campaigns()?;
        campaigns
            .iter()
            .filter(|campaign| campaign.state.is_active())
            .map(|campaign| campaign_summary(&reader, campaign))
            .collect::<Result<Vec<_>, _>>()?
    };
    let text = super::metrics::render(&status, &campaigns)
        .map_err(|error| Failure::internal(format!("encoding the metrics: {error}")))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn status_view(state: &ApiState) -> Result<StatusView, Failure> {
    let loop_status = ask(&state.handle, |reply| {
        ServiceCommand::Operation(Operation::Status(reply))
    })
    .await
    .ok_or_else(Failure::stopped)?;
    let reader = state.reader();
    let mut campaigns: BTreeMap<CampaignState, usize> = BTreeMap::new();
    for campaign in reader.campaigns()? {
        *campaigns.entry(campaign.state).or_default() += 1;
    }
    let counters = loop_status.counters;
    Ok(StatusView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: state.started.elapsed().as_secs(),
        database: reader.path().display().to_string(),
        devices: reader.devices()?.len(),
        images: reader.firmware_images()?.len(),
        campaigns,
        counters: CountersView {
            uplinks: counters.uplinks,
            foreign_uplinks: counters.foreign_uplinks,
            downlinks_sent: counters.downlinks_sent,
            tx_ack_errors: counters.tx_ack_errors,
            answers_lost: counters.answers_lost,
        },
        tx_ack_errors_by_kind: loop_status.tx_ack_errors_by_kind,
        gateways: loop_status
            .gateways
            .into_iter()
            .map(|gateway| GatewayView {
                gateway_eui: gateway.gateway_eui.to_string(),
                bands: gateway
                    .bands
                    .into_iter()
                    .map(|band| BandView {
                        band: band.band,
                        used_us: band.used_us,
                        budget_us: band.budget_us,
                    })
                    .collect(),
            })
            .collect(),
        upstream: state
            .upstream
            .as_ref()
            .map(|status| status.borrow().clone()),
    })
}

fn device_view(reader: &Storage, device: Device) -> Result<DeviceView, Failure> {
    let session = reader.session(device.dev_eui)?;
    let active_campaign = reader.active_campaigns_of(device.dev_eui)?.first().copied();
    Ok(DeviceView {
        dev_eui: device.dev_eui.to_string(),
        join_eui: device.join_eui.to_string(),
        mac_version: device.mac_version.to_string(),
        class: device.class.as_str().to_string(),
        hardware_version: device.hardware_version,
        firmware_version: device.firmware_version,
        tags: device.tags,
        has_app_key: device.app_key.is_some(),
        has_nwk_key: device.nwk_key.is_some(),
        has_gen_app_key: device.gen_app_key.is_some(),
        dev_addr: session.as_ref().map(|session| session.dev_addr.to_string()),
        last_f_cnt_up: session.and_then(|session| session.last_f_cnt_up),
        active_campaign,
    })
}

async fn list_devices(State(state): State<ApiState>) -> Answer<Vec<DeviceView>> {
    let reader = state.reader();
    let devices = reader.devices()?;
    let views = devices
        .into_iter()
        .map(|device| device_view(&reader, device))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(views))
}

async fn show_device(
    State(state): State<ApiState>,
    Path(dev_eui): Path<String>,
) -> Answer<DeviceView> {
    let dev_eui = dev_eui_of(&dev_eui)?;
    let reader = state.reader();
    let device = reader
        .device(dev_eui)?
        .ok_or_else(|| Failure::not_found(format!("device {dev_eui} is not registered")))?;
    Ok(Json(device_view(&reader, device)?))
}

fn parse_key(field: &str, text: Option<&str>) -> Result<Option<AesKey>, Failure> {
    let Some(text) = text else {
        return Ok(None);
    };
    let text = text.trim();
    let valid = text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_hexdigit());
    if !valid {
        // The value itself is a secret: never echo it.
        return Err(Failure::bad_request(format!(
            "{field}: expected 32 hexadecimal digits (a 128-bit key), got {} characters",
            text.len()
        )));
    }
    let mut bytes = [0u8; 16];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16)
            .map_err(|_| Failure::bad_request(format!("{field}: not hexadecimal")))?;
    }
    Ok(Some(AesKey::from_bytes(bytes)))
}

/// The device a [`NewDevice`] describes, or what is wrong with it.
pub(crate) fn device_from_request(request: &NewDevice) -> Result<Device, String> {
    let into_message = |Failure(_, message)| message;
    let dev_eui: DevEui = request
        .dev_eui
        .parse()
        .map_err(|error| format!("dev_eui {:?}: {error}", request.dev_eui))?;
    let join_eui: JoinEui = request
        .join_eui
        .parse()
        .map_err(|error| format!("join_eui {:?}: {error}", request.join_eui))?;
    let mac_version: MacVersion = request
        .mac_version
        .parse()
        .map_err(|error| format!("mac_version: {error}"))?;
    let mut device = Device::new(dev_eui, join_eui, mac_version);
    device.app_key = parse_key("app_key", request.app_key.as_deref()).map_err(into_message)?;
    device.nwk_key = parse_key("nwk_key", request.nwk_key.as_deref()).map_err(into_message)?;
    device.gen_app_key =
        parse_key("gen_app_key", request.gen_app_key.as_deref()).map_err(into_message)?;
    if let Some(class) = &request.class {
        device.class = class
            .parse::<DeviceClass>()
            .map_err(|error| format!("class: {error}"))?;
    }
    if mac_version == MacVersion::V1_1 && device.app_key.is_some() && device.nwk_key.is_none() {
        return Err("a LoRaWAN 1.1 device that joins needs nwk_key as well as app_key".into());
    }
    device.hardware_version = request.hardware_version.clone();
    device.firmware_version = request.firmware_version.clone();
    device.tags = request.tags.clone();
    Ok(device)
}

async fn add_device(
    State(state): State<ApiState>,
    body: Result<Json<NewDevice>, JsonRejection>,
) -> Result<(StatusCode, Json<DeviceView>), Failure> {
    let request = json_body(body)?;
    let device = device_from_request(&request).map_err(Failure::bad_request)?;
    let dev_eui = device.dev_eui;
    ask(&state.handle, |reply| {
        ServiceCommand::Operation(Operation::AddDevices(vec![device], reply))
    })
    .await
    .ok_or_else(Failure::stopped)??;
    let reader = state.reader();
    let device = reader
        .device(dev_eui)?
        .ok_or_else(|| Failure::internal("the device was added but cannot be read back"))?;
    Ok((StatusCode::CREATED, Json(device_view(&reader, device)?)))
}

/// `POST /v1/devices/import`: many devices, all registered or none (the first wrong
/// one is named by its position).
async fn import_devices(
    State(state): State<ApiState>,
    body: Result<Json<Vec<NewDevice>>, JsonRejection>,
) -> Result<(StatusCode, Json<Vec<DeviceView>>), Failure> {
    let requests = json_body(body)?;
    if requests.is_empty() {
        return Err(Failure::bad_request("the list of devices is empty"));
    }
    let mut devices: Vec<Device> = Vec::with_capacity(requests.len());
    for (index, request) in requests.iter().enumerate() {
        let device = device_from_request(request)
            .map_err(|error| Failure::bad_request(format!("device {}: {error}", index + 1)))?;
        if devices.iter().any(|known| known.dev_eui == device.dev_eui) {
            return Err(Failure::bad_request(format!(
                "device {}: DevEUI {} is listed twice",
                index + 1,
                device.dev_eui
            )));
        }
        devices.push(device);
    }
    let dev_euis: Vec<DevEui> = devices.iter().map(|device| device.dev_eui).collect();
    ask(&state.handle, |reply| {
        ServiceCommand::Operation(Operation::AddDevices(devices, reply))
    })
    .await
    .ok_or_else(Failure::stopped)??;
    let reader = state.reader();
    let mut views = Vec::with_capacity(dev_euis.len());
    for dev_eui in dev_euis {
        let device = reader
            .device(dev_eui)?
            .ok_or_else(|| Failure::internal("a device was added but cannot be read back"))?;
        views.push(device_view(&reader, device)?);
    }
    Ok((StatusCode::CREATED, Json(views)))
}

async fn remove_device(
    State(state): State<ApiState>,
    Path(dev_eui): Path<String>,
) -> Result<StatusCode, Failure> {
    let dev_eui = dev_eui_of(&dev_eui)?;
    ask(&state.handle, |reply| {
        ServiceCommand::Operation(Operation::RemoveDevice(dev_eui, reply))
    })
    .await
    .ok_or_else(Failure::stopped)??;
    Ok(StatusCode::NO_CONTENT)
}

fn image_view(record: FirmwareImageRecord) -> ImageView {
    ImageView {
        sha256: record.sha256,
        kind: record.kind.as_str().to_string(),
        size: record.size,
        name: record.name,
        version: record.version,
        ts006_version: record.ts006_version.map(ts006_text),
        hardware_version: record.hardware_version,
        signer_key_hash: record.signer_key_hash,
        imported_at_ms: record.imported_at.unix_millis(),
    }
}

/// A TS006 version as major.minor.revision.
fn ts006_text(version: u32) -> String {
    let version = ImageVersion::from_ts006(version);
    format!("{}.{}.{}", version.major, version.minor, version.revision)
}

async fn list_images(State(state): State<ApiState>) -> Answer<Vec<ImageView>> {
    let images = state.reader().firmware_images()?;
    Ok(Json(images.into_iter().map(image_view).collect()))
}

async fn show_image(
    State(state): State<ApiState>,
    Path(sha256): Path<String>,
) -> Answer<ImageView> {
    let record = state.reader().firmware_image(&sha256)?.ok_or_else(|| {
        Failure::not_found(format!(
            "no cached image has SHA-256 {sha256}; `fuotactl image list` shows them"
        ))
    })?;
    Ok(Json(image_view(record)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    name: String,
}

async fn import_image(
    State(state): State<ApiState>,
    query: Result<Query<ImportQuery>, QueryRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<ImportView>), Failure> {
    let Query(query) = query.map_err(|rejection| {
        Failure::bad_request(format!(
            "{}: POST /v1/images?name=<file name> with the image as the body",
            rejection.body_text()
        ))
    })?;
    if body.is_empty() {
        return Err(Failure::bad_request(
            "the request body (the image) is empty",
        ));
    }
    let imported = ask(&state.handle, |reply| {
        ServiceCommand::Operation(Operation::ImportImage {
            bytes: body.to_vec(),
            name: query.name,
            reply,
        })
    })
    .await
    .ok_or_else(Failure::stopped)??;
    let status = if imported.already_cached {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(ImportView {
            already_cached: imported.already_cached,
            image: image_view(imported.image),
        }),
    ))
}

fn download_view(download: ImageDownload, already_downloading: bool) -> DownloadView {
    DownloadView {
        id: download.id,
        state: download.state.as_str().into(),
        url: redacted_url(&download.image.url),
        sha256: download.image.sha256,
        size: download.image.size,
        bytes_done: download.bytes_done,
        attempts: download.attempts,
        last_error: download.last_error,
        already_downloading,
        already_cached: false,
    }
}

fn download_queue(state: &ApiState) -> Result<&DownloadQueue, Failure> {
    state.downloads.as_ref().ok_or_else(|| {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent does not download images (its downloader did not start; see its log)"
                .into(),
        )
    })
}

/// Queues an https download of a signed image: it is fetched in the background (with
/// retries and resumption), checked against the SHA-256 and size given, and imported
/// like a file. 202 with the download to follow; 200 if the image is cached already.
async fn start_download(
    State(state): State<ApiState>,
    body: Result<Json<NewDownload>, JsonRejection>,
) -> Result<(StatusCode, Json<DownloadView>), Failure> {
    let new = json_body(body)?;
    let image = announcement(new.url, &new.sha256, new.size, new.name, new.version)
        .map_err(Failure::bad_request)?;
    if state.reader().firmware_image(&image.sha256)?.is_some() {
        return Ok((
            StatusCode::OK,
            Json(DownloadView {
                id: 0,
                state: "imported".into(),
                url: redacted_url(&image.url),
                sha256: image.sha256,
                size: image.size,
                bytes_done: 0,
                attempts: 0,
                last_error: None,
                already_downloading: false,
                already_cached: true,
            }),
        ));
    }
    let (download, new) = download_queue(&state)?.announce(&image)?;
    Ok((StatusCode::ACCEPTED, Json(download_view(download, !new))))
}

async fn show_download(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Answer<DownloadView> {
    let id: i64 = id
        .parse()
        .map_err(|_| Failure::bad_request(format!("download id {id:?}: expected a number")))?;
    let download = download_queue(&state)?
        .get(id)?
        .ok_or_else(|| Failure::not_found(format!("no image download has id {id}")))?;
    Ok(Json(download_view(download, false)))
}

async fn remove_image(
    State(state): State<ApiState>,
    Path(sha256): Path<String>,
) -> Result<StatusCode, Failure> {
    ask(&state.handle, |reply| {
        ServiceCommand::Operation(Operation::RemoveImage(sha256, reply))
    })
    .await
    .ok_or_else(Failure::stopped)??;
    Ok(StatusCode::NO_CONTENT)
}

fn campaign_summary(reader: &Storage, campaign: &Campaign) -> Result<CampaignSummaryView, Failure> {
    let devices = reader.campaign_devices(campaign.id)?;
    let mut results = BTreeMap::new();
    for device in &devices {
        *results.entry(device.status).or_default() += 1;
    }
    let step = campaign.progress.phase.name().to_string();
    Ok(CampaignSummaryView {
        id: campaign.id,
        name: campaign.name.clone(),
        state: campaign.state,
        step,
        image_sha256: campaign.image_sha256.clone(),
        target_version: ts006_text(campaign.target_version),
        delivery: campaign.delivery.as_str().to_string(),
        devices: devices.len(),
        results,
        created_at_ms: campaign.created_at_ms,
        updated_at_ms: campaign.updated_at_ms,
    })
}

fn stored_campaign(reader: &Storage, id: CampaignId) -> Result<Campaign, Failure> {
    reader.campaign(id)?.ok_or_else(|| {
        Failure::not_found(format!(
            "no campaign {id}; `fuotactl campaign list` shows them"
        ))
    })
}

async fn list_campaigns(State(state): State<ApiState>) -> Answer<Vec<CampaignSummaryView>> {
    let reader = state.reader();
    let campaigns = reader.campaigns()?;
    let views = campaigns
        .iter()
        .map(|campaign| campaign_summary(&reader, campaign))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(views))
}

async fn show_campaign(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Answer<CampaignView> {
    let id = campaign_id_of(&id)?;
    let reader = state.reader();
    let campaign = stored_campaign(&reader, id)?;
    let summary = campaign_summary(&reader, &campaign)?;
    let device_results = reader
        .campaign_devices(id)?
        .into_iter()
        .map(|device| CampaignDeviceView {
            dev_eui: device.dev_eui.to_string(),
            status: device.status,
            step: device.step,
            retries: device.retries,
            missing: device.missing,
            last_seen_ms: device.last_seen_ms,
            last_error: device.last_error,
        })
        .collect();
    let json = |value: Result<serde_json::Value, serde_json::Error>| {
        value.map_err(|error| Failure::internal(format!("encoding the campaign: {error}")))
    };
    Ok(Json(CampaignView {
        summary,
        progress: json(serde_json::to_value(campaign.progress))?,
        parameters: json(serde_json::to_value(campaign.parameters))?,
        targets: json(serde_json::to_value(&campaign.targets))?,
        device_results,
    }))
}

async fn campaign_reply(
    state: &ApiState,
    request: CampaignRequest,
) -> Result<Json<CampaignRef>, Failure> {
    let id = ask(&state.handle, |reply| ServiceCommand::Campaign {
        request,
        reply,
    })
    .await
    .ok_or_else(Failure::stopped)??;
    let campaign = stored_campaign(&state.reader(), id)?;
    Ok(Json(CampaignRef {
        id,
        state: campaign.state,
    }))
}

async fn create_campaign(
    State(state): State<ApiState>,
    body: Result<Json<CampaignSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<CampaignRef>), Failure> {
    let spec = json_body(body)?;
    let created = campaign_reply(&state, CampaignRequest::Create(Box::new(spec))).await?;
    Ok((StatusCode::CREATED, created))
}

async fn campaign_action(
    State(state): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
) -> Answer<CampaignRef> {
    let id = campaign_id_of(&id)?;
    let request = match action.as_str() {
        "start" => CampaignRequest::Start(id),
        "pause" => CampaignRequest::Pause(id),
        "resume" => CampaignRequest::Resume(id),
        "cancel" => CampaignRequest::Cancel(id),
        other => {
            return Err(Failure::not_found(format!(
                "unknown campaign action {other:?}: start, pause, resume or cancel"
            )))
        }
    };
    campaign_reply(&state, request).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Events after this id (paging and following).
    after: Option<i64>,
    /// At most this many.
    limit: Option<usize>,
    /// Only this device's (most recent first).
    dev_eui: Option<String>,
}

fn event_view(event: Event) -> EventView {
    EventView {
        id: event.id,
        time_ms: event.time_ms,
        kind: event.kind.as_str().to_string(),
        dev_eui: event.dev_eui.map(|eui| eui.to_string()),
        gateway_eui: event.gateway_eui.map(|eui| eui.to_string()),
        payload: event.payload,
    }
}

async fn events(
    State(state): State<ApiState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Answer<Vec<EventView>> {
    let Query(query) = query.map_err(|rejection| {
        Failure::bad_request(format!(
            "{}: expected ?after=<id>&limit=<n>&dev_eui=<DevEUI>",
            rejection.body_text()
        ))
    })?;
    let limit = query.limit.unwrap_or(DEFAULT_EVENTS).clamp(1, MAX_EVENTS);
    let reader = state.reader();
    let events = match &query.dev_eui {
        Some(dev_eui) => {
            let dev_eui = dev_eui_of(dev_eui)?;
            let after = query.after.unwrap_or(0);
            let mut events: Vec<Event> = reader
                .device_events(dev_eui, limit)?
                .into_iter()
                .filter(|event| event.id > after)
                .collect();
            events.reverse();
            events
        }
        None => reader.events_after(query.after.unwrap_or(0), limit)?,
    };
    Ok(Json(events.into_iter().map(event_view).collect()))
}
