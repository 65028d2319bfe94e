//! Institution keys from their sources (the settings file, an environment
//! variable, a key file): the I/O step of loading settings.

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, Settings};
use crate::keys::Institutions;

/// Reads every institution's key from its source (the file, an environment
/// variable through `env`, or a key file): the I/O step, after
/// [`Settings::validate`].
pub fn resolve(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Institutions, ConfigError> {
    let mut pairs = Vec::new();
    for (i, inst) in settings.institutions.iter().enumerate() {
        let at = |k: &str| format!("institutions[{i}].{k}");
        let (which, secret) = if let Some(k) = &inst.key {
            ("key", k.expose_secret().to_owned())
        } else if let Some(var) = &inst.key_env {
            let value = env(var).ok_or_else(|| {
                ConfigError::new(
                    at("key_env"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            ("key_env", value)
        } else if let Some(path) = &inst.key_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    at("key_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            ("key_file", text.trim_end().to_owned())
        } else {
            return Err(ConfigError::new(
                at("key"),
                "missing: set key, key_env or key_file",
            ));
        };
        if secret.trim().is_empty() {
            return Err(ConfigError::new(at(which), "the key is empty"));
        }
        pairs.push((inst.inst_no.clone(), SecretString::from(secret)));
    }
    let default = match settings.worker.default_inst_no.as_str() {
        "" => pairs.first().map(|(n, _)| n.clone()).unwrap_or_default(),
        named => named.to_owned(),
    };
    Institutions::from_pairs(pairs)
        .and_then(|set| set.with_default(&default))
        .ok_or_else(|| ConfigError::new("worker.default_inst_no", "not a configured institution"))
}
