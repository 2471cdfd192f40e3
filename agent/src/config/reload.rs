//! What a configuration reload (SIGHUP) changes in a running agent: the log level and
//! the trusted keys take effect at once; every other change waits for a restart and is
//! named as such, so an operator is never left guessing whether an edit is live.

use std::path::PathBuf;

use super::Config;

/// The difference between the running configuration and a reloaded one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadPlan {
    /// The new `[logging] level`, if it changed.
    pub log_level: Option<String>,
    /// The new `[firmware] trusted_keys`, if they changed.
    pub trusted_keys: Option<Vec<PathBuf>>,
    /// Sections and keys that changed but only take effect at the next restart.
    pub needs_restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// Compares the `running` configuration with the `reloaded` one.
    pub fn between(running: &Config, reloaded: &Config) -> ReloadPlan {
        let mut plan = ReloadPlan::default();
        if running.logging.level != reloaded.logging.level {
            plan.log_level = Some(reloaded.logging.level.clone());
        }
        if running.firmware.trusted_keys != reloaded.firmware.trusted_keys {
            plan.trusted_keys = Some(reloaded.firmware.trusted_keys.clone());
        }
        let restart_only = [
            ("[storage]", running.storage != reloaded.storage),
            (
                "[packet_forwarder]",
                running.packet_forwarder != reloaded.packet_forwarder,
            ),
            ("[lorawan]", running.lorawan != reloaded.lorawan),
            ("[[upstream]]", running.upstreams != reloaded.upstreams),
            (
                "[firmware] cache_directory",
                running.firmware.cache_directory != reloaded.firmware.cache_directory,
            ),
            ("[api]", running.api != reloaded.api),
            (
                "[firmware] download_ca_file",
                running.firmware.download_ca_file != reloaded.firmware.download_ca_file,
            ),
            ("[mqtt]", running.mqtt != reloaded.mqtt),
        ];
        plan.needs_restart = restart_only
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(name, _)| name)
            .collect();
        plan
    }

    /// The running configuration after applying what can be applied: `running` with
    /// the reloaded log level and trusted keys.
    pub fn applied_to(&self, running: &Config) -> Config {
        let mut applied = running.clone();
        if let Some(level) = &self.log_level {
            applied.logging.level.clone_from(level);
        }
        if let Some(keys) = &self.trusted_keys {
            applied.firmware.trusted_keys.clone_from(keys);
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_and_keys_apply_at_once_and_the_rest_waits_for_a_restart() {
        let running = Config::default();
        assert_eq!(
            ReloadPlan::between(&running, &running),
            ReloadPlan::default()
        );

        let mut reloaded = running.clone();
        reloaded.logging.level = "debug".into();
        reloaded.firmware.trusted_keys = vec![PathBuf::from("/etc/fuota-agent/keys/a.pem")];
        reloaded.packet_forwarder.tx_ack_timeout = std::time::Duration::from_millis(500);
        reloaded.api.group = "technicians".into();
        let plan = ReloadPlan::between(&running, &reloaded);
        assert_eq!(plan.log_level.as_deref(), Some("debug"));
        assert_eq!(plan.trusted_keys.as_ref().map(Vec::len), Some(1));
        assert_eq!(plan.needs_restart, vec!["[packet_forwarder]", "[api]"]);

        // What runs afterwards: the new level and keys, the old socket settings.
        let applied = plan.applied_to(&running);
        assert_eq!(applied.logging.level, "debug");
        assert_eq!(
            applied.firmware.trusted_keys,
            reloaded.firmware.trusted_keys
        );
        assert_eq!(applied.api, running.api);
        assert_eq!(applied.packet_forwarder, running.packet_forwarder);
    }
}
