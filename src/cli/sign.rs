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
            crate::gateway::types::json_kind(&other),
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
