//! What a SUCCESS answer must hold before it is believed (contract §4):
//! the request echoed, every kept value of a sane length, a payable link;
//! and that link extracted. Pure functions.

use crate::domain::{Echoes, Presence::Required};
use crate::gateway::wire::{H5PayRequest, H5PayResponse};
use crate::outcome::{Jsapi, Payable};
use crate::text::quoted;

/// A SUCCESS answer must echo what was sent: anything else may be an answer
/// meant for another request.
pub(super) fn check_echo(f: &H5PayResponse, sent: &H5PayRequest) -> Result<(), String> {
    Echoes::new()
        .text("mch_no", f.mch_no.as_deref(), Some(&sent.mch_no), Required)
        .text(
            "pay_trace_no",
            f.pay_trace_no.as_deref(),
            Some(&sent.pay_trace_no),
            Required,
        )
        .amount(
            "total_amount",
            f.total_amount.as_deref(),
            Some(sent.total_amount),
            Required,
        )
        .verdict("SUCCESS answer does not echo the request")
}

/// The longest values kept from an answer (stored with the outcome for
/// `redis.retention_secs`): far above any real one, far below what a
/// hostile answer could make them.
const MAX_KEPT: [(&str, usize); 4] = [
    ("trade_no", 64),
    ("ali_trade_no", 128),
    ("code_url", 4096),
    ("a JSAPI parameter", 1024),
];

/// Every value kept from the answer is of a sane length.
pub(super) fn bounded(f: &H5PayResponse) -> Result<(), String> {
    let jsapi = [
        &f.app_id,
        &f.time_stamp,
        &f.nonce_str,
        &f.packages,
        &f.sign_type,
        &f.pay_sign,
    ];
    let longest_jsapi = jsapi
        .iter()
        .filter_map(|v| v.as_deref())
        .map(|v| v.chars().count())
        .max();
    let lengths = [
        f.trade_no.as_deref().map(|v| v.chars().count()),
        f.ali_trade_no.as_deref().map(|v| v.chars().count()),
        f.code_url.as_deref().map(|v| v.chars().count()),
        longest_jsapi,
    ];
    for ((name, max), len) in MAX_KEPT.iter().zip(lengths) {
        if let Some(len) = len.filter(|l| l > max) {
            return Err(format!(
                "{name} is {len} characters long; at most {max} are accepted"
            ));
        }
    }
    Ok(())
}

/// A code_url the payer can be sent to: an absolute https URL (http only
/// when the gateway itself is plain http, as the sandbox is). Anything else
/// (`javascript:`, `data:`, a relative path) is not a payment link.
fn check_code_url(u: &str, http_links: bool) -> Result<(), String> {
    let parsed = url::Url::parse(u)
        .map_err(|e| format!("code_url is not an absolute URL ({e}): {}", quoted(u)))?;
    let ok = match parsed.scheme() {
        "https" => true,
        "http" => http_links,
        _ => false,
    };
    if !ok || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "code_url must be an absolute {} URL, got {}",
            if http_links { "http(s)" } else { "https" },
            quoted(u)
        ));
    }
    Ok(())
}

/// Extracts what the payer needs from a PAY_SUCCESS answer.
pub(super) fn payable(f: &H5PayResponse, http_links: bool) -> Result<Payable, String> {
    let nonempty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let jsapi_parts = [
        ("appId", nonempty(&f.app_id)),
        ("timeStamp", nonempty(&f.time_stamp)),
        ("nonceStr", nonempty(&f.nonce_str)),
        ("packages", nonempty(&f.packages)),
        ("signType", nonempty(&f.sign_type)),
        ("paySign", nonempty(&f.pay_sign)),
    ];
    let missing: Vec<&str> = jsapi_parts
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| *k)
        .collect();
    let jsapi = match jsapi_parts {
        [
            (_, Some(app_id)),
            (_, Some(ts)),
            (_, Some(nonce)),
            (_, Some(package)),
            (_, Some(st)),
            (_, Some(ps)),
        ] => Some(Jsapi {
            app_id,
            time_stamp: seconds_timestamp(ts),
            nonce_str: nonce,
            package,
            sign_type: st,
            pay_sign: ps,
        }),
        _ => None,
    };
    let p = Payable {
        code_url: nonempty(&f.code_url),
        jsapi,
        ali_trade_no: nonempty(&f.ali_trade_no),
    };
    if let Some(u) = &p.code_url {
        check_code_url(u, http_links)?;
    }
    if p.code_url.is_none() && p.jsapi.is_none() && p.ali_trade_no.is_none() {
        return Err(if missing.len() < 6 {
            format!(
                "PAY_SUCCESS with incomplete JSAPI parameters (missing {})",
                missing.join(", ")
            )
        } else {
            "PAY_SUCCESS without code_url, JSAPI parameters or ali_trade_no".to_owned()
        });
    }
    Ok(p)
}

/// WeChat's JSAPI wants seconds; some gateways send milliseconds (13 digits).
pub fn seconds_timestamp(ts: String) -> String {
    if ts.len() == 13 && ts.bytes().all(|b| b.is_ascii_digit()) {
        ts[..10].to_owned()
    } else {
        ts
    }
}
