//! The configuration file: each kind of mistake gives its message with the key and the
//! line; the `configfile`, `check-config` and `run` commands behave on good and bad files.

use std::path::Path;
use std::process::Command;

use fuota_agent::config::{Config, ConfigError, InvalidConfig, TEMPLATE};

fn invalid(source: &str) -> InvalidConfig {
    match Config::parse(source, "agent.toml") {
        Err(ConfigError::Invalid(invalid)) => *invalid,
        other => panic!("expected an invalid configuration, got {other:?}"),
    }
}

#[test]
fn a_syntax_error_gives_its_line() {
    let error = invalid(
        "[storage]\ndatabase = \"/var/lib/x.db\"\n[packet_forwarder\nbind = \"127.0.0.1:1700\"\n",
    );
    assert_eq!(error.line, Some(3), "{error}");
    assert!(error.to_string().starts_with("agent.toml:3:"), "{error}");
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let error =
        invalid("[packet_forwarder]\nbind = \"127.0.0.1:1700\"\nbindd = \"127.0.0.1:1701\"\n");
    assert_eq!(error.line, Some(3));
    assert_eq!(error.column, Some(1));
    assert_eq!(error.key.as_deref(), Some("packet_forwarder.bindd"));
    assert!(error.message.contains("unknown field `bindd`"), "{error}");
    assert!(
        error.message.contains("`bind`"),
        "lists the valid keys: {error}"
    );
}

#[test]
fn an_unknown_section_is_named_with_its_line() {
    let error = invalid("# comment\n[storag]\ndatabase = \"/x.db\"\n");
    assert_eq!(error.line, Some(2));
    assert_eq!(error.key.as_deref(), Some("storag"));
    assert!(error.message.contains("unknown field `storag`"), "{error}");
}

#[test]
fn a_wrong_type_is_named_with_its_line() {
    let error = invalid("[packet_forwarder]\n\ntx_ack_timeout_ms = \"fast\"\n");
    assert_eq!(error.line, Some(3));
    assert_eq!(
        error.key.as_deref(),
        Some("packet_forwarder.tx_ack_timeout_ms")
    );
    assert!(error.message.contains("invalid type"), "{error}");
}

#[test]
fn a_bad_address_is_named_with_its_line() {
    for address in ["localhost:1700", "127.0.0.1", "127.0.0.1:99999"] {
        let error = invalid(&format!("[packet_forwarder]\nbind = \"{address}\"\n"));
        assert_eq!(error.line, Some(2), "{address}: {error}");
        assert_eq!(error.key.as_deref(), Some("packet_forwarder.bind"));
        assert!(
            error.message.contains("expected IP:port"),
            "{address}: {error}"
        );
    }
}

#[test]
fn a_bad_eui_is_named_with_its_position_in_the_list() {
    let error = invalid(
        "[packet_forwarder]\ngateway_euis = [\n  \"0016c001ff10a235\",\n  \"0016c001ff10a2\",\n]\n",
    );
    assert_eq!(error.line, Some(4));
    assert_eq!(error.column, Some(3));
    assert_eq!(
        error.key.as_deref(),
        Some("packet_forwarder.gateway_euis[1]")
    );
    assert!(
        error
            .message
            .contains("expected 16 hexadecimal digits, found 14"),
        "{error}"
    );
    let error = invalid("[packet_forwarder]\ngateway_euis = [\"0016c001ff10a2zz\"]\n");
    assert!(error.message.contains("invalid character 'z'"), "{error}");
}

#[test]
fn a_duplicate_eui_is_an_error() {
    let error = invalid(
        "[packet_forwarder]\ngateway_euis = [\"0016c001ff10a235\", \"00:16:c0:01:ff:10:a2:35\"]\n",
    );
    assert_eq!(error.line, Some(2));
    assert!(error.message.contains("listed twice"), "{error}");
}

#[test]
fn listening_beyond_loopback_requires_an_allow_list() {
    let error = invalid("[packet_forwarder]\nbind = \"0.0.0.0:1700\"\n");
    assert_eq!(error.line, Some(2));
    assert_eq!(error.key.as_deref(), Some("packet_forwarder.bind"));
    assert!(error.message.contains("gateway_euis"), "{error}");

    let config = Config::parse(
        "[packet_forwarder]\nbind = \"0.0.0.0:1700\"\ngateway_euis = [\"0016c001ff10a235\"]\n",
        "agent.toml",
    )
    .unwrap();
    assert_eq!(config.packet_forwarder.gateway_euis.len(), 1);
    assert_eq!(config.packet_forwarder.bind.port(), 1700);
}

#[test]
fn the_api_sections_are_checked() {
    let error = invalid("[api]\nmetrics_listen = \"0.0.0.0:9103\"\n");
    assert_eq!(error.key.as_deref(), Some("api.metrics_listen"));
    assert!(error.message.contains("not a loopback address"), "{error}");
    let error = invalid("[api]\nmetrics_listen = \"localhost\"\n");
    assert!(error.message.contains("expected IP:port"), "{error}");
    let error = invalid("[api]\ngroup = \"no spaces\"\n");
    assert_eq!(error.key.as_deref(), Some("api.group"));
    let error = invalid("[api]\nsocket = \"api.sock\"\n");
    assert!(error.message.contains("relative path"), "{error}");
    let error = invalid("[firmware]\ntrusted_keys = [\"/k.pem\", \"/k.pem\"]\n");
    assert!(error.message.contains("listed twice"), "{error}");
    let config = Config::parse(
        "[api]\nmetrics_listen = \"[::1]:9103\"\ngroup = \"\"\n[firmware]\ntrusted_keys = [\"/etc/k.pem\"]\n",
        "agent.toml",
    )
    .unwrap();
    assert_eq!(config.api.metrics_listen.map(|a| a.port()), Some(9103));
    assert_eq!(config.api.group, "");
    assert_eq!(config.firmware.trusted_keys.len(), 1);
}

#[test]
fn out_of_range_and_relative_values_are_errors() {
    let error = invalid("[packet_forwarder]\ntx_ack_timeout_ms = 0\n");
    assert!(error.message.contains("out of range"), "{error}");
    let error = invalid("[storage]\ndatabase = \"agent.db\"\n");
    assert_eq!(error.key.as_deref(), Some("storage.database"));
    assert!(error.message.contains("absolute path"), "{error}");
    let error = invalid("[logging]\nlevel = \"loud\"\n");
    assert_eq!(error.key.as_deref(), Some("logging.level"));
    assert!(error.message.contains("invalid log level"), "{error}");
}

#[test]
fn the_message_quotes_the_line_and_points_at_the_column() {
    let error = invalid("[packet_forwarder]\nbind = \"nope\"\n");
    let text = error.to_string();
    assert!(
        text.starts_with("agent.toml:2:8: key `packet_forwarder.bind`: invalid address"),
        "{text}"
    );
    assert!(
        text.contains("\n 2 | bind = \"nope\"\n   |        ^"),
        "{text}"
    );
}

#[test]
fn valid_settings_are_read() {
    let config = Config::parse(
        "[storage]\ndatabase = \"/tmp/agent.db\"\n[packet_forwarder]\nbind = \"[::1]:1800\"\n\
         tx_ack_timeout_ms = 500\n[logging]\nlevel = \"info,fuota_agent=debug\"\n",
        "agent.toml",
    )
    .unwrap();
    assert_eq!(config.storage.database, Path::new("/tmp/agent.db"));
    assert_eq!(config.packet_forwarder.bind.to_string(), "[::1]:1800");
    assert_eq!(
        config.packet_forwarder.tx_ack_timeout,
        std::time::Duration::from_millis(500)
    );
    assert_eq!(config.logging.level, "info,fuota_agent=debug");
}

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fuota-agent"))
}

#[test]
fn configfile_prints_the_template() {
    let output = agent().arg("configfile").output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), TEMPLATE);
}

#[test]
fn check_config_accepts_the_template_and_rejects_mistakes() {
    let directory = tempfile::tempdir().unwrap();
    let good = directory.path().join("good.toml");
    std::fs::write(&good, TEMPLATE).unwrap();
    let output = agent()
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    let bad = directory.path().join("bad.toml");
    std::fs::write(&bad, "[packet_forwarder]\ngateway_euis = [\"123\"]\n").unwrap();
    let output = agent()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "{}:2:17: key `packet_forwarder.gateway_euis[0]`",
            bad.display()
        )),
        "{stderr}"
    );

    let missing = directory.path().join("missing.toml");
    let output = agent()
        .args(["check-config", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("cannot read configuration file"));
}

#[test]
fn run_refuses_to_start_on_a_bad_configuration() {
    let directory = tempfile::tempdir().unwrap();
    let bad = directory.path().join("bad.toml");
    std::fs::write(&bad, "[storage]\ndatabse = \"/tmp/x.db\"\n").unwrap();
    let output = agent()
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("key `storage.databse`: unknown field `databse`"));
}

#[test]
fn version_is_printed() {
    let output = agent().arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        format!("fuota-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_wrong_type_inside_a_list_points_at_the_element() {
    let error =
        invalid("[packet_forwarder]\ngateway_euis = [\n  \"0016c001ff10a235\",\n  42,\n]\n");
    assert_eq!(error.line, Some(4), "{error}");
    assert!(error.message.contains("invalid type"), "{error}");
}

#[test]
fn mqtt_mistakes_are_named_with_their_key_and_line() {
    let cases: [(&str, &str, &str); 9] = [
        (
            "broker = \"mqtt://b\"\nprotocol = \"4\"",
            "mqtt.protocol",
            "\"3.1.1\" or \"5\"",
        ),
        (
            "broker = \"broker.example.com:1883\"",
            "mqtt.broker",
            "expected mqtt://host:port",
        ),
        ("broker = \"mqtt://broker:0\"", "mqtt.broker", "bad port"),
        (
            "broker = \"mqtt://b\"\ngateway_id = \"site/17\"",
            "mqtt.gateway_id",
            "cannot contain '/'",
        ),
        (
            "broker = \"mqtt://b\"\ntopic_prefix = \"fuota/#\"",
            "mqtt.topic_prefix",
            "wildcards",
        ),
        (
            "broker = \"mqtt://b\"\ntopic_prefix = \"fuota/{site}\"",
            "mqtt.topic_prefix",
            "only placeholder",
        ),
        (
            "broker = \"mqtt://b\"\nca_file = \"/etc/ca.pem\"",
            "mqtt.broker",
            "use mqtts://",
        ),
        (
            "broker = \"mqtts://b\"\nclient_cert_file = \"/etc/c.pem\"",
            "mqtt.client_cert_file",
            "without client_key_file",
        ),
        (
            "broker = \"mqtt://b\"\nreconnect_min_s = 60\nreconnect_max_s = 10",
            "mqtt.reconnect_max_s",
            "below reconnect_min_s",
        ),
    ];
    for (body, key, message) in cases {
        let error = invalid(&format!("[mqtt]\n{body}\n"));
        assert_eq!(error.key.as_deref(), Some(key), "{body}: {error}");
        assert!(error.message.contains(message), "{body}: {error}");
        assert!(error.line.is_some(), "{body}: {error}");
    }
    // A mistake is caught even while no broker is set.
    let error = invalid("[mqtt]\nkeep_alive_s = 1\n");
    assert_eq!(error.key.as_deref(), Some("mqtt.keep_alive_s"));
    assert!(error.message.contains("5 to 3600"), "{error}");
    // No broker: upstream sync is off.
    assert_eq!(Config::parse("[mqtt]\n", "agent.toml").unwrap().mqtt, None);
    let on = Config::parse(
        "[mqtt]\nbroker = \"mqtts://broker.example.com\"\ngateway_id = \"gw-17\"\n",
        "agent.toml",
    )
    .unwrap()
    .mqtt
    .unwrap();
    assert_eq!(on.topic_prefix, "fuota/gw-17");
    assert_eq!(on.client_id, "fuota-agent-gw-17");
    assert_eq!(on.broker.port, 8883);
    assert_eq!(on.outbox_quota_bytes, 256 * 1024 * 1024);
}
