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
    let scheme = match plain_http_url(u) {
        Some(scheme) => scheme,
        None => {
            let parsed = url::Url::parse(u)
                .map_err(|e| format!("code_url is not an absolute URL ({e}): {}", quoted(u)))?;
            let has_host = parsed.host_str().is_some_and(|h| !h.is_empty());
            match parsed.scheme() {
                "https" if has_host => "https",
                "http" if has_host => "http",
                _ => "",
            }
        }
    };
    let ok = match scheme {
        "https" => true,
        "http" => http_links,
        _ => false,
    };
    if !ok {
        return Err(format!(
            "code_url must be an absolute {} URL, got {}",
            if http_links { "http(s)" } else { "https" },
            quoted(u)
        ));
    }
    Ok(())
}

/// The scheme of a URL of the plainest form, read without a URL parser
/// (whose parse was 1.3 % of an intent's instructions, most of it the IDNA
/// pass over the host; BENCHMARKS.md, eighth sitting): visible ASCII only; `http://` or
/// `https://`; a host of letters, digits, `-` and `.` whose last label
/// starts with a letter, or a dotted-quad IPv4 address; an optional port of
/// at most 65535; then the end, `/`, `?` or `#`. The parser accepts every
/// such URL with that scheme and a non-empty host (a test holds the two
/// together); `None` for anything else, which the parser then reads.
fn plain_http_url(u: &str) -> Option<&'static str> {
    if !u.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        return None;
    }
    let (scheme, rest) = match u.strip_prefix("https://") {
        Some(rest) => ("https", rest),
        None => ("http", u.strip_prefix("http://")?),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| n <= 65535)
    });
    (port_ok && (plain_domain(host) || dotted_quad(host))).then_some(scheme)
}

/// Labels of letters, digits and inner single hyphens (so no `xn--` label
/// for IDNA to decode), the last starting with a letter (so the parser does
/// not read the host as an IPv4 number).
fn plain_domain(host: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
            && !l.contains("--")
    };
    host.split('.').all(label_ok)
        && host
            .rsplit('.')
            .next()
            .and_then(|l| l.bytes().next())
            .is_some_and(|b| b.is_ascii_alphabetic())
}

/// `a.b.c.d`, each 0–255 in decimal without leading zeros (which the
/// parser would read as octal).
fn dotted_quad(host: &str) -> bool {
    let part_ok = |p: &str| {
        (1..=3).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && (p == "0" || !p.starts_with('0'))
            && p.parse::<u16>().is_ok_and(|n| n <= 255)
    };
    host.split('.').count() == 4 && host.split('.').all(part_ok)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the parser says of a code_url: its scheme when it has a host.
    fn parsed_scheme(u: &str) -> Option<String> {
        let p = url::Url::parse(u).ok()?;
        p.host_str()
            .is_some_and(|h| !h.is_empty())
            .then(|| p.scheme().to_owned())
    }

    #[test]
    fn plain_links_are_read_without_the_parser_and_the_rest_go_to_it() {
        for (u, want) in [
            (
                "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx1&package=2",
                Some("https"),
            ),
            ("https://qr.alipay.com/bax03431", Some("https")),
            ("http://127.0.0.1:8090/sandbox/pay/1", Some("http")),
            ("https://pay.example", Some("https")),
            ("https://Pay.Example:443#x", Some("https")),
            ("https://a-b.c0m?q=1", Some("https")),
            ("https://0.0.0.0/", Some("https")),
            // To the parser: what it might reject, change or read otherwise.
            ("https://xn--nxa.example/", None),
            ("https://a..b/", None),
            ("https://a.b./", None),
            ("https://-a.b/", None),
            ("https://1.2.3.256/", None),
            ("https://1.2.3/", None),
            ("https://01.2.3.4/", None),
            ("https://example.123/", None),
            ("https://example.0x1f/", None),
            ("https://user@pay.example/", None),
            ("https://pay.example:65536/", None),
            ("https://pay.example:/", None),
            ("https://pay.example\\x", None),
            ("https://pay_example.com/", None),
            ("https://[::1]/", None),
            ("HTTPS://pay.example/", None),
            (" https://pay.example/", None),
            ("https://pay.example/a b", None),
            ("https://pay.exämple/", None),
            ("https:///x", None),
            ("https://", None),
            ("javascript:alert(1)", None),
            ("weixin://wxpay/bizpayurl?pr=1", None),
        ] {
            assert_eq!(plain_http_url(u), want, "{u}");
            if let Some(scheme) = want {
                assert_eq!(parsed_scheme(u).as_deref(), Some(scheme), "{u}");
            }
        }
    }

    /// xorshift64: a fixed sequence, so that a failure repeats.
    struct Pieces(u64);

    impl Pieces {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        /// The first piece three times in four (so that many URLs are
        /// plain), any piece otherwise.
        fn pick(&mut self, pieces: &[&'static str]) -> &'static str {
            if self.below(4) < 3 {
                pieces[0]
            } else {
                pieces[self.below(pieces.len())]
            }
        }
    }

    /// Every URL the fast path reads, the parser reads the same way: random
    /// URLs built of pieces near every rule's edge.
    #[test]
    fn the_fast_path_never_accepts_what_the_parser_would_not() {
        const SCHEMES: &[&str] = &["https://", "http://", "HTTPS://", "ftp://", "https:", ""];
        const LABELS: &[&str] = &[
            "pay", "a", "Z", "q7", "example", "com", "0", "1", "9", "00", "08", "25", "255", "256",
            "999", "0x1f", "xn--a", "-a", "a-", "a-b", "a--b", "", "_", "é", "a%2e", "a@b",
            "[::1]",
        ];
        const PORTS: &[&str] = &["80", "0", "08080", "65535", "65536", "99999", "", "8a"];
        const REST: &[&str] = &[
            "/", "?", "#", "@", "\\", "%", " ", "\t", "[", "x", "/a/b", "?q=1",
        ];
        let mut pieces = Pieces(0x9E37_79B9_7F4A_7C15);
        let cases = 200_000;
        let mut fast = 0;
        for _ in 0..cases {
            let mut u = String::from(pieces.pick(SCHEMES));
            for i in 0..1 + pieces.below(4) {
                if i > 0 {
                    u.push('.');
                }
                u.push_str(pieces.pick(LABELS));
            }
            if pieces.below(3) == 0 {
                u.push(':');
                u.push_str(PORTS[pieces.below(PORTS.len())]);
            }
            for _ in 0..pieces.below(4) {
                u.push_str(pieces.pick(REST));
            }
            if let Some(scheme) = plain_http_url(&u) {
                fast += 1;
                assert_eq!(parsed_scheme(&u).as_deref(), Some(scheme), "{u:?}");
            }
        }
        // Not vacuous: a good share of the cases took the fast path.
        assert!(fast * 5 > cases, "{fast} of {cases} took the fast path");
    }
}
