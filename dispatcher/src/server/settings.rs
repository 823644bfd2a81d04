//! The configuration, parsed once into what the server runs on: the file's sections
//! validated, and what they describe built — the routing plan, the number rules,
//! the purposes with their code lengths, the engine's options. Whatever cannot be
//! built is a [`ConfigError`] naming the key, before anything is bound or started;
//! nothing downstream checks again.

use std::path::Path;

use crate::config::{Config, ConfigError, PushAck};
use crate::delivery::router::Plan;
use crate::domain::name::Name;
use crate::domain::verification::Policy;
use crate::engine::{Options, Purpose};
use crate::numbers::reader::NumberRules;
use crate::secrets::code::CodeLength;

/// What a server starts from.
pub struct Settings {
    /// The sections as read (and validated).
    pub config: Config,
    /// Routes, templates and carriers' thresholds.
    pub plan: Plan,
    /// How numbers are read.
    pub numbers: NumberRules,
    pub purposes: Vec<Purpose>,
    pub options: Options,
}

impl Settings {
    /// Read `file` (if any) and `OTPD_*` variables from `env`, and parse them.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        Settings::new(Config::read(file, env)?)
    }

    pub fn new(config: Config) -> Result<Settings, ConfigError> {
        config.validate()?;
        let plan = Plan::build(&config)?;
        plan.check_carriers(&config)?;
        let n = &config.numbers;
        let numbers = NumberRules::new(&n.default_region, n.mobile_only)
            .map_err(|e| {
                ConfigError::invalid("numbers.default_region", &n.default_region, e.to_string())
            })?
            .allow_non_geographic(n.allow_non_geographic);
        let purposes = config
            .purposes
            .iter()
            .map(|(name, p)| {
                let code_length = CodeLength::new(p.code_length).ok_or_else(|| {
                    ConfigError::invalid(
                        format!("purposes.{name}.code_length"),
                        p.code_length,
                        "out of range",
                    )
                })?;
                Ok(Purpose {
                    name: Name::new(name.as_str()),
                    policy: Policy {
                        ttl: p.ttl,
                        code_length,
                        max_attempts: p.max_attempts,
                        max_sends: p.max_sends,
                        resend_cooldown: p.resend_cooldown,
                        escalate_after: p.escalate_after,
                    },
                    provider_ack: p.push_ack == PushAck::Provider,
                    app_ttl: p.app_ttl,
                    require_contrast: p.require_contrast,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let options = Options::new(&config);
        Ok(Settings {
            config,
            plan,
            numbers,
            purposes,
            options,
        })
    }
}

impl Settings {
    /// Send every number to `carrier` by default: for a server given its channels
    /// ([`super::Deps::channels`]) rather than building them from the configuration,
    /// whose carriers the configuration cannot name.
    pub fn route_to(mut self, carrier: &str) -> Result<Settings, ConfigError> {
        self.config.routing.default = vec![crate::config::RouteCarrier::Name(carrier.into())];
        self.plan = Plan::build(&self.config)?;
        Ok(self)
    }
}

impl TryFrom<Config> for Settings {
    type Error = ConfigError;

    fn try_from(config: Config) -> Result<Settings, ConfigError> {
        Settings::new(config)
    }
}
