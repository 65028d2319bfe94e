//! Settings (contract §6): a TOML file, then `H5PAY__SECTION__KEY`
//! environment overrides ([`env`]), then validation ([`validate`], no I/O),
//! then the institutions' keys ([`keys`], the I/O). Every problem is
//! reported as one line naming the key in dotted form, and never with a
//! secret's value.
//!
//! * [`settings`]: one struct per section, with its defaults.
//! * [`env`]: the file plus the environment overlay, deserialised.
//! * [`validate`]: the rules.
//! * [`secret_url`]: URLs whose passwords never reach a log.

mod env;
pub mod keys;
mod secret_url;
mod settings;
mod validate;

use std::path::{Path, PathBuf};

pub use env::{env_key_exists, parse};
pub use secret_url::SecretUrl;
pub use settings::*;

use crate::keys::Institutions;

/// The built-in local defaults, used when no file is named and
/// `config/default.toml` is not in the working directory.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
pub const DEFAULT_PATH: &str = "config/default.toml";

/// A bad configuration: the key in dotted form and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where the settings came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    BuiltIn,
}

/// Settings with their keys resolved: what the process runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub institutions: Institutions,
    pub source: Source,
}

impl Config {
    /// Loads from `path` (or `config/default.toml`, or the built-in
    /// defaults when that file is absent) and the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_keys(path, KeySources::Any)
    }

    /// Like [`Config::load`], for the sandbox gateway (contract §8): it takes
    /// institution keys only inline from its own config, so an institution
    /// with `key_env` or `key_file` is refused before that key is read.
    pub fn load_inline_keys(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_keys(path, KeySources::InlineOnly)
    }

    fn load_keys(path: Option<&Path>, keys: KeySources) -> Result<Config, ConfigError> {
        let (text, source) = match path {
            Some(p) => (read_file(p)?, Source::File(p.to_owned())),
            None if Path::new(DEFAULT_PATH).exists() => (
                read_file(Path::new(DEFAULT_PATH))?,
                Source::File(DEFAULT_PATH.into()),
            ),
            None => (DEFAULT_TOML.to_owned(), Source::BuiltIn),
        };
        Self::from_parts_with(&text, std::env::vars(), source, keys)
    }

    /// Loads from TOML text and an explicit environment.
    pub fn from_parts(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        source: Source,
    ) -> Result<Config, ConfigError> {
        Self::from_parts_with(toml_text, env, source, KeySources::Any)
    }

    /// [`Config::from_parts`] with the key sources the process accepts.
    pub fn from_parts_with(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        source: Source,
        keys: KeySources,
    ) -> Result<Config, ConfigError> {
        let settings = parse(toml_text, env)?;
        settings.validate()?;
        if keys == KeySources::InlineOnly {
            inline_keys_only(&settings)?;
        }
        let env_lookup = |name: &str| std::env::var(name).ok();
        let institutions = keys::resolve(&settings, &env_lookup)?;
        Ok(Config {
            settings,
            institutions,
            source,
        })
    }
}

/// Where institution keys may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySources {
    /// `key`, `key_env` or `key_file` (the worker, the receiver, the tools).
    Any,
    /// `key` only: the sandbox gateway, a test tool that must never be
    /// pointed at production keys (contract §8).
    InlineOnly,
}

/// Refuses the first institution whose key is not inline, naming its
/// dotted key (never reading the variable or the file).
fn inline_keys_only(settings: &Settings) -> Result<(), ConfigError> {
    for (i, inst) in settings.institutions.iter().enumerate() {
        let source = match (&inst.key_env, &inst.key_file) {
            (Some(var), _) => Some(("key_env", format!("environment variable {var}"))),
            (None, Some(path)) => Some(("key_file", format!("file {}", path.display()))),
            (None, None) => None,
        };
        if let Some((field, what)) = source {
            return Err(ConfigError::new(
                format!("institutions[{i}].{field}"),
                format!(
                    "the sandbox takes institution keys only inline (key = \"...\"), \
                     never from the {what} (institution {}): it is a test tool and \
                     must not hold production keys",
                    inst.inst_no
                ),
            ));
        }
    }
    Ok(())
}

fn read_file(p: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(p)
        .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", p.display())))
}

#[cfg(test)]
mod tests;
