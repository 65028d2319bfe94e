//! Institution keys: resolved once from their sources (the settings file,
//! an environment variable, a key file) and held in a [`KeyRing`] that
//! SIGHUP swaps, so keys rotate without a restart.

use std::collections::HashMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, Settings};

/// Institution keys, resolved from their sources. The first configured
/// institution is the default for intents without `inst_no`.
#[derive(Clone)]
pub struct Institutions {
    keys: HashMap<String, SecretString>,
    default: String,
}

impl fmt::Debug for Institutions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.keys.keys().collect();
        names.sort();
        f.debug_struct("Institutions")
            .field("inst_nos", &names)
            .field("default", &self.default)
            .finish()
    }
}

impl Institutions {
    pub fn key(&self, inst_no: &str) -> Option<&SecretString> {
        self.keys.get(inst_no)
    }

    pub fn contains(&self, inst_no: &str) -> bool {
        self.keys.contains_key(inst_no)
    }

    pub fn default_inst_no(&self) -> &str {
        &self.default
    }

    /// The configured inst_nos, sorted (for logs: never the keys).
    pub fn inst_nos(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Builds a set directly, the first pair being the default (tests, tools).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, SecretString)>) -> Option<Self> {
        let mut default = None;
        let mut keys = HashMap::new();
        for (inst, key) in pairs {
            default.get_or_insert_with(|| inst.clone());
            keys.insert(inst, key);
        }
        default.map(|default| Institutions { keys, default })
    }

    /// The same set with another default, which must be one of them.
    pub fn with_default(mut self, inst_no: &str) -> Option<Self> {
        self.contains(inst_no).then(|| {
            self.default = inst_no.to_owned();
            self
        })
    }

    /// How many institutions are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The institution keys in use, replaceable while running: SIGHUP reloads
/// them (key rotation) without a restart. Readers take a snapshot per
/// intent, so an intent signs and verifies with one key throughout.
#[derive(Debug)]
pub struct KeyRing(std::sync::RwLock<std::sync::Arc<Institutions>>);

impl KeyRing {
    pub fn new(institutions: Institutions) -> Self {
        KeyRing(std::sync::RwLock::new(std::sync::Arc::new(institutions)))
    }

    pub fn current(&self) -> std::sync::Arc<Institutions> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, institutions: Institutions) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(institutions);
    }
}

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
