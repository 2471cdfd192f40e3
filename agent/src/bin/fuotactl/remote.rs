//! The commands that drive a running agent through its local API.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use fuota_agent::api::client::{ApiClient, RequestBody};
use fuota_agent::api::views::{
    CampaignRef, CampaignSummaryView, CampaignView, DeviceView, DownloadView, EventView, ImageView,
    ImportView, NewDevice, NewDownload, StatusView,
};
use fuota_agent::campaign::{
    CampaignSpec, CampaignState, DeliveryChoice, DeviceStatus, ParameterOverrides, Targets,
};
use hyper::Method;
use serde::Serialize;

use crate::output::{ago, name_of, or_dash, print_table, time};
use crate::{
    print_json, CampaignCommand, Command, CreateArgs, DeviceArgs, DeviceCommand, Failure,
    ImageCommand,
};

/// Runs one agent command.
pub(crate) fn run(socket: &Path, json: bool, command: Command) -> Result<(), Failure> {
    let client = ApiClient::new(socket)?;
    match command {
        Command::Status => status(&client, json),
        Command::Device(command) => device(&client, json, command),
        Command::Image(command) => image(&client, json, command),
        Command::Campaign(command) => campaign(&client, json, command),
        Command::Events {
            after,
            limit,
            device,
            follow,
        } => events(&client, json, after, limit, device, follow),
        Command::Completions { .. } | Command::Manpages { .. } => Err(Failure::error(
            "completions and manpage run without the agent",
        )),
    }
}

fn emit<T: Serialize>(value: &T) -> Result<(), Failure> {
    let value = serde_json::to_value(value)
        .map_err(|error| Failure::error(format!("encoding the answer: {error}")))?;
    print_json(&value);
    Ok(())
}

fn status(client: &ApiClient, json: bool) -> Result<(), Failure> {
    let status: StatusView = client.get("/v1/status")?;
    if json {
        return emit(&status);
    }
    println!(
        "fuota-agent {}, up {}",
        status.version,
        uptime(status.uptime_s)
    );
    println!("database   {}", status.database);
    println!("devices    {}", status.devices);
    println!("images     {}", status.images);
    let campaigns: Vec<String> = status
        .campaigns
        .iter()
        .map(|(state, count)| format!("{count} {}", name_of(state)))
        .collect();
    println!(
        "campaigns  {}",
        if campaigns.is_empty() {
            "none".to_string()
        } else {
            campaigns.join(", ")
        }
    );
    let counters = status.counters;
    println!(
        "traffic    {} uplinks ({} passed through), {} downlinks, {} TX_ACK errors, {} answers lost",
        counters.uplinks,
        counters.foreign_uplinks,
        counters.downlinks_sent,
        counters.tx_ack_errors,
        counters.answers_lost
    );
    match &status.upstream {
        None => println!("upstream   off (no [mqtt] broker)"),
        Some(upstream) => {
            let state = if upstream.connected && upstream.commands_subscribed {
                "connected, listening for commands".to_string()
            } else if upstream.connected {
                "connected".to_string()
            } else {
                match &upstream.last_error {
                    Some(error) => format!("disconnected ({error})"),
                    None => "connecting".to_string(),
                }
            };
            println!("upstream   {} {state}", upstream.broker);
            println!(
                "outbox     {} events waiting ({:.1} of {:.0} MiB), delivered up to event {}, {} dropped by the quota since start",
                upstream.outbox_events,
                upstream.outbox_bytes as f64 / 1_048_576.0,
                upstream.outbox_quota_bytes as f64 / 1_048_576.0,
                upstream.delivered_event_id,
                upstream.dropped_since_start
            );
        }
    }
    if status.gateways.is_empty() {
        println!("gateways   none heard since start");
        return Ok(());
    }
    println!();
    let mut rows = Vec::new();
    for gateway in &status.gateways {
        for band in &gateway.bands {
            let usage = match band.budget_us {
                Some(budget) if budget > 0 => format!(
                    "{:.1} % of the budget ({} / {} ms)",
                    band.used_us as f64 * 100.0 / budget as f64,
                    band.used_us / 1000,
                    budget / 1000
                ),
                _ => format!("{} ms (no limit)", band.used_us / 1000),
            };
            rows.push(vec![gateway.gateway_eui.clone(), band.band.clone(), usage]);
        }
    }
    print_table(&["GATEWAY", "BAND", "DUTY CYCLE"], &rows, "");
    Ok(())
}

fn uptime(seconds: u64) -> String {
    match seconds {
        0..=119 => format!("{seconds} s"),
        120..=7199 => format!("{} min", seconds / 60),
        _ => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
    }
}

fn device(client: &ApiClient, json: bool, command: DeviceCommand) -> Result<(), Failure> {
    match command {
        DeviceCommand::List => {
            let devices: Vec<DeviceView> = client.get("/v1/devices")?;
            if json {
                return emit(&devices);
            }
            let rows: Vec<Vec<String>> = devices
                .iter()
                .map(|device| {
                    vec![
                        device.dev_eui.clone(),
                        device.mac_version.clone(),
                        device.class.clone(),
                        or_dash(device.hardware_version.clone()),
                        or_dash(device.firmware_version.clone()),
                        or_dash(device.dev_addr.clone()),
                        or_dash(device.active_campaign),
                    ]
                })
                .collect();
            print_table(
                &[
                    "DEV_EUI", "MAC", "CLASS", "HARDWARE", "FIRMWARE", "DEV_ADDR", "CAMPAIGN",
                ],
                &rows,
                "no devices registered (fuotactl device add, or device import FILE.csv)",
            );
            Ok(())
        }
        DeviceCommand::Show { dev_eui } => {
            let device: DeviceView = client.get(&format!("/v1/devices/{dev_eui}"))?;
            if json {
                return emit(&device);
            }
            print_device(&device);
            Ok(())
        }
        DeviceCommand::Add(args) => {
            let request = new_device(*args);
            let device: DeviceView = client.post_json("/v1/devices", &request)?;
            if json {
                return emit(&device);
            }
            println!("added device {}", device.dev_eui);
            Ok(())
        }
        DeviceCommand::Import { file } => {
            let devices = read_device_csv(&file)?;
            let added: Vec<DeviceView> = client.post_json("/v1/devices/import", &devices)?;
            if json {
                return emit(&added);
            }
            println!("added {} devices from {}", added.len(), file.display());
            Ok(())
        }
        DeviceCommand::Remove { dev_eui } => {
            client.request(
                Method::DELETE,
                &format!("/v1/devices/{dev_eui}"),
                RequestBody::Empty,
            )?;
            if json {
                return emit(&serde_json::json!({ "removed": dev_eui }));
            }
            println!("removed device {dev_eui}");
            Ok(())
        }
        DeviceCommand::ProvisioningRecords { file, output_dir } => {
            crate::offline::provisioning_records(&file, &output_dir, json)
        }
    }
}

fn print_device(device: &DeviceView) {
    let yes_no = |set: bool| if set { "set" } else { "-" };
    let tags: Vec<String> = device
        .tags
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let rows = [
        ("DevEUI", device.dev_eui.clone()),
        ("JoinEUI", device.join_eui.clone()),
        ("MAC version", device.mac_version.clone()),
        ("class", device.class.clone()),
        ("hardware", or_dash(device.hardware_version.clone())),
        ("firmware", or_dash(device.firmware_version.clone())),
        (
            "tags",
            if tags.is_empty() {
                "-".into()
            } else {
                tags.join(", ")
            },
        ),
        ("AppKey", yes_no(device.has_app_key).into()),
        ("NwkKey", yes_no(device.has_nwk_key).into()),
        ("GenAppKey", yes_no(device.has_gen_app_key).into()),
        ("DevAddr", or_dash(device.dev_addr.clone())),
        ("last FCntUp", or_dash(device.last_f_cnt_up)),
        ("campaign", or_dash(device.active_campaign)),
    ];
    for (label, value) in rows {
        println!("{label:<12} {value}");
    }
}

fn new_device(args: DeviceArgs) -> NewDevice {
    NewDevice {
        dev_eui: args.dev_eui,
        join_eui: args.join_eui,
        mac_version: args.mac_version,
        app_key: args.app_key,
        nwk_key: args.nwk_key,
        gen_app_key: args.gen_app_key,
        class: args.class,
        hardware_version: args.hardware_version,
        firmware_version: args.firmware_version,
        tags: args.tags.into_iter().collect(),
    }
}

/// The devices of a CSV file; the first wrong row is named by its line.
pub(crate) fn read_device_csv(path: &Path) -> Result<Vec<NewDevice>, Failure> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
        .map_err(|error| Failure::error(format!("cannot read {}: {error}", path.display())))?;
    let headers = reader
        .headers()
        .map_err(|error| Failure::refused(format!("{}: {error}", path.display())))?
        .clone();
    const KNOWN: [&str; 10] = [
        "dev_eui",
        "join_eui",
        "mac_version",
        "app_key",
        "nwk_key",
        "gen_app_key",
        "class",
        "hardware_version",
        "firmware_version",
        "tags",
    ];
    for header in &headers {
        if !KNOWN.contains(&header) {
            return Err(Failure::refused(format!(
                "{}: unknown column {header:?}; the columns are {}",
                path.display(),
                KNOWN.join(", ")
            )));
        }
    }
    for required in ["dev_eui", "join_eui", "mac_version"] {
        if !headers.iter().any(|header| header == required) {
            return Err(Failure::refused(format!(
                "{}: the header row lacks the column {required:?}",
                path.display()
            )));
        }
    }
    let mut devices = Vec::new();
    for record in reader.records() {
        let record =
            record.map_err(|error| Failure::refused(format!("{}: {error}", path.display())))?;
        let line = record.position().map_or(0, |position| position.line());
        let field = |name: &str| -> Option<String> {
            headers
                .iter()
                .position(|header| header == name)
                .and_then(|index| record.get(index))
                .filter(|value| !value.is_empty())
                .map(String::from)
        };
        let mut tags = BTreeMap::new();
        if let Some(text) = field("tags") {
            for pair in text.split(';').filter(|pair| !pair.trim().is_empty()) {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    Failure::refused(format!(
                        "{} line {line}: tag {pair:?}: expected key=value (several: a=1;b=2)",
                        path.display()
                    ))
                })?;
                tags.insert(key.trim().to_string(), value.trim().to_string());
            }
        }
        let required = |name: &str| {
            field(name).ok_or_else(|| {
                Failure::refused(format!("{} line {line}: {name} is empty", path.display()))
            })
        };
        devices.push(NewDevice {
            dev_eui: required("dev_eui")?,
            join_eui: required("join_eui")?,
            mac_version: required("mac_version")?,
            app_key: field("app_key"),
            nwk_key: field("nwk_key"),
            gen_app_key: field("gen_app_key"),
            class: field("class"),
            hardware_version: field("hardware_version"),
            firmware_version: field("firmware_version"),
            tags,
        });
    }
    if devices.is_empty() {
        return Err(Failure::refused(format!(
            "{}: no devices (only a header row?)",
            path.display()
        )));
    }
    Ok(devices)
}

/// How often a followed download is asked about.
const DOWNLOAD_POLL: Duration = Duration::from_millis(500);

fn print_download(download: &DownloadView) {
    println!("download {}: {}", download.id, download.state);
    println!("  url      {}", download.url);
    println!("  sha256   {}", download.sha256);
    println!("  bytes    {} of {}", download.bytes_done, download.size);
    if download.attempts > 0 {
        println!("  failed attempts {}", download.attempts);
    }
    if let Some(error) = &download.last_error {
        println!("  last error: {error}");
    }
}

/// `fuotactl image import https://…`: queues the download, then follows it.
fn import_url(
    client: &ApiClient,
    json: bool,
    url: &str,
    name: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
    no_wait: bool,
) -> Result<(), Failure> {
    let (Some(sha256), Some(size)) = (sha256, size) else {
        return Err(Failure::error(
            "importing from a URL needs --sha256 HEX and --size BYTES (what the image must \
             be: the download is refused otherwise)",
        ));
    };
    let request = NewDownload {
        url: url.to_string(),
        sha256,
        size,
        name,
        version: None,
    };
    let mut download: DownloadView = client.post_json("/v1/images/downloads", &request)?;
    if download.already_cached {
        if json {
            return emit(&download);
        }
        println!("{} is cached already", download.sha256);
        return Ok(());
    }
    if no_wait {
        if json {
            return emit(&download);
        }
        println!(
            "download {} queued; follow it with `fuotactl image download {}`",
            download.id, download.id
        );
        return Ok(());
    }
    let progress = !json && std::io::stderr().is_terminal();
    let mut last_attempts = 0;
    while download.state == "downloading" {
        if progress {
            eprint!(
                "\rdownloading {}: {} of {} bytes",
                download.url, download.bytes_done, download.size
            );
        }
        if download.attempts > last_attempts && !json {
            last_attempts = download.attempts;
            eprintln!(
                "{}attempt {} failed, retrying: {}",
                if progress { "\n" } else { "" },
                download.attempts,
                download.last_error.as_deref().unwrap_or("?")
            );
        }
        std::thread::sleep(DOWNLOAD_POLL);
        download = client.get(&format!("/v1/images/downloads/{}", download.id))?;
    }
    if progress {
        eprintln!();
    }
    if json {
        emit(&download)?;
    }
    match download.state.as_str() {
        "imported" => {
            if !json {
                println!("imported {} as {}", download.url, download.sha256);
            }
            Ok(())
        }
        _ => Err(Failure::refused(format!(
            "download of {} failed: {}; nothing entered the cache",
            download.url,
            download
                .last_error
                .as_deref()
                .unwrap_or("no reason recorded")
        ))),
    }
}

fn image(client: &ApiClient, json: bool, command: ImageCommand) -> Result<(), Failure> {
    match command {
        ImageCommand::Import {
            source,
            name,
            sha256,
            size,
            no_wait,
        } => {
            if let Some(url) = source.to_str().filter(|text| text.contains("://")) {
                return import_url(client, json, url, name, sha256, size, no_wait);
            }
            if sha256.is_some() || size.is_some() || no_wait {
                return Err(Failure::error(
                    "--sha256, --size and --no-wait are for an https:// URL; a file is \
                     imported as it is",
                ));
            }
            let file = source;
            let bytes = std::fs::read(&file).map_err(|error| {
                Failure::error(format!("cannot read {}: {error}", file.display()))
            })?;
            let name = name.unwrap_or_else(|| {
                file.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "image".into())
            });
            let path = format!("/v1/images?name={}", query_escape(&name));
            let imported: ImportView =
                client.call(Method::POST, &path, RequestBody::Bytes(bytes))?;
            if json {
                return emit(&imported);
            }
            let image = &imported.image;
            if imported.already_cached {
                println!("{} is cached already as {}", file.display(), image.sha256);
            } else {
                println!(
                    "imported {} as {} (version {}, {} bytes)",
                    file.display(),
                    image.sha256,
                    or_dash(image.version.clone()),
                    image.size
                );
            }
            Ok(())
        }
        ImageCommand::Download { id } => {
            let download: DownloadView = client.get(&format!("/v1/images/downloads/{id}"))?;
            if json {
                return emit(&download);
            }
            print_download(&download);
            match download.state.as_str() {
                "failed" => Err(Failure::refused(format!(
                    "download {id} failed: {}",
                    download
                        .last_error
                        .as_deref()
                        .unwrap_or("no reason recorded")
                ))),
                _ => Ok(()),
            }
        }
        ImageCommand::List => {
            let images: Vec<ImageView> = client.get("/v1/images")?;
            if json {
                return emit(&images);
            }
            let rows: Vec<Vec<String>> = images
                .iter()
                .map(|image| {
                    vec![
                        image.sha256.clone(),
                        or_dash(image.version.clone()),
                        or_dash(image.hardware_version.map(|hw| format!("0x{hw:08x}"))),
                        image.size.to_string(),
                        image.name.clone(),
                        time(image.imported_at_ms),
                    ]
                })
                .collect();
            print_table(
                &["SHA256", "VERSION", "HARDWARE", "BYTES", "NAME", "IMPORTED"],
                &rows,
                "no images cached (fuotactl image import FILE)",
            );
            Ok(())
        }
        ImageCommand::Show { sha256 } => {
            let image: ImageView = client.get(&format!("/v1/images/{sha256}"))?;
            if json {
                return emit(&image);
            }
            let rows = [
                ("SHA-256", image.sha256.clone()),
                ("kind", image.kind.clone()),
                ("name", image.name.clone()),
                ("version", or_dash(image.version.clone())),
                ("TS006", or_dash(image.ts006_version.clone())),
                (
                    "hardware",
                    or_dash(image.hardware_version.map(|hw| format!("0x{hw:08x}"))),
                ),
                ("bytes", image.size.to_string()),
                ("signed by", image.signer_key_hash.clone()),
                ("imported", time(image.imported_at_ms)),
            ];
            for (label, value) in rows {
                println!("{label:<10} {value}");
            }
            Ok(())
        }
        ImageCommand::Remove { sha256 } => {
            client.request(
                Method::DELETE,
                &format!("/v1/images/{sha256}"),
                RequestBody::Empty,
            )?;
            if json {
                return emit(&serde_json::json!({ "removed": sha256 }));
            }
            println!("removed image {sha256}");
            Ok(())
        }
        ImageCommand::Sign { .. } | ImageCommand::Verify { .. } => Err(Failure::error(
            "image sign and verify run without the agent",
        )),
    }
}

/// Percent-encodes what is not unreserved in a query value.
fn query_escape(text: &str) -> String {
    let mut escaped = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            escaped.push(byte as char);
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

fn campaign(client: &ApiClient, json: bool, command: CampaignCommand) -> Result<(), Failure> {
    let action = |id: i64, action: &str| -> Result<(), Failure> {
        let reference: CampaignRef = client.call(
            Method::POST,
            &format!("/v1/campaigns/{id}/{action}"),
            RequestBody::Empty,
        )?;
        if json {
            return emit(&reference);
        }
        println!("campaign {} is {}", reference.id, name_of(&reference.state));
        Ok(())
    };
    match command {
        CampaignCommand::Create(args) => {
            let start = args.start;
            let spec = campaign_spec(args)?;
            let created: CampaignRef = client.post_json("/v1/campaigns", &spec)?;
            if !start {
                if json {
                    return emit(&created);
                }
                println!(
                    "created campaign {} (start it with: fuotactl campaign start {})",
                    created.id, created.id
                );
                return Ok(());
            }
            if !json {
                println!("created campaign {}", created.id);
            }
            action(created.id, "start")
        }
        CampaignCommand::Start { id } => action(id, "start"),
        CampaignCommand::Pause { id } => action(id, "pause"),
        CampaignCommand::Resume { id } => action(id, "resume"),
        CampaignCommand::Cancel { id } => action(id, "cancel"),
        CampaignCommand::List => {
            let campaigns: Vec<CampaignSummaryView> = client.get("/v1/campaigns")?;
            if json {
                return emit(&campaigns);
            }
            let rows: Vec<Vec<String>> = campaigns
                .iter()
                .map(|campaign| {
                    vec![
                        campaign.id.to_string(),
                        campaign.name.clone(),
                        name_of(&campaign.state),
                        campaign.step.clone(),
                        campaign.target_version.clone(),
                        campaign.delivery.clone(),
                        format!("{}/{}", successful(&campaign.results), campaign.devices),
                        time(campaign.created_at_ms),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID", "NAME", "STATE", "STEP", "VERSION", "DELIVERY", "DONE", "CREATED",
                ],
                &rows,
                "no campaigns (fuotactl campaign create)",
            );
            Ok(())
        }
        CampaignCommand::Show { id } => {
            let campaign: CampaignView = client.get(&format!("/v1/campaigns/{id}"))?;
            if json {
                return emit(&campaign);
            }
            print_campaign(&campaign);
            Ok(())
        }
        CampaignCommand::Watch { id, interval_s } => watch(client, json, id, interval_s),
    }
}

fn campaign_spec(args: CreateArgs) -> Result<CampaignSpec, Failure> {
    let targets = if !args.devices.is_empty() {
        let dev_euis = args
            .devices
            .iter()
            .map(|text| {
                text.parse()
                    .map_err(|error| Failure::error(format!("--device {text:?}: {error}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Targets::Devices { dev_euis }
    } else if let Some(hardware_version) = args.hardware_version {
        Targets::HardwareVersion { hardware_version }
    } else if let Some((key, value)) = args.tag {
        Targets::Tag { key, value }
    } else {
        return Err(Failure::error(
            "say which devices: --device EUI[,EUI...], --hardware-version HW or --tag KEY=VALUE",
        ));
    };
    let delivery = match args.delivery.as_str() {
        "auto" => DeliveryChoice::Auto,
        "multicast" => DeliveryChoice::Multicast,
        "unicast" => DeliveryChoice::Unicast,
        other => {
            return Err(Failure::error(format!(
                "--delivery {other:?}: expected auto, multicast or unicast"
            )))
        }
    };
    Ok(CampaignSpec {
        name: args.name,
        image_sha256: args.image,
        targets,
        delivery,
        overrides: ParameterOverrides {
            data_rate: args.dr,
            fixed_redundancy_percent: args.redundancy,
            expected_loss_percent: args.expected_loss,
            ..ParameterOverrides::default()
        },
    })
}

fn successful(results: &BTreeMap<DeviceStatus, usize>) -> usize {
    results.get(&DeviceStatus::Successful).copied().unwrap_or(0)
}

fn print_campaign(campaign: &CampaignView) {
    let summary = &campaign.summary;
    println!("campaign {}: {}", summary.id, summary.name);
    println!(
        "state     {} (step {})",
        name_of(&summary.state),
        summary.step
    );
    println!(
        "image     {} -> version {}",
        summary.image_sha256, summary.target_version
    );
    println!("delivery  {}", summary.delivery);
    println!(
        "created   {}, last change {}",
        time(summary.created_at_ms),
        ago(summary.updated_at_ms)
    );
    let results: Vec<String> = summary
        .results
        .iter()
        .map(|(status, count)| format!("{count} {}", name_of(status)))
        .collect();
    println!("devices   {} ({})", summary.devices, results.join(", "));
    println!();
    let rows: Vec<Vec<String>> = campaign
        .device_results
        .iter()
        .map(|device| {
            vec![
                device.dev_eui.clone(),
                name_of(&device.status),
                name_of(&device.step),
                device.retries.to_string(),
                or_dash(device.missing),
                device.last_seen_ms.map_or_else(|| "never".into(), ago),
                or_dash(device.last_error.clone()),
            ]
        })
        .collect();
    print_table(
        &[
            "DEV_EUI",
            "STATUS",
            "STEP",
            "RETRIES",
            "MISSING",
            "LAST SEEN",
            "LAST ERROR",
        ],
        &rows,
        "no devices",
    );
}

/// Follows a campaign until it is finished or cancelled: on a terminal, a live display
/// with a bar for the campaign and one per device; otherwise a line per change.
fn watch(client: &ApiClient, json: bool, id: i64, interval_s: u64) -> Result<(), Failure> {
    let live = !json && std::io::stdout().is_terminal();
    let mut last_line = String::new();
    let mut drawn_lines = 0usize;
    loop {
        let campaign: CampaignView = client.get(&format!("/v1/campaigns/{id}"))?;
        let summary = &campaign.summary;
        let ended = matches!(
            summary.state,
            CampaignState::Finished | CampaignState::Cancelled
        );
        if json {
            emit(&campaign)?;
        } else if live {
            let frame = watch_frame(&campaign);
            // Move up over the previous frame and draw over it.
            if drawn_lines > 0 {
                print!("\x1b[{drawn_lines}A");
            }
            for line in &frame {
                println!("\x1b[2K{line}");
            }
            drawn_lines = frame.len();
        } else {
            let line = watch_line(summary);
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        if ended {
            let failed = summary.devices
                - successful(&summary.results)
                - summary
                    .results
                    .get(&DeviceStatus::AlreadyUpToDate)
                    .copied()
                    .unwrap_or(0);
            if summary.state == CampaignState::Cancelled || failed > 0 {
                return Err(Failure::refused(if json {
                    String::new()
                } else {
                    format!(
                        "campaign {id} ended {}: {failed} of {} devices not updated",
                        name_of(&summary.state),
                        summary.devices
                    )
                }));
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(interval_s.max(1)));
    }
}

fn watch_line(summary: &CampaignSummaryView) -> String {
    let results: Vec<String> = summary
        .results
        .iter()
        .map(|(status, count)| format!("{count} {}", name_of(status)))
        .collect();
    format!(
        "campaign {} {} step {}: {}",
        summary.id,
        name_of(&summary.state),
        summary.step,
        results.join(", ")
    )
}

const BAR_WIDTH: usize = 30;

fn bar(done: usize, total: usize) -> String {
    let filled = (done * BAR_WIDTH)
        .checked_div(total)
        .unwrap_or(0)
        .min(BAR_WIDTH);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled))
}

/// The device steps in their order, for the per-device bars.
const STEP_ORDER: [&str; 20] = [
    "discover_firmware",
    "discover_multicast",
    "discover_fragmentation",
    "discover_clock_sync",
    "clock_sync",
    "group_setup",
    "frag_session_setup",
    "ready_for_session",
    "session_setup",
    "receiving",
    "unicast_fragments",
    "status_query",
    "upgrade_check",
    "delete_frag_session",
    "delete_group",
    "schedule_reboot",
    "schedule_reboot_countdown",
    "await_reboot",
    "confirm_version",
    "done",
];

fn watch_frame(campaign: &CampaignView) -> Vec<String> {
    let summary = &campaign.summary;
    let finished = summary
        .results
        .iter()
        .filter(|(status, _)| **status != DeviceStatus::InProgress)
        .map(|(_, count)| count)
        .sum::<usize>();
    let mut lines = vec![
        format!(
            "campaign {} {}  {}  step {}",
            summary.id,
            summary.name,
            name_of(&summary.state),
            summary.step
        ),
        format!(
            "devices  {} {finished}/{} ended, {} successful",
            bar(finished, summary.devices),
            summary.devices,
            successful(&summary.results)
        ),
    ];
    for device in &campaign.device_results {
        let step = name_of(&device.step);
        let position = STEP_ORDER
            .iter()
            .position(|known| *known == step)
            .map_or(0, |index| index + 1);
        lines.push(format!(
            "{}  {} {:<26} {}",
            device.dev_eui,
            bar(position, STEP_ORDER.len()),
            step,
            name_of(&device.status)
        ));
    }
    lines
}

fn events(
    client: &ApiClient,
    json: bool,
    after: Option<i64>,
    limit: usize,
    device: Option<String>,
    follow: bool,
) -> Result<(), Failure> {
    let mut after = after.unwrap_or(0);
    let mut printed_header = false;
    loop {
        let mut path = format!("/v1/events?after={after}&limit={limit}");
        if let Some(device) = &device {
            path.push_str(&format!("&dev_eui={}", query_escape(device)));
        }
        let events: Vec<EventView> = client.get(&path)?;
        if let Some(last) = events.last() {
            after = last.id;
        }
        if json {
            for event in &events {
                emit(event)?;
            }
        } else {
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|event| {
                    vec![
                        event.id.to_string(),
                        time(event.time_ms),
                        event.kind.clone(),
                        or_dash(event.dev_eui.clone()),
                        event.payload.to_string(),
                    ]
                })
                .collect();
            if !rows.is_empty() || !follow {
                if printed_header {
                    for row in &rows {
                        println!("{}", row.join("  "));
                    }
                } else {
                    print_table(
                        &["ID", "TIME", "KIND", "DEV_EUI", "DETAILS"],
                        &rows,
                        "no events",
                    );
                    printed_header = !rows.is_empty();
                }
            }
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
