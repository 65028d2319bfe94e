//! A local simulator of the gateway's H5 pay API (contract §8): validates
//! and sign-checks requests like the real one, signs its answers, is
//! idempotent per (inst_no, mch_no, pay_trace_no), and picks a scenario
//! from the amount, like test card numbers.
//!
//! | total_amount | answer |
//! |---|---|
//! | 4001 | PAY_FAIL |
//! | 4002 | PAY_IN_PROCESS |
//! | 4003 | return_code FAIL (parameter error) |
//! | 4010 | an answer whose sign is wrong |
//! | 5001 | HTTP 503 for the identity's first two calls, then success |
//! | 5002 | HTTP 500 always |
//! | 5003 | the identity's first call hangs past any sane timeout, then success |
//! | other | PAY_SUCCESS with a code_url (JSAPI parameters for WeChat with open_id) |
//!
//! `GET /sandbox/stats` counts calls per identity; `GET /sandbox/pay/{trade_no}`
//! is the page a code_url leads to.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::gateway::sign;
use crate::gateway::wire::{PayType, json_kind};
use crate::intent::parse_pay_time;
use crate::keys::Institutions;

pub const PAY_PATH: &str = "/api/openpay/v3/h5pay";

/// How the sandbox misbehaves on purpose.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Added to every answer.
    pub latency: Duration,
    /// Share of calls (0.0-1.0) answered HTTP 503 before anything happens.
    pub error_rate: f64,
    /// How long scenario 5003's first call hangs.
    pub hang: Duration,
    /// Where payers reach this sandbox: the base of every `code_url`. Taken
    /// from configuration, never from a request's Host header (which the
    /// caller chooses).
    pub public_url: String,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            latency: Duration::ZERO,
            error_rate: 0.0,
            hang: Duration::from_secs(600),
            public_url: "http://127.0.0.1:8090".into(),
        }
    }
}

type IdentityKey = (String, String, String);

#[derive(Debug, Default)]
struct Order {
    /// Every call that named this identity.
    calls: u64,
    /// The parameters the identity was first sent with (sign excluded).
    params: Option<BTreeMap<String, String>>,
    /// Distinct parameter sets seen: more than one means a client sent two
    /// different requests for one identity.
    distinct: HashSet<BTreeMap<String, String>>,
    trade_no: Option<String>,
    nonce: Option<String>,
}

#[derive(Debug, Default)]
struct Ledger {
    orders: HashMap<IdentityKey, Order>,
    /// trade_no → identity, for the pay page.
    by_trade_no: HashMap<String, IdentityKey>,
}

pub struct Sandbox {
    institutions: Institutions,
    options: SandboxOptions,
    ledger: Mutex<Ledger>,
    sequence: AtomicU64,
    /// Every POST to the pay path, signed or not (no memory per call).
    total_calls: AtomicU64,
}

impl Sandbox {
    pub fn new(institutions: Institutions, options: SandboxOptions) -> Arc<Self> {
        Arc::new(Sandbox {
            institutions,
            options,
            ledger: Mutex::new(Ledger::default()),
            sequence: AtomicU64::new(1),
            total_calls: AtomicU64::new(0),
        })
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The public base URL, without a trailing `/`.
    fn base_url(&self) -> &str {
        self.options.public_url.trim_end_matches('/')
    }

    /// Calls recorded for one identity.
    pub fn calls(&self, inst_no: &str, mch_no: &str, pay_trace_no: &str) -> u64 {
        let key = (
            inst_no.to_owned(),
            mch_no.to_owned(),
            pay_trace_no.to_owned(),
        );
        self.ledger().orders.get(&key).map_or(0, |o| o.calls)
    }

    pub fn stats(&self, filter: &StatsQuery) -> Stats {
        let ledger = self.ledger();
        let mut identities: Vec<IdentityStats> = ledger
            .orders
            .iter()
            .filter(|((i, m, t), _)| {
                filter.inst_no.as_deref().is_none_or(|f| f == i)
                    && filter.mch_no.as_deref().is_none_or(|f| f == m)
                    && filter.pay_trace_no.as_deref().is_none_or(|f| f == t)
            })
            .map(|((i, m, t), o)| IdentityStats {
                inst_no: i.clone(),
                mch_no: m.clone(),
                pay_trace_no: t.clone(),
                calls: o.calls,
                distinct_requests: o.distinct.len() as u64,
                trade_no: o.trade_no.clone(),
            })
            .collect();
        identities.sort_by(|a, b| {
            (&a.inst_no, &a.mch_no, &a.pay_trace_no).cmp(&(&b.inst_no, &b.mch_no, &b.pay_trace_no))
        });
        let calls = identities
            .iter()
            .map(|s| {
                (
                    format!("{}/{}/{}", s.inst_no, s.mch_no, s.pay_trace_no),
                    s.calls,
                )
            })
            .collect();
        Stats {
            total_calls: self.total_calls.load(Ordering::Relaxed),
            identity_count: identities.len() as u64,
            calls,
            identities,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct StatsQuery {
    pub inst_no: Option<String>,
    pub mch_no: Option<String>,
    pub pay_trace_no: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IdentityStats {
    pub inst_no: String,
    pub mch_no: String,
    pub pay_trace_no: String,
    pub calls: u64,
    pub distinct_requests: u64,
    pub trade_no: Option<String>,
}

/// `GET /sandbox/stats`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    /// Every POST to the pay path, signed or not.
    pub total_calls: u64,
    pub identity_count: u64,
    /// `"inst_no/mch_no/pay_trace_no"` → calls.
    pub calls: BTreeMap<String, u64>,
    pub identities: Vec<IdentityStats>,
}

/// `http://` and an address payers on this host can open (a wildcard
/// listen address becomes loopback).
pub fn local_url(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
}

/// Serves the sandbox on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sandbox: Arc<Sandbox>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let server = crate::telemetry::metrics::Server::Sandbox;
    crate::http_server::serve(listener, app(sandbox), server, shutdown).await;
}

/// The sandbox's routes.
pub fn app(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route(PAY_PATH, post(pay))
        .route("/sandbox/stats", get(stats))
        .route("/sandbox/pay/{trade_no}", get(pay_page))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(sandbox)
}

async fn stats(State(s): State<Arc<Sandbox>>, Query(q): Query<StatsQuery>) -> impl IntoResponse {
    axum::Json(s.stats(&q))
}

async fn pay_page(State(s): State<Arc<Sandbox>>, Path(trade_no): Path<String>) -> Response {
    let ledger = s.ledger();
    let Some(key) = ledger.by_trade_no.get(&trade_no) else {
        return (StatusCode::NOT_FOUND, "no such sandbox order").into_response();
    };
    let amount = ledger
        .orders
        .get(key)
        .and_then(|o| o.params.as_ref())
        .and_then(|p| p.get("total_amount").cloned())
        .unwrap_or_default();
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>h5pay sandbox</title>\
         <h1>Sandbox payment page</h1><p>This is where a real code_url would take the payer.</p>\
         <dl><dt>trade_no</dt><dd>{}</dd><dt>merchant</dt><dd>{}</dd><dt>pay_trace_no</dt><dd>{}</dd>\
         <dt>amount (fen)</dt><dd>{}</dd></dl>",
        escape(&trade_no),
        escape(&key.1),
        escape(&key.2),
        escape(&amount)
    ))
    .into_response()
}

/// A refusal before the institution is known: it cannot be signed.
fn fail(msg: impl Into<String>) -> Response {
    let body =
        json!({"return_code": "FAIL", "return_msg": msg.into(), "result_code": null, "sign": null});
    json_response(StatusCode::OK, &body)
}

/// A refusal signed with the institution's key, like every answer once the
/// institution is known.
fn fail_signed(msg: impl Into<String>, key: &secrecy::SecretString) -> Response {
    let mut m = Map::new();
    m.insert("return_code".into(), json!("FAIL"));
    m.insert("return_msg".into(), json!(msg.into()));
    m.insert("result_code".into(), Value::Null);
    let s = sign::sign(&m, key);
    m.insert("sign".into(), Value::String(s));
    json_response(StatusCode::OK, &Value::Object(m))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        bytes,
    )
        .into_response()
}

const REQUIRED: [&str; 7] = [
    "inst_no",
    "mch_no",
    "pay_type",
    "pay_trace_no",
    "pay_time",
    "total_amount",
    "sign",
];
const OPTIONAL: [&str; 2] = ["open_id", "notify_url"];

/// Checks fields and formats; returns the parameters (sign excluded).
fn check_request(m: &Map<String, Value>) -> Result<BTreeMap<String, String>, String> {
    let mut problems = Vec::new();
    let mut params = BTreeMap::new();
    for field in REQUIRED.iter().chain(OPTIONAL.iter()) {
        match m.get(*field) {
            None | Some(Value::Null) if OPTIONAL.contains(field) => {}
            None | Some(Value::Null) => problems.push(format!("{field} is required")),
            Some(Value::String(s)) if s.is_empty() => problems.push(format!("{field} is empty")),
            Some(Value::String(s)) => {
                if *field != "sign" {
                    params.insert((*field).to_owned(), s.clone());
                }
            }
            Some(v) => problems.push(format!("{field} must be a string, not {}", json_kind(v))),
        }
    }
    let get = |k: &str| params.get(k).map(String::as_str);
    if let Some(p) = get("pay_type")
        && !["300", "400", "600"].contains(&p)
    {
        problems.push(format!("pay_type {p:?} is not 300, 400 or 600"));
    }
    if let Some(a) = get("total_amount")
        && !(a.bytes().all(|b| b.is_ascii_digit()) && a.parse::<u64>().is_ok_and(|n| n > 0))
    {
        problems.push(format!(
            "total_amount {a:?} is not a positive number of fen"
        ));
    }
    if let Some(t) = get("pay_time")
        && parse_pay_time(t).is_none()
    {
        problems.push(format!("pay_time {t:?} is not yyyyMMddHHmmss"));
    }
    for (k, max) in [("mch_no", 32), ("pay_trace_no", 64)] {
        if let Some(v) = get(k)
            && !crate::intent::is_identifier(v, max)
        {
            problems.push(format!("{k} {v:?} is malformed"));
        }
    }
    if let Some(u) = get("notify_url")
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        problems.push("notify_url must be an http(s) URL".to_owned());
    }
    if problems.is_empty() {
        Ok(params)
    } else {
        Err(format!(
            "参数不合法 (invalid parameters): {}",
            problems.join("; ")
        ))
    }
}

async fn pay(State(s): State<Arc<Sandbox>>, headers: HeaderMap, body: Bytes) -> Response {
    s.total_calls.fetch_add(1, Ordering::Relaxed);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return fail(format!(
            "Content-Type must be application/json, got {content_type:?}"
        ));
    }
    let m = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        Ok(other) => return fail(format!("body is {}, not a JSON object", json_kind(&other))),
        Err(e) => return fail(format!("body is not JSON: {e}")),
    };
    if !s.options.latency.is_zero() {
        tokio::time::sleep(s.options.latency).await;
    }
    if s.options.error_rate > 0.0 && rand::rng().random_bool(s.options.error_rate.clamp(0.0, 1.0)) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "sandbox: injected error (--error-rate)",
        )
            .into_response();
    }
    let params = match check_request(&m) {
        Ok(p) => p,
        Err(msg) => return fail(msg),
    };
    let identity = match (
        params.get("inst_no"),
        params.get("mch_no"),
        params.get("pay_trace_no"),
    ) {
        (Some(i), Some(mc), Some(t)) => (i.clone(), mc.clone(), t.clone()),
        _ => return fail("参数不合法 (invalid parameters): identity fields missing"),
    };
    let Some(key) = s.institutions.key(&identity.0).cloned() else {
        return fail(format!("机构号不存在 (unknown inst_no {:?})", identity.0));
    };
    // Constant-time, and before anything is recorded: an unsigned POST
    // costs the sandbox no memory.
    if sign::verify(&m, &key).is_err() {
        return fail_signed("签名错误 (sign check failed)", &key);
    }
    // Every signed call of an identity is counted: tests prove "no second
    // gateway call" with these numbers.
    let calls = {
        let mut ledger = s.ledger();
        let order = ledger.orders.entry(identity.clone()).or_default();
        order.calls += 1;
        order.calls
    };

    // Idempotency per identity.
    let (trade_no, nonce) = {
        let mut ledger = s.ledger();
        let order = ledger.orders.entry(identity.clone()).or_default();
        order.distinct.insert(params.clone());
        match &order.params {
            Some(first) if *first != params => {
                return fail_signed(
                    "重复的请求流水号 (duplicate pay_trace_no with different parameters)",
                    &key,
                );
            }
            Some(_) => {}
            None => order.params = Some(params.clone()),
        }
        let seq = s.sequence.fetch_add(1, Ordering::Relaxed);
        let pay_time = params.get("pay_time").cloned().unwrap_or_default();
        let trade_no = order
            .trade_no
            .get_or_insert_with(|| format!("2000011{pay_time}{seq:08}"))
            .clone();
        let nonce = order
            .nonce
            .get_or_insert_with(|| hex::encode(rand::rng().random::<[u8; 8]>()))
            .clone();
        ledger
            .by_trade_no
            .insert(trade_no.clone(), identity.clone());
        (trade_no, nonce)
    };

    let amount: u64 = params
        .get("total_amount")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    match amount {
        5001 if calls <= 2 => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox scenario 5001: busy, try again",
            )
                .into_response();
        }
        5002 => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "sandbox scenario 5002: internal error",
            )
                .into_response();
        }
        5003 if calls == 1 => tokio::time::sleep(s.options.hang).await,
        4003 => return fail_signed("参数不合法 (sandbox scenario 4003: parameter error)", &key),
        _ => {}
    }

    let (result_code, return_msg) = match amount {
        4001 => ("PAY_FAIL", "支付失败 (sandbox scenario 4001)"),
        4002 => ("PAY_IN_PROCESS", "支付中 (sandbox scenario 4002)"),
        _ => ("PAY_SUCCESS", "支付成功"),
    };
    let pay_type = params.get("pay_type").and_then(|p| PayType::parse(p));
    let jsapi = result_code == "PAY_SUCCESS"
        && pay_type == Some(PayType::Wechat)
        && params.contains_key("open_id");
    let mut answer = Map::new();
    let mut put = |k: &str, v: Value| {
        answer.insert(k.to_owned(), v);
    };
    put("return_code", json!("SUCCESS"));
    put("return_msg", json!(return_msg));
    put("result_code", json!(result_code));
    for k in [
        "pay_type",
        "mch_no",
        "pay_trace_no",
        "pay_time",
        "total_amount",
    ] {
        put(k, json!(params.get(k)));
    }
    put("mch_name", json!("沙箱商户 (sandbox merchant)"));
    put("shop_name", json!(""));
    put("shop_no", json!(""));
    put("trade_no", json!(trade_no));
    put("attach", Value::Null);
    let null_jsapi = [
        "appId",
        "timeStamp",
        "nonceStr",
        "packages",
        "signType",
        "paySign",
    ];
    if jsapi {
        // Milliseconds, as some upstream systems send: the worker converts.
        let ts_ms = chrono::Utc::now().timestamp_millis();
        put("appId", json!("wx0sandbox0appid"));
        put("timeStamp", json!(ts_ms.to_string()));
        put("nonceStr", json!(nonce));
        put("packages", json!(format!("prepay_id=wx{trade_no}")));
        put("signType", json!("MD5"));
        put(
            "paySign",
            json!(hex::encode(md5_of(&format!("{trade_no}{nonce}")))),
        );
        put("code_url", Value::Null);
    } else {
        for k in null_jsapi {
            put(k, Value::Null);
        }
        let link = (result_code == "PAY_SUCCESS")
            .then(|| format!("{}/sandbox/pay/{trade_no}", s.base_url()));
        put("code_url", json!(link));
    }
    let ali = result_code == "PAY_SUCCESS"
        && pay_type == Some(PayType::Alipay)
        && params.contains_key("open_id");
    put(
        "ali_trade_no",
        if ali {
            json!(format!("2088{trade_no}"))
        } else {
            Value::Null
        },
    );
    let signature = if amount == 4010 {
        // Scenario 4010: a sign that does not verify.
        "0123456789abcdef0123456789abcdef".to_owned()
    } else {
        sign::sign(&answer, &key)
    };
    answer.insert("sign".into(), Value::String(signature));
    json_response(StatusCode::OK, &Value::Object(answer))
}

fn md5_of(s: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(s.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checks_name_every_problem() {
        let m = json!({"inst_no": "1", "mch_no": "M 1", "pay_type": "500", "pay_trace_no": "T",
            "pay_time": "20230230000000", "total_amount": 1, "sign": "x"});
        let Value::Object(m) = m else { unreachable!() };
        let e = check_request(&m).err().unwrap_or_default();
        for needle in [
            "mch_no",
            "pay_type",
            "pay_time",
            "total_amount must be a string",
        ] {
            assert!(e.contains(needle), "{needle} missing in {e}");
        }
    }
}
