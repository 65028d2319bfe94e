//! Institution keys, once resolved from their sources
//! ([`crate::config::keys::resolve`]), held in a [`KeyRing`] that SIGHUP
//! swaps, so keys rotate without a restart. Imports nothing of the crate.

use std::collections::HashMap;
use std::fmt;

use secrecy::SecretString;

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
