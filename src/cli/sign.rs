//! `h5pay-worker sign`: the sign of a JSON object read from stdin, or a
//! check of the `sign` in it.

use std::io::Read;

use secrecy::SecretString;
use serde_json::Value;

use crate::gateway::sign;

#[derive(Debug, thiserror::Error)]
pub enum SignCommandError {
    #[error("cannot read stdin: {0}")]
    Stdin(std::io::Error),
    #[error("stdin is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("stdin is {0}, not a JSON object")]
    NotObject(&'static str),
}

/// The result of `sign --verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    Valid,
    Invalid(sign::VerifyError),
}

fn read_object(input: &[u8]) -> Result<serde_json::Map<String, Value>, SignCommandError> {
    match serde_json::from_slice::<Value>(input).map_err(SignCommandError::NotJson)? {
        Value::Object(m) => Ok(m),
        other => Err(SignCommandError::NotObject(
            crate::gateway::wire::json_kind(&other),
        )),
    }
}

/// The primary-rule sign of the object in `input`.
pub fn sign_input(input: &[u8], key: &SecretString) -> Result<String, SignCommandError> {
    Ok(sign::sign(&read_object(input)?, key))
}

/// Checks the `sign` field of the object in `input` (either accepted rule).
pub fn verify_input(input: &[u8], key: &SecretString) -> Result<Verified, SignCommandError> {
    Ok(match sign::verify(&read_object(input)?, key) {
        Ok(()) => Verified::Valid,
        Err(e) => Verified::Invalid(e),
    })
}

pub fn read_stdin() -> Result<Vec<u8>, SignCommandError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(SignCommandError::Stdin)?;
    Ok(buf)
}

/// Where `sign` takes its key from: one of `--key`, `--key-env`, `--key-file`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeySource {
    /// The key (visible in `ps`: prefer --key-env or --key-file).
    #[arg(long, conflicts_with_all = ["key_env", "key_file"])]
    pub key: Option<String>,
    /// The name of an environment variable holding the key.
    #[arg(long, conflicts_with = "key_file")]
    pub key_env: Option<String>,
    /// A file holding the key (trailing whitespace ignored).
    #[arg(long)]
    pub key_file: Option<std::path::PathBuf>,
}

impl KeySource {
    /// The key, or the one-line reason it cannot be had.
    pub fn read(&self) -> Result<SecretString, String> {
        match (&self.key, &self.key_env, &self.key_file) {
            (Some(k), _, _) => Ok(SecretString::from(k.clone())),
            (_, Some(var), _) => std::env::var(var)
                .map(SecretString::from)
                .map_err(|_| format!("--key-env {var}: the variable is not set")),
            (_, _, Some(path)) => std::fs::read_to_string(path)
                .map(|k| SecretString::from(k.trim_end().to_owned()))
                .map_err(|e| format!("--key-file {}: {e}", path.display())),
            _ => Err("sign needs --key, --key-env or --key-file".to_owned()),
        }
    }
}

/// `h5pay-worker sign [--verify]`: prints the sign (or `valid` / `invalid:
/// why`) and returns the exit code: 0 signed or valid, 1 invalid, 2 for a
/// key or input that cannot be used (said on stderr).
pub fn main(source: &KeySource, verify: bool) -> std::process::ExitCode {
    use std::process::ExitCode;
    let outcome = source.read().and_then(|key| {
        let input = read_stdin().map_err(|e| e.to_string())?;
        if verify {
            verify_input(&input, &key)
                .map_err(|e| e.to_string())
                .map(|v| match v {
                    Verified::Valid => ("valid".to_owned(), ExitCode::SUCCESS),
                    Verified::Invalid(why) => (format!("invalid: {why}"), ExitCode::from(1)),
                })
        } else {
            sign_input(&input, &key)
                .map_err(|e| e.to_string())
                .map(|s| (s, ExitCode::SUCCESS))
        }
    });
    match outcome {
        // `invalid: why` and the reasons may quote the input.
        Ok((line, code)) => {
            println!("{}", crate::text::terminal_safe(&line));
            code
        }
        Err(why) => {
            eprintln!("h5pay-worker: {}", crate::text::terminal_safe(&why));
            ExitCode::from(2)
        }
    }
}
