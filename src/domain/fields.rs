//! The fields of the contract every layer reads: the identity alphabet, an
//! echoed amount and a `notify_url`. Pure; imports only `text`.

use crate::text::clip;

/// Whether an echoed `total_amount` (as text) is the amount sent: decimal
/// digits only (no sign, no point, no exponent), the same value. The one
/// rule the h5pay, query and notify checks all apply.
pub fn is_same_amount(got: &str, sent: u64) -> bool {
    !got.is_empty() && got.bytes().all(|b| b.is_ascii_digit()) && got.parse::<u64>() == Ok(sent)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_amount_is_the_sent_one_only_as_plain_digits() {
        for (got, same) in [
            ("100", true),
            ("0100", true),
            ("101", false),
            ("", false),
            ("+100", false),
            ("100.0", false),
            ("1e2", false),
            (" 100", false),
            ("-100", false),
            ("99999999999999999999999", false),
        ] {
            assert_eq!(is_same_amount(got, 100), same, "{got:?}");
        }
    }
}
