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
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::time::Duration;

    const MIN: &str = "[[institutions]]\ninst_no = \"60000001\"\nkey = \"k-secret-1\"\n";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_parts(
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            Source::BuiltIn,
        )
    }

    fn error_of(text: &str, env: &[(&str, &str)]) -> ConfigError {
        match load(text, env) {
            Err(e) => e,
            Ok(c) => panic!("accepted: {:?}", c.settings),
        }
    }

    #[test]
    fn the_shipped_default_loads_with_every_contract_default() {
        let c = load(DEFAULT_TOML, &[]).expect("settings load");
        let s = &c.settings;
        assert_eq!(s.amqp.url.expose(), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(s.amqp.queue_type, QueueType::Quorum);
        assert_eq!((s.amqp.delivery_limit, s.amqp.prefetch), (5, 256));
        assert_eq!(s.redis.key_prefix, "h5pay:intent");
        assert_eq!(
            (s.redis.lease_ms, s.redis.retention_secs),
            (30_000, 604_800)
        );
        assert_eq!(s.gateway.url, "http://127.0.0.1:8090/api/openpay/v3/h5pay");
        assert_eq!(s.retry.max_attempts, 6);
        assert_eq!(s.worker.duplicates, DuplicatePolicy::Republish);
        assert_eq!(s.admin.listen, "127.0.0.1:9464");
        assert_eq!(c.institutions.default_inst_no(), "60000001");
        assert!(c.institutions.key("60000001").is_some());
    }

    #[test]
    fn a_file_may_name_only_what_it_changes() {
        let c = load(&format!("[amqp]\nprefetch = 10\n{MIN}"), &[]).expect("settings load");
        assert_eq!(c.settings.amqp.prefetch, 10);
        assert_eq!(c.settings.amqp.intent_queue, "h5pay.intents");
        assert_eq!(c.settings.retry.max_elapsed_ms, 60_000);
    }

    #[test]
    fn environment_overrides_are_typed_like_the_defaults() {
        let c = load(
            MIN,
            &[
                ("H5PAY__AMQP__PREFETCH", "512"),
                ("H5PAY__AMQP__URL", "amqps://u:p@mq.example:5671/prod"),
                ("H5PAY__GATEWAY__VERIFY_RESPONSE_SIGN", "false"),
                ("H5PAY__RETRY__MULTIPLIER", "1.5"),
                ("H5PAY__WORKER__DEFAULT_MCH_NO", "12345"),
                ("H5PAY__INSTITUTIONS__1__INST_NO", "60000002"),
                (
                    "H5PAY__INSTITUTIONS__1__KEY_ENV",
                    "TEST_KEY_VAR_THAT_IS_SET",
                ),
                ("H5PAY__WORKER__DEFAULT_INST_NO", "60000001"),
                ("UNRELATED", "x"),
            ],
        );
        // key_env resolves from the process environment: not set here.
        let e = c.err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.key, "institutions[1].key_env");
        let c = load(
            MIN,
            &[
                ("H5PAY__AMQP__PREFETCH", "512"),
                ("H5PAY__GATEWAY__VERIFY_RESPONSE_SIGN", "false"),
                ("H5PAY__RETRY__MULTIPLIER", "1.5"),
                ("H5PAY__WORKER__DEFAULT_MCH_NO", "12345"),
            ],
        )
        .expect("settings load");
        assert_eq!(c.settings.amqp.prefetch, 512);
        assert!(!c.settings.gateway.verify_response_sign);
        assert_eq!(c.settings.retry.multiplier, 1.5);
        assert_eq!(c.settings.worker.default_mch_no, "12345");
    }

    #[test]
    fn bad_config_names_the_key_in_dotted_form() {
        type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                format!("[amqp]\nurl = \"http://x\"\n{MIN}"),
                vec![],
                "amqp.url",
            ),
            (
                format!("[amqp]\nurl = \"not a url\"\n{MIN}"),
                vec![],
                "amqp.url",
            ),
            (
                format!("[amqp]\nprefetch = 0\n{MIN}"),
                vec![],
                "amqp.prefetch",
            ),
            (
                format!("[amqp]\nprefetch = 70000\n{MIN}"),
                vec![],
                "amqp.prefetch",
            ),
            (
                format!("[amqp]\nqueue_type = \"stream\"\n{MIN}"),
                vec![],
                "amqp.queue_type",
            ),
            (format!("[amqp]\nbogus = 1\n{MIN}"), vec![], "amqp.bogus"),
            (
                format!("[otel]\nendpoint = \"grpc://collector:4317\"\n{MIN}"),
                vec![],
                "otel.endpoint",
            ),
            (
                format!("[otel]\nsample_ratio = 1.5\n{MIN}"),
                vec![],
                "otel.sample_ratio",
            ),
            (
                MIN.to_string(),
                vec![("H5PAY__OTEL__SAMPLE_RATIO", "-0.1")],
                "otel.sample_ratio",
            ),
            (
                format!("[otel]\nservice_name = \"\"\n{MIN}"),
                vec![],
                "otel.service_name",
            ),
            (format!("[nope]\nx = 1\n{MIN}"), vec![], "nope"),
            (
                format!("[redis]\nurl = \"mysql://x\"\n{MIN}"),
                vec![],
                "redis.url",
            ),
            (
                format!("[redis]\nlease_ms = \"long\"\n{MIN}"),
                vec![],
                "redis.lease_ms",
            ),
            (
                format!("[gateway]\nurl = \"ftp://x/y\"\n{MIN}"),
                vec![],
                "gateway.url",
            ),
            (
                format!("[retry]\nmultiplier = 0.5\n{MIN}"),
                vec![],
                "retry.multiplier",
            ),
            (
                format!("[retry]\nmax_attempts = 0\n{MIN}"),
                vec![],
                "retry.max_attempts",
            ),
            (
                format!("[worker]\ntimezone_offset = \"CST\"\n{MIN}"),
                vec![],
                "worker.timezone_offset",
            ),
            (
                format!("[worker]\nduplicates = \"ignore\"\n{MIN}"),
                vec![],
                "worker.duplicates",
            ),
            (
                format!("[admin]\nlisten = \"nowhere\"\n{MIN}"),
                vec![],
                "admin.listen",
            ),
            (
                format!("[log]\nformat = \"xml\"\n{MIN}"),
                vec![],
                "log.format",
            ),
            ("".to_owned(), vec![], "institutions"),
            (
                "[[institutions]]\ninst_no = \"60000001\"\n".to_owned(),
                vec![],
                "institutions[0].key",
            ),
            (
                "[[institutions]]\ninst_no = \"6 1\"\nkey = \"k\"\n".to_owned(),
                vec![],
                "institutions[0].inst_no",
            ),
            (
                format!("{MIN}key_env = \"X\"\n"),
                vec![],
                "institutions[0].key",
            ),
            (
                format!("{MIN}[[institutions]]\ninst_no = \"60000001\"\nkey = \"k2\"\n"),
                vec![],
                "institutions[1].inst_no",
            ),
            (
                "[[institutions]]\ninst_no = \"1\"\nkey_file = \"/nonexistent/key\"\n".to_owned(),
                vec![],
                "institutions[0].key_file",
            ),
            (
                MIN.to_owned(),
                vec![("H5PAY__AMQP__PREFECH", "1")],
                "amqp.prefech",
            ),
            (
                MIN.to_owned(),
                vec![("H5PAY__AMQP__PREFETCH", "many")],
                "amqp.prefetch",
            ),
            (
                MIN.to_owned(),
                vec![("H5PAY__INSTITUTIONS__5__KEY", "x")],
                "institutions[5].key",
            ),
            ("[amqp\nurl=1".to_owned(), vec![], "config"),
            (
                format!("{MIN}[[institutions]]\ninst_no = \"60000002\"\nkey = \"k2\"\n"),
                vec![],
                "worker.default_inst_no",
            ),
            (
                format!("[worker]\ndefault_inst_no = \"99\"\n{MIN}"),
                vec![],
                "worker.default_inst_no",
            ),
            (
                format!("[redis]\nlease_ms = 4999\n{MIN}"),
                vec![],
                "redis.lease_ms",
            ),
            (
                format!("[redis]\nretention_secs = 3599\n{MIN}"),
                vec![],
                "redis.retention_secs",
            ),
            (
                format!("[redis]\nretention_secs = 7200\n[retry]\nmax_elapsed_ms = 3600000\n{MIN}"),
                vec![],
                "redis.retention_secs",
            ),
            (
                format!("[amqp]\npublish_retry_ms = 0\n{MIN}"),
                vec![],
                "amqp.publish_retry_ms",
            ),
            (
                format!("[amqp]\nurls = [\"amqp://a/%2f\", \"http://b/\"]\n{MIN}"),
                vec![],
                "amqp.urls[1]",
            ),
            (
                format!("[amqp]\nurls = [\"amqp://\"]\n{MIN}"),
                vec![],
                "amqp.urls[0]",
            ),
            (
                MIN.to_owned(),
                vec![("H5PAY__AMQP__URLS", "amqp://a/%2f,amqp://b/%2f,nope")],
                "amqp.urls[2]",
            ),
            (
                format!("[amqp]\nurls = \"amqp://a/%2f\"\n{MIN}"),
                vec![],
                "amqp.urls",
            ),
            (
                format!("[redis]\ncluster = true\nurls = [\"mysql://x\"]\n{MIN}"),
                vec![],
                "redis.urls[0]",
            ),
            (
                format!("[redis]\nurls = [\"redis://r-1:6379\"]\n{MIN}"),
                vec![],
                "redis.urls",
            ),
            (
                format!("[redis]\nwait_replicas = 17\n{MIN}"),
                vec![],
                "redis.wait_replicas",
            ),
            (
                format!("[redis]\ncluster = true\nkey_prefix = \"{{h5pay}}:intent\"\n{MIN}"),
                vec![],
                "redis.key_prefix",
            ),
            (
                format!("[redis]\nwait_replicas = -1\n{MIN}"),
                vec![],
                "redis.wait_replicas",
            ),
            (
                format!("[gateway]\nquery_url = \"ftp://x/y\"\n{MIN}"),
                vec![],
                "gateway.query_url",
            ),
            (
                format!("[gateway]\nclose_url = \"closeorder\"\n{MIN}"),
                vec![],
                "gateway.close_url",
            ),
            (
                format!("[reconcile]\nconcurrency = 0\n{MIN}"),
                vec![],
                "reconcile.concurrency",
            ),
            (
                format!("[reconcile]\nconcurrency = 65536\n{MIN}"),
                vec![],
                "reconcile.concurrency",
            ),
            (
                MIN.to_owned(),
                vec![("H5PAY__RECONCILE__SCHEDULE_SHARDS", "0")],
                "reconcile.schedule_shards",
            ),
        ];
        for (text, env, key) in cases {
            let e = error_of(&text, &env);
            assert_eq!(e.key, key, "{text:?} {env:?} -> {e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_a_key() {
        let secret = "k-secret-1";
        let texts = [
            "[[institutions]]\ninst_no = \"60000001\"\nkey = 12345\n".to_owned(),
            format!("[[institutions]]\ninst_no = \"60000001\"\nkey = \"{secret}\n"),
            format!("[[institutions]]\ninst_no = \"6 0\"\nkey = \"{secret}\"\n"),
            format!(
                "[[institutions]]\ninst_no = \"60000001\"\nkey = \"{secret}\"\nkey_env = \"A\"\n"
            ),
        ];
        for t in &texts {
            let e = error_of(t, &[]);
            assert!(
                !e.to_string().contains(secret) && !e.to_string().contains("12345"),
                "{e}"
            );
        }
        let c = load(MIN, &[]).expect("settings load");
        let debug = format!("{c:?}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(!debug.contains("guest:guest"), "password in {debug}");
        // A URL list's password stays out of its errors too.
        for (text, env) in [
            (
                format!("[amqp]\nurls = \"amqp://u:{secret}@a/%2f\"\n{MIN}"),
                vec![],
            ),
            (
                format!(
                    "[redis]\ncluster = true\nurls = [\"redis://u:{secret}@a:6379\", 7]\n{MIN}"
                ),
                vec![],
            ),
            (
                format!(
                    "[amqp]\nurls = [\"amqp://u:{secret}@a/%2f\", \"http://u:{secret}@b/\"]\n{MIN}"
                ),
                vec![],
            ),
            (
                MIN.to_owned(),
                vec![(
                    "H5PAY__AMQP__URLS",
                    format!("amqp://u:{secret}@a/%2f,amqp://u:{secret}@b:x/"),
                )],
            ),
            (
                format!(
                    "[redis]\ncluster = true\nurls = [\"redis://u:{secret}@a:6379\", \"https://u:{secret}@b/\"]\n{MIN}"
                ),
                vec![],
            ),
        ] {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let e = error_of(&text, &env);
            assert!(e.key.contains(".urls"), "{e}");
            assert!(!e.to_string().contains(secret), "{e}");
        }
    }

    #[test]
    fn an_environment_key_source_replaces_the_files() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("k");
        std::fs::write(&path, "from-file\n").expect("file written");
        let c = load(
            DEFAULT_TOML,
            &[(
                "H5PAY__INSTITUTIONS__0__KEY_FILE",
                &path.display().to_string(),
            )],
        )
        .expect("display");
        let key = c
            .institutions
            .key("60000001")
            .map(|k| k.expose_secret().to_owned());
        assert_eq!(key.as_deref(), Some("from-file"));
    }

    #[test]
    fn inline_only_refuses_key_env_and_key_file_before_reading_them() {
        let inline = |text: &str| {
            Config::from_parts_with(text, Vec::new(), Source::BuiltIn, KeySources::InlineOnly)
        };
        assert!(inline(MIN).is_ok());
        let e = inline("[[institutions]]\ninst_no = \"1\"\nkey_env = \"H5PAY_UNSET_VAR_X\"\n")
            .err()
            .map(|e| e.key);
        assert_eq!(e.as_deref(), Some("institutions[0].key_env"));
        let e = inline(&format!(
            "{MIN}[[institutions]]\ninst_no = \"2\"\nkey_file = \"/nonexistent/k\"\n\
             [worker]\ndefault_inst_no = \"60000001\"\n"
        ))
        .err();
        let e = e.expect("refused");
        assert_eq!(e.key, "institutions[1].key_file");
        assert!(e.message.contains("/nonexistent/k"), "{e}");
        assert!(!e.message.contains("cannot read"), "never read: {e}");
    }

    #[test]
    fn key_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("key");
        std::fs::write(&path, "file-key\n").expect("file written");
        let text = format!(
            "[[institutions]]\ninst_no = \"9\"\nkey_file = {:?}\n",
            path.display().to_string()
        );
        let c = load(&text, &[]).expect("settings load");
        let key = c
            .institutions
            .key("9")
            .map(|k| k.expose_secret().to_owned());
        assert_eq!(key.as_deref(), Some("file-key"));
    }

    #[test]
    fn the_default_institution_is_named_once_there_are_two_and_never_by_order() {
        let two = |first: &str, second: &str| {
            format!(
                "[worker]\ndefault_inst_no = \"60000002\"\n\
                 [[institutions]]\ninst_no = \"{first}\"\nkey = \"k1\"\n\
                 [[institutions]]\ninst_no = \"{second}\"\nkey = \"k2\"\n"
            )
        };
        for text in [two("60000001", "60000002"), two("60000002", "60000001")] {
            let c = load(&text, &[]).expect("settings load");
            assert_eq!(c.institutions.default_inst_no(), "60000002");
        }
        let one = load(MIN, &[]).expect("settings load");
        assert_eq!(one.institutions.default_inst_no(), "60000001");
    }

    /// The TOML block of contract §6, read from docs/CONTRACT.md as it is
    /// now: from the first ```` ```toml ```` after `## 6. Configuration` to
    /// its closing fence.
    fn contract_toml() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONTRACT.md");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let section = text
            .split_once("\n## 6. Configuration")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("no section 6 in {path}"));
        let block = section
            .split_once("```toml\n")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("no ```toml block in section 6"));
        let end = block
            .find("\n```")
            .unwrap_or_else(|| panic!("the block of section 6 is not closed"));
        block[..=end].to_owned()
    }

    /// Every setting but the institutions, as TOML values (Settings has no
    /// PartialEq; this also compares URLs in full).
    fn without_institutions(s: &Settings) -> toml::Table {
        let mut t = match toml::Value::try_from(s) {
            Ok(toml::Value::Table(t)) => t,
            other => panic!("settings serialise to a table: {other:?}"),
        };
        t.remove("institutions");
        t
    }

    #[test]
    fn the_contracts_configuration_block_loads_verbatim_and_is_every_default() {
        let text = contract_toml();
        assert!(
            text.contains("[reconcile]") && text.contains("schedule_shards"),
            "{text}"
        );
        let c = load(&text, &[]).unwrap_or_else(|e| panic!("the contract's own TOML: {e}"));
        assert_eq!(
            without_institutions(&c.settings),
            without_institutions(&Settings::default()),
            "the contract's values are the defaults"
        );
        assert_eq!(c.institutions.inst_nos(), ["60000001"]);
        // And the shipped default file shows the same defaults.
        let shipped = load(DEFAULT_TOML, &[]).expect("config/default.toml loads");
        assert_eq!(
            without_institutions(&shipped.settings),
            without_institutions(&Settings::default()),
            "config/default.toml shows every default"
        );
        // The keys issue 18 added, named one by one.
        let s = &c.settings;
        assert!(s.amqp.urls.is_empty() && s.redis.urls.is_empty());
        assert_eq!(s.redis.wait_replicas, 0);
        assert_eq!(
            (s.gateway.query_url.as_str(), s.gateway.close_url.as_str()),
            ("", "")
        );
        assert_eq!(
            (s.reconcile.concurrency, s.reconcile.schedule_shards),
            (32, 16)
        );
    }

    #[test]
    fn cluster_lists_load_from_the_file_and_from_the_environment() {
        let c = load(
            &format!(
                "[amqp]\nurls = [\"amqp://u:p@mq-0:5672/%2f\", \"amqps://u:p@mq-1:5671/%2f\"]\n\
                 [redis]\ncluster = true\nurls = [\"redis://r-1:6379\"]\n{MIN}"
            ),
            &[],
        )
        .expect("settings load");
        let exposed = |urls: &[SecretUrl]| -> Vec<String> {
            urls.iter().map(|u| u.expose().to_owned()).collect()
        };
        assert_eq!(
            exposed(&c.settings.amqp.urls),
            ["amqp://u:p@mq-0:5672/%2f", "amqps://u:p@mq-1:5671/%2f"]
        );
        let seeds: Vec<&str> = c.settings.redis.seeds().map(SecretUrl::expose).collect();
        assert_eq!(seeds, ["redis://127.0.0.1:6379/0", "redis://r-1:6379"]);
        let c = load(
            MIN,
            &[
                (
                    "H5PAY__AMQP__URLS",
                    "amqp://u:p@a:5672/%2f,amqp://u:p@b:5672/%2f",
                ),
                ("H5PAY__REDIS__CLUSTER", "true"),
                ("H5PAY__REDIS__URLS", "redis://r-1:6379, redis://r-2:6379"),
                (
                    "H5PAY__GATEWAY__QUERY_URL",
                    "https://gw.example/v3/queryorder",
                ),
                ("H5PAY__RECONCILE__CONCURRENCY", "4"),
                ("H5PAY__RECONCILE__SCHEDULE_SHARDS", "8"),
            ],
        )
        .expect("settings load");
        let s = &c.settings;
        assert_eq!(
            exposed(&s.amqp.urls),
            ["amqp://u:p@a:5672/%2f", "amqp://u:p@b:5672/%2f"]
        );
        assert_eq!(
            exposed(&s.redis.urls),
            ["redis://r-1:6379", "redis://r-2:6379"]
        );
        assert_eq!(s.gateway.query_url, "https://gw.example/v3/queryorder");
        assert_eq!(
            (s.reconcile.concurrency, s.reconcile.schedule_shards),
            (4, 8)
        );
        // Passwords stay out of Debug.
        assert!(!format!("{s:?}").contains("u:p@"), "{s:?}");
    }

    #[test]
    fn insecure_gateway_endpoints_are_plain_http_off_this_host() {
        let g = |url: &str, query: &str, close: &str| GatewaySettings {
            url: url.into(),
            query_url: query.into(),
            close_url: close.into(),
            ..GatewaySettings::default()
        };
        let keys = |g: &GatewaySettings| -> Vec<&'static str> {
            g.insecure_endpoints().into_iter().map(|(k, _)| k).collect()
        };
        for local in [
            "http://127.0.0.1:8090/api/openpay/v3/h5pay",
            "http://127.9.8.7/v3/h5pay",
            "http://[::1]:8090/v3/h5pay",
            "http://localhost:8090/v3/h5pay",
            "http://LOCALHOST/v3/h5pay",
            "https://gw.example.com/v3/h5pay",
        ] {
            assert!(keys(&g(local, "", "")).is_empty(), "{local}");
        }
        for remote in [
            "http://gateway.invalid/api/openpay/v3/h5pay",
            "http://10.0.0.1/v3/h5pay",
            "http://128.0.0.1/v3/h5pay",
            "http://[::2]/v3/h5pay",
            "http://localhost.example.com/v3/h5pay",
        ] {
            assert_eq!(keys(&g(remote, "", "")), ["gateway.url"], "{remote}");
        }
        let local = "http://127.0.0.1:8090/v3/h5pay";
        assert_eq!(
            keys(&g(
                local,
                "http://gw.example/v3/queryorder",
                "https://gw.example/v3/closeorder"
            )),
            ["gateway.query_url"]
        );
        assert_eq!(
            keys(&g(local, "", "http://gw.example/v3/closeorder")),
            ["gateway.close_url"]
        );
    }

    #[test]
    fn the_redis_response_timeout_leaves_room_for_two_failed_renewals() {
        let c = load(&format!("[redis]\nlease_ms = 5000\n{MIN}"), &[]).expect("settings load");
        let r = &c.settings.redis;
        assert_eq!(r.response_timeout(), Duration::from_secs(1));
        // Renewals every third of the lease: two may fail, each within the
        // timeout, and the third still lands before the lease lapses.
        assert!(2 * (r.lease() / 3) + r.response_timeout() < r.lease());
        assert_eq!(
            RedisSettings::default().response_timeout(),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(
            parse_offset("+08:00").map(|o| o.local_minus_utc()),
            Some(8 * 3600)
        );
        assert_eq!(
            parse_offset("-05:30").map(|o| o.local_minus_utc()),
            Some(-(5 * 3600 + 1800))
        );
        assert_eq!(parse_offset("Z").map(|o| o.local_minus_utc()), Some(0));
        for bad in ["8", "+8:00", "+24:00", "+08:60", "08:00", "+0a:00"] {
            assert!(parse_offset(bad).is_none(), "{bad}");
        }
    }
}
