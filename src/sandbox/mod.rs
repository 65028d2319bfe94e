//! A local simulator of the gateway (contract §8): its H5 pay API
//! ([`h5pay`]) validates and sign-checks requests like the real one, signs
//! its answers, is idempotent per (inst_no, mch_no, pay_trace_no), and picks
//! a scenario from the amount, like test card numbers; and it plays the rest
//! of the payment ([`payment`]): a payment page at every `code_url`, paying
//! by hand or by `POST /sandbox/pay`, signed notifies to the order's
//! `notify_url` sent again until answered with the SUCCESS reply.
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
//! | total_amount | lifecycle |
//! |---|---|
//! | 4020 | paid by itself one second after it was placed; the notify is sent |
//! | 4021 | paid by itself, but no notify is ever sent |
//! | 4022 | paid by itself; the notify is sent three times |
//! | 4023 | paid by itself; the notify carries a different `total_amount` |
//! | 4024 | never paid; a query answers PAY_FAIL (the payment failed) |
//! | 4025 | never paid; closeorder answers PAY_FAIL the first time, then closes |
//! | 4026 | placed, but the answer is lost (HTTP 502); later calls are refused as a duplicate: `outcome_unknown`, and only a query finds the order |
//! | 4028 | placed, but the first call hangs (like 5003) and its answer is lost; later calls are refused as a duplicate |
//! | 4027 | a query answers `result_code` PAY_SUCCESS and `trade_state` NOTPAY at once (a contradiction) |
//! | other | unpaid until paid by hand; closeorder closes it |
//!
//! `POST /api/openpay/v3/queryorder` and `/v3/closeorder` ([`lifecycle`])
//! answer in the `result_code` shape or the older `trade_state` one
//! ([`QueryShape`]), and count overlapping calls per order.
//!
//! `GET /sandbox/stats` counts calls per identity (and says which orders
//! were paid and notified).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::gateway::sign;
use crate::keys::Institutions;

pub const PAY_PATH: &str = "/api/openpay/v3/h5pay";
pub const QUERY_PATH: &str = "/api/openpay/v3/queryorder";
pub const CLOSE_PATH: &str = "/api/openpay/v3/closeorder";

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
    /// When the notify of a paid order is sent (again, until the SUCCESS
    /// reply): delays from the payment.
    pub notify_schedule: Vec<Duration>,
    /// Whether notifies carry `inst_no` (one known client's gateway sends
    /// it, the other's does not).
    pub notify_inst_no: bool,
    /// How long after placement a self-paying scenario (4020–4023) pays.
    pub self_pay_after: Duration,
    /// The shape of queryorder answers.
    pub query_shape: QueryShape,
}

/// How queryorder says what happened (gateway-lifecycle.md: the sources
/// disagree, so the sandbox answers either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum QueryShape {
    /// `result_code`: PAY_SUCCESS / PAY_FAIL / PAY_IN_PROCESS.
    #[default]
    ResultCode,
    /// The older `trade_state`: SUCCESS / NOTPAY / CLOSED / PAYERROR, and no
    /// `result_code`.
    TradeState,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            latency: Duration::ZERO,
            error_rate: 0.0,
            hang: Duration::from_secs(600),
            public_url: "http://127.0.0.1:8090".into(),
            notify_schedule: [0, 1, 2, 4, 8, 15, 30, 60, 120, 300]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            notify_inst_no: true,
            self_pay_after: Duration::from_secs(1),
            query_shape: QueryShape::ResultCode,
        }
    }
}

mod h5pay;
mod lifecycle;
mod payment;

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
    /// A PAY_SUCCESS answer was given: the order can be paid.
    placed: bool,
    /// When it was paid.
    paid_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Notifies sent, and whether one was answered with the SUCCESS reply.
    notifies_sent: u64,
    notified: bool,
    /// The result_code the order was answered with: the order exists at
    /// the gateway (whatever the caller received).
    answered: Option<&'static str>,
    /// closeorder closed it.
    closed: bool,
    queries: u64,
    closes: u64,
    /// queryorder/closeorder calls in progress, and the most at once.
    in_flight: u32,
    max_in_flight: u32,
    /// Every close_trace_no closeorder was sent for this order.
    close_trace_nos: std::collections::BTreeSet<String>,
    /// The payment page's Pay button posts this (random, made when the
    /// order is placed): a page elsewhere cannot pay the order.
    pay_token: Option<String>,
}

#[derive(Debug, Default)]
struct Ledger {
    orders: HashMap<IdentityKey, Order>,
    /// trade_no → identity, for the pay page.
    by_trade_no: HashMap<String, IdentityKey>,
    /// close_trace_no → (trade_no, close_time) it was first sent with.
    close_traces: HashMap<String, (String, String)>,
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
                paid: o.paid_at.is_some(),
                notifies_sent: o.notifies_sent,
                notified: o.notified,
                closed: o.closed,
                queries: o.queries,
                closes: o.closes,
                max_overlap: o.max_in_flight,
                close_trace_nos: o.close_trace_nos.iter().cloned().collect(),
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
    /// Paid (by hand, by `POST /sandbox/pay`, or by a scenario).
    #[serde(default)]
    pub paid: bool,
    #[serde(default)]
    pub notifies_sent: u64,
    /// A notify was answered with the SUCCESS reply.
    #[serde(default)]
    pub notified: bool,
    /// closeorder closed it.
    #[serde(default)]
    pub closed: bool,
    #[serde(default)]
    pub queries: u64,
    #[serde(default)]
    pub closes: u64,
    /// The most queryorder/closeorder calls for this order at once: more
    /// than 1 means two checks overlapped.
    #[serde(default)]
    pub max_overlap: u32,
    /// Every close_trace_no sent for it: one, however often it was closed.
    #[serde(default)]
    pub close_trace_nos: Vec<String>,
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
        .route(PAY_PATH, post(h5pay::h5pay))
        .route(QUERY_PATH, post(lifecycle::queryorder))
        .route(CLOSE_PATH, post(lifecycle::closeorder))
        .route("/sandbox/stats", get(stats))
        .route("/sandbox/pay", post(payment::pay_identity))
        .route(
            "/sandbox/pay/{trade_no}",
            get(payment::page).post(payment::pay_from_page),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(sandbox)
}

async fn stats(State(s): State<Arc<Sandbox>>, Query(q): Query<StatsQuery>) -> impl IntoResponse {
    axum::Json(s.stats(&q))
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
