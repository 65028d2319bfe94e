//! The fields of the contract every layer reads: the identity alphabet and a
//! `notify_url`. Pure; imports only `text`.

use crate::text::clip;

/// `[0-9A-Za-z_-]{1,max}`: the identity alphabet of the contract.
pub fn is_identifier(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An absolute http(s) URL of at most 512 characters, written exactly as it
/// parses: the gateway is sent the string as is, so a form that a URL
/// parser would change (surrounding whitespace, control characters, an
/// upper-case scheme, a missing `/` path) could reach another place than the
/// one checked here.
pub fn check_notify_url(s: &str) -> Result<(), String> {
    if s.chars().count() > 512 {
        return Err(format!(
            "must be at most 512 characters, got {}",
            s.chars().count()
        ));
    }
    let u = url::Url::parse(s).map_err(|e| format!("must be an absolute http(s) URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http or https URL, got scheme {:?}",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if u.as_str() != s {
        return Err(format!(
            "must be written in its normalised form {:?} (no surrounding whitespace or \
             control characters, lower-case scheme and host)",
            clip(u.as_str(), 80)
        ));
    }
    Ok(())
}
