//! The settings file and the environment overlay: TOML text, then every
//! `H5PAY__<SECTION>__<KEY>` / `H5PAY__INSTITUTIONS__<i>__<KEY>` variable,
//! typed like the default of its key, then deserialised. One reading of the
//! variable names ([`EnvKey`]) serves both applying them and checking that
//! deployment files name real settings.

use super::{ConfigError, Settings};

const ENV_PREFIX: &str = "H5PAY__";

/// TOML text plus environment overrides, deserialised (not yet validated).
pub fn parse(
    toml_text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let mut table: toml::Table = toml::from_str(toml_text).map_err(|e| {
        // Only the position and the parser's message: the offending line
        // could hold a key, so it is never quoted.
        let line = e
            .span()
            .map(|s| {
                toml_text[..s.start.min(toml_text.len())]
                    .lines()
                    .count()
                    .max(1)
            })
            .unwrap_or(0);
        ConfigError::new(
            "config",
            format!("invalid TOML at line {line}: {}", e.message().trim()),
        )
    })?;
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort();
    for (name, value) in overrides {
        apply_env(&mut table, &name, value)?;
    }
    serde_path_to_error::deserialize::<_, Settings>(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        describe_serde_error(&path, inner.message())
    })
}

/// Turns serde's message into a dotted-key one, never echoing a key's value.
fn describe_serde_error(path: &str, message: &str) -> ConfigError {
    let path = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some(end) = rest.find('`')
    {
        let field = &rest[..end];
        let expected = rest[end + 1..].trim_start_matches(", ").trim();
        // serde_path_to_error's path already ends with the unknown field.
        let path = path
            .strip_suffix(field)
            .unwrap_or(path)
            .trim_end_matches('.');
        return if path.is_empty() {
            ConfigError::new(field, format!("unknown section ({expected})"))
        } else {
            ConfigError::new(
                format!("{path}.{field}"),
                format!("unknown key ({expected})"),
            )
        };
    }
    if path.ends_with(".key") || path == "key" {
        return ConfigError::new(path, "must be a string");
    }
    // A URL may carry a password: its value is never quoted either.
    if ["amqp.url", "redis.url"]
        .iter()
        .any(|k| path == *k || path.starts_with(&format!("{k}s")))
    {
        let what = if message.contains("expected a sequence") {
            "must be a list of URL strings"
        } else {
            "must be a URL string"
        };
        return ConfigError::new(path, what);
    }
    // Messages like "invalid type: integer `5`, expected a string" quote the
    // value, which is fine for everything but keys (handled above).
    ConfigError::new(if path.is_empty() { "config" } else { path }, message)
}

/// The list settings that hold URLs (comma-separated in the environment);
/// every other list holds whole numbers.
const URL_LISTS: [&str; 2] = ["amqp.urls", "redis.urls"];

/// The fields an institution has (`H5PAY__INSTITUTIONS__<i>__<KEY>`).
const INSTITUTION_KEYS: [&str; 4] = ["inst_no", "key", "key_env", "key_file"];
/// An institution has exactly one of these.
const KEY_SOURCES: [&str; 3] = ["key", "key_env", "key_file"];

/// One `H5PAY__…` variable name, read by the grammar of contract §6.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EnvKey {
    /// `H5PAY__<SECTION>__<KEY>`, lower-cased.
    Setting { section: String, key: String },
    /// `H5PAY__INSTITUTIONS__<i>__<KEY>`, lower-cased.
    Institution { index: usize, key: String },
}

/// Why a variable name is not a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EnvKeyError {
    /// Not `H5PAY__SECTION__KEY` or `H5PAY__INSTITUTIONS__<i>__KEY`.
    Shape,
    /// The shape is right but nothing is called that; the dotted name.
    Unknown(String),
    /// An institution index that is not a number; the dotted name.
    Index(String),
}

impl EnvKey {
    /// Reads `name` (which starts with `H5PAY__`) against the settings'
    /// defaults: only keys that exist are accepted.
    fn parse(name: &str) -> Result<EnvKey, EnvKeyError> {
        let rest = name.strip_prefix(ENV_PREFIX).ok_or(EnvKeyError::Shape)?;
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        match parts.as_slice() {
            [section, index, key] if section == "institutions" => {
                let dotted = format!("institutions[{index}].{key}");
                if !INSTITUTION_KEYS.contains(&key.as_str()) {
                    return Err(EnvKeyError::Unknown(dotted));
                }
                let index = index.parse().map_err(|_| EnvKeyError::Index(dotted))?;
                Ok(EnvKey::Institution {
                    index,
                    key: key.clone(),
                })
            }
            [section, key] => {
                if default_of(section, key).is_none() {
                    return Err(EnvKeyError::Unknown(format!("{section}.{key}")));
                }
                Ok(EnvKey::Setting {
                    section: section.clone(),
                    key: key.clone(),
                })
            }
            _ => Err(EnvKeyError::Shape),
        }
    }
}

/// The default value of `[section] key`, which gives an override its type.
fn default_of(section: &str, key: &str) -> Option<toml::Value> {
    let defaults = toml::Value::try_from(Settings::default()).ok()?;
    defaults.get(section)?.get(key).cloned()
}

/// Applies one `H5PAY__SECTION__KEY=value` (or
/// `H5PAY__INSTITUTIONS__<i>__KEY=value`) to the table, typed like the
/// default of that key.
fn apply_env(table: &mut toml::Table, name: &str, value: String) -> Result<(), ConfigError> {
    let key = EnvKey::parse(name).map_err(|e| match e {
        EnvKeyError::Shape => ConfigError::new(
            name,
            "not a setting: use H5PAY__SECTION__KEY or H5PAY__INSTITUTIONS__<i>__KEY",
        ),
        EnvKeyError::Unknown(dotted) => {
            ConfigError::new(dotted, format!("unknown key (from {name})"))
        }
        EnvKeyError::Index(dotted) => {
            ConfigError::new(dotted, format!("{name}: the index is not a number"))
        }
    })?;
    match key {
        EnvKey::Institution { index, key } => apply_institution(table, name, index, key, value),
        EnvKey::Setting { section, key } => apply_setting(table, name, section, key, value),
    }
}

fn apply_institution(
    table: &mut toml::Table,
    name: &str,
    i: usize,
    key: String,
    value: String,
) -> Result<(), ConfigError> {
    let list = table
        .entry("institutions")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    let toml::Value::Array(list) = list else {
        return Err(ConfigError::new(
            "institutions",
            "must be an array of tables",
        ));
    };
    if i > list.len() {
        return Err(ConfigError::new(
            format!("institutions[{i}].{key}"),
            format!("{name}: institutions are numbered from 0 without gaps"),
        ));
    }
    if i == list.len() {
        list.push(toml::Value::Table(toml::Table::new()));
    }
    let toml::Value::Table(t) = &mut list[i] else {
        return Err(ConfigError::new(
            format!("institutions[{i}]"),
            "must be a table",
        ));
    };
    // A key source from the environment replaces the file's (an institution
    // has exactly one).
    if KEY_SOURCES.contains(&key.as_str()) {
        for other in KEY_SOURCES {
            t.remove(other);
        }
    }
    t.insert(key, toml::Value::String(value));
    Ok(())
}

fn apply_setting(
    table: &mut toml::Table,
    name: &str,
    section: String,
    key: String,
    value: String,
) -> Result<(), ConfigError> {
    let dotted = format!("{section}.{key}");
    let typed = match default_of(&section, &key) {
        Some(toml::Value::String(_)) => toml::Value::String(value),
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(value.trim().parse().map_err(|_| {
                ConfigError::new(&dotted, format!("{name} must be an integer, got {value:?}"))
            })?)
        }
        Some(toml::Value::Float(_)) => toml::Value::Float(value.trim().parse().map_err(|_| {
            ConfigError::new(&dotted, format!("{name} must be a number, got {value:?}"))
        })?),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(match value.trim() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(ConfigError::new(
                    &dotted,
                    format!("{name} must be true or false, got {value:?}"),
                ));
            }
        }),
        // A list of URLs, `amqp://a:5672/%2f,amqp://b:5672/%2f` (or with
        // brackets and quotes, as in TOML); empty: no URLs. Never echoed:
        // a URL may carry a password.
        Some(toml::Value::Array(_)) if URL_LISTS.contains(&dotted.as_str()) => {
            let items = value.trim().trim_start_matches('[').trim_end_matches(']');
            toml::Value::Array(
                items
                    .split(',')
                    .map(|v| v.trim().trim_matches('"').trim())
                    .filter(|v| !v.is_empty())
                    .map(|v| toml::Value::String(v.to_owned()))
                    .collect(),
            )
        }
        // A list of whole numbers: `60,300,900` (or `[60, 300, 900]`).
        Some(toml::Value::Array(_)) => {
            let items = value.trim().trim_start_matches('[').trim_end_matches(']');
            let parsed: Result<Vec<toml::Value>, _> = items
                .split(',')
                .map(|v| v.trim().parse::<i64>().map(toml::Value::Integer))
                .collect();
            toml::Value::Array(parsed.map_err(|_| {
                ConfigError::new(
                    &dotted,
                    format!("{name} must be whole numbers separated by commas, got {value:?}"),
                )
            })?)
        }
        _ => {
            return Err(ConfigError::new(
                dotted,
                format!("unknown key (from {name})"),
            ));
        }
    };
    let section_table = table
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match section_table {
        toml::Value::Table(t) => {
            t.insert(key, typed);
            Ok(())
        }
        _ => Err(ConfigError::new(section, "must be a table")),
    }
}

/// Whether `H5PAY__...` names a real setting (deployment files are checked
/// with this).
pub fn env_key_exists(name: &str) -> bool {
    EnvKey::parse(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar_reads_settings_and_institutions() {
        assert_eq!(
            EnvKey::parse("H5PAY__AMQP__PREFETCH"),
            Ok(EnvKey::Setting {
                section: "amqp".into(),
                key: "prefetch".into()
            })
        );
        assert_eq!(
            EnvKey::parse("H5PAY__INSTITUTIONS__2__KEY_FILE"),
            Ok(EnvKey::Institution {
                index: 2,
                key: "key_file".into()
            })
        );
        assert_eq!(
            EnvKey::parse("H5PAY__AMQP__PREFECH"),
            Err(EnvKeyError::Unknown("amqp.prefech".into()))
        );
        assert_eq!(
            EnvKey::parse("H5PAY__INSTITUTIONS__x__KEY"),
            Err(EnvKeyError::Index("institutions[x].key".into()))
        );
        assert_eq!(EnvKey::parse("H5PAY__AMQP"), Err(EnvKeyError::Shape));
        assert_eq!(EnvKey::parse("OTHER__AMQP__URL"), Err(EnvKeyError::Shape));
        assert!(env_key_exists("H5PAY__WORKER__DEFAULT_INST_NO"));
        assert!(!env_key_exists("H5PAY__INSTITUTIONS__0__SECRET"));
    }

    #[test]
    fn a_list_setting_reads_comma_separated_numbers() {
        let mut t = toml::Table::new();
        apply_env(
            &mut t,
            "H5PAY__RECONCILE__CHECK_AFTER_SECS",
            "1, 2,5".into(),
        )
        .expect("applies");
        assert_eq!(
            t["reconcile"]["check_after_secs"],
            toml::Value::Array(vec![1.into(), 2.into(), 5.into()])
        );
        apply_env(&mut t, "H5PAY__RECONCILE__CHECK_AFTER_SECS", "[7]".into()).expect("applies");
        assert_eq!(
            t["reconcile"]["check_after_secs"],
            toml::Value::Array(vec![7.into()])
        );
        let e = apply_env(&mut t, "H5PAY__RECONCILE__CHECK_AFTER_SECS", "1,x".into());
        assert!(e.is_err_and(|e| e.to_string().contains("reconcile.check_after_secs")));
    }

    #[test]
    fn a_url_list_reads_comma_separated_urls_and_empty_is_none() {
        let mut t = toml::Table::new();
        let two = "amqp://u:p@a:5672/%2f, amqp://u:p@b:5672/%2f";
        apply_env(&mut t, "H5PAY__AMQP__URLS", two.into()).expect("applies");
        assert_eq!(
            t["amqp"]["urls"],
            toml::Value::Array(vec![
                "amqp://u:p@a:5672/%2f".into(),
                "amqp://u:p@b:5672/%2f".into()
            ])
        );
        apply_env(
            &mut t,
            "H5PAY__REDIS__URLS",
            r#"["redis://a:6379", "redis://b:6379"]"#.into(),
        )
        .expect("applies");
        assert_eq!(
            t["redis"]["urls"],
            toml::Value::Array(vec!["redis://a:6379".into(), "redis://b:6379".into()])
        );
        apply_env(&mut t, "H5PAY__AMQP__URLS", " ".into()).expect("applies");
        assert_eq!(t["amqp"]["urls"], toml::Value::Array(Vec::new()));
    }

    #[test]
    fn every_list_setting_is_either_a_url_list_or_holds_numbers() {
        let defaults = toml::Value::try_from(Settings::default()).expect("serialises");
        let sections = defaults.as_table().cloned().unwrap_or_default();
        let mut url_lists = Vec::new();
        for (section, keys) in &sections {
            for (key, v) in keys.as_table().cloned().unwrap_or_default() {
                let dotted = format!("{section}.{key}");
                if let toml::Value::Array(items) = v {
                    if URL_LISTS.contains(&dotted.as_str()) {
                        url_lists.push(dotted);
                    } else {
                        assert!(
                            !items.is_empty() && items.iter().all(toml::Value::is_integer),
                            "{dotted}: a list of numbers, or add it to URL_LISTS"
                        );
                    }
                }
            }
        }
        assert_eq!(url_lists.len(), URL_LISTS.len(), "{url_lists:?}");
    }
}
