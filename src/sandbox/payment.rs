//! The payment side of the sandbox: the page a `code_url` opens (with a Pay
//! button), paying by hand or by `POST /sandbox/pay`, the scenarios that pay
//! by themselves, and the signed notifies sent to the order's `notify_url`
//! until it answers with the SUCCESS reply.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use rand::RngExt;
use subtle::ConstantTimeEq;

use super::{IdentityKey, Sandbox, json_response};
use crate::gateway::sign;

/// An order was answered PAY_SUCCESS: it can be paid from now on, and the
/// self-paying scenarios start.
pub(super) fn placed(s: &Arc<Sandbox>, identity: &IdentityKey, amount: u64) {
    {
        let mut ledger = s.ledger();
        let Some(order) = ledger.orders.get_mut(identity) else {
            return;
        };
        if order.placed {
            return;
        }
        order.placed = true;
        order.pay_token = Some(new_pay_token());
    }
    if (4020..=4023).contains(&amount) {
        let (s, identity) = (s.clone(), identity.clone());
        tokio::spawn(async move {
            tokio::time::sleep(s.options.self_pay_after).await;
            let _ = pay(&s, &identity);
        });
    }
}

/// 128 random bits from the thread's CSPRNG, hex: the token a payment
/// page's Pay button posts.
fn new_pay_token() -> String {
    hex::encode(rand::rng().random::<[u8; 16]>())
}

/// The form field of the Pay button that carries the order's token.
const TOKEN_FIELD: &str = "token";

/// Why an order cannot be paid.
#[derive(Debug)]
pub(super) enum NotPayable {
    NoSuchOrder,
    NotPlaced,
    Closed,
}

/// Pays an order (idempotent) and starts its notifies; returns its trade_no.
pub(super) fn pay(s: &Arc<Sandbox>, identity: &IdentityKey) -> Result<String, NotPayable> {
    let (trade_no, first) = {
        let mut ledger = s.ledger();
        let order = ledger
            .orders
            .get_mut(identity)
            .ok_or(NotPayable::NoSuchOrder)?;
        if !order.placed {
            return Err(NotPayable::NotPlaced);
        }
        if order.closed && order.paid_at.is_none() {
            return Err(NotPayable::Closed);
        }
        let first = order.paid_at.is_none();
        if first {
            order.paid_at = Some(Utc::now());
        }
        (order.trade_no.clone().unwrap_or_default(), first)
    };
    if first {
        tokio::spawn(send_notifies(s.clone(), identity.clone()));
    }
    Ok(trade_no)
}

/// The signed notify of a paid order, and where it goes.
fn notify_of(s: &Sandbox, identity: &IdentityKey) -> Option<(String, Vec<u8>, u64)> {
    let ledger = s.ledger();
    let order = ledger.orders.get(identity)?;
    let params = order.params.as_ref()?;
    let url = params.get("notify_url")?.clone();
    let key = s.institutions.key(&identity.0)?;
    let amount: u64 = params.get("total_amount")?.parse().ok()?;
    let paid_at = order.paid_at?;
    let beijing = chrono::FixedOffset::east_opt(8 * 3600)?;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("return_code", json!("SUCCESS"));
    put("return_msg", json!("支付成功"));
    put("result_code", json!("PAY_SUCCESS"));
    if s.options.notify_inst_no {
        put("inst_no", json!(identity.0));
    }
    put("mch_no", json!(identity.1));
    put("pay_trace_no", json!(identity.2));
    for k in ["pay_time", "pay_type"] {
        put(k, json!(params.get(k)));
    }
    // Scenario 4023: a notify that does not echo what was sent.
    let told = if amount == 4023 { amount + 1 } else { amount };
    put("total_amount", json!(told.to_string()));
    put("pay_amount", json!(told.to_string()));
    put("receipt_amount", json!(told.to_string()));
    put("trade_no", json!(order.trade_no));
    put("trade_type", json!("1"));
    put(
        "end_time",
        json!(
            paid_at
                .with_timezone(&beijing)
                .format("%Y%m%d%H%M%S")
                .to_string()
        ),
    );
    put("attach", Value::Null);
    let signature = sign::sign(&m, key);
    m.insert("sign".into(), Value::String(signature));
    Some((url, serde_json::to_vec(&m).ok()?, amount))
}

/// Sends the notify on the schedule until it is answered with the SUCCESS
/// reply (scenario 4022: three times, whatever the answers; 4021: never).
async fn send_notifies(s: Arc<Sandbox>, identity: IdentityKey) {
    let Some((url, body, amount)) = notify_of(&s, &identity) else {
        return;
    };
    if amount == 4021 {
        return;
    }
    // A redirect is an answer like any other (not the SUCCESS reply): it is
    // never followed, so a notify_url cannot send the signed notify on to
    // another host.
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "sandbox: no HTTP client for notifies; none is sent");
            return;
        }
    };
    let started = tokio::time::Instant::now();
    let mut sent = 0u32;
    for delay in &s.options.notify_schedule {
        tokio::time::sleep_until(started + *delay).await;
        let answer = http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        sent += 1;
        // Only HTTP 200 with exactly this object stops the resends, as at the
        // gateway; anything else (another message, the text "success", a
        // 2xx other than 200) is a failure.
        let success = match answer {
            Ok(r) if r.status() == reqwest::StatusCode::OK => r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v == json!({"return_code": "SUCCESS", "return_msg": "成功"})),
            _ => false,
        };
        {
            let mut ledger = s.ledger();
            if let Some(order) = ledger.orders.get_mut(&identity) {
                order.notifies_sent += 1;
                order.notified |= success;
            }
        }
        let done = if amount == 4022 { sent >= 3 } else { success };
        if done {
            return;
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /sandbox/pay/{trade_no}`: the page a code_url opens.
pub(super) async fn page(State(s): State<Arc<Sandbox>>, Path(trade_no): Path<String>) -> Response {
    let ledger = s.ledger();
    let Some(key) = ledger.by_trade_no.get(&trade_no) else {
        return (StatusCode::NOT_FOUND, "no such sandbox order").into_response();
    };
    let Some(order) = ledger.orders.get(key).filter(|o| o.placed) else {
        return (StatusCode::NOT_FOUND, "no such sandbox order").into_response();
    };
    let amount = order
        .params
        .as_ref()
        .and_then(|p| p.get("total_amount").cloned())
        .unwrap_or_default();
    let token = order.pay_token.clone().unwrap_or_default();
    let (status, action) = match order.paid_at {
        None if order.closed => ("closed: it can no longer be paid".to_owned(), String::new()),
        Some(at) => (
            format!(
                "paid at {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            String::new(),
        ),
        None => (
            "unpaid".to_owned(),
            format!(
                "<form method=post action=\"/sandbox/pay/{}\">\
                 <input type=hidden name={TOKEN_FIELD} value=\"{}\">\
                 <button id=pay type=submit>Pay {} fen</button></form>",
                escape(&trade_no),
                escape(&token),
                escape(&amount)
            ),
        ),
    };
    Html(format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>h5pay sandbox: pay</title>\
         <h1>Sandbox payment page</h1><p>This is where a real code_url takes the payer.</p>\
         <dl><dt>trade_no</dt><dd id=trade_no>{}</dd><dt>merchant</dt><dd>{}</dd>\
         <dt>pay_trace_no</dt><dd>{}</dd><dt>amount (fen)</dt><dd id=amount>{}</dd>\
         <dt>status</dt><dd id=status>{}</dd></dl>{}",
        escape(&trade_no),
        escape(&key.1),
        escape(&key.2),
        escape(&amount),
        escape(&status),
        action
    ))
    .into_response()
}

/// The page's Pay button: pays, then shows the page again. The form must
/// carry the order's token (made when it was placed, embedded in its page):
/// without it, or with another, nothing is paid (403), so a page elsewhere
/// that posts here cannot pay an order.
pub(super) async fn pay_from_page(
    State(s): State<Arc<Sandbox>>,
    Path(trade_no): Path<String>,
    body: Bytes,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no such sandbox order").into_response();
    let (identity, expected) = {
        let ledger = s.ledger();
        let Some(identity) = ledger.by_trade_no.get(&trade_no).cloned() else {
            return not_found();
        };
        let Some(expected) = ledger
            .orders
            .get(&identity)
            .and_then(|o| o.pay_token.clone())
        else {
            return not_found();
        };
        (identity, expected)
    };
    let sent = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == TOKEN_FIELD)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        return (
            StatusCode::FORBIDDEN,
            "the pay token is missing or wrong: press Pay on the order's own page",
        )
            .into_response();
    }
    match pay(&s, &identity) {
        Ok(_) | Err(NotPayable::Closed) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/sandbox/pay/{trade_no}"))],
        )
            .into_response(),
        Err(NotPayable::NoSuchOrder | NotPayable::NotPlaced) => not_found(),
    }
}

/// `POST /sandbox/pay` with an identity: pays it, for tests.
#[derive(Debug, Deserialize)]
pub(super) struct PayRequest {
    inst_no: Option<String>,
    mch_no: String,
    pay_trace_no: String,
}

pub(super) async fn pay_identity(
    State(s): State<Arc<Sandbox>>,
    Json(req): Json<PayRequest>,
) -> Response {
    let identity = (
        req.inst_no
            .unwrap_or_else(|| s.institutions.default_inst_no().to_owned()),
        req.mch_no,
        req.pay_trace_no,
    );
    match pay(&s, &identity) {
        Ok(trade_no) => json_response(StatusCode::OK, &json!({"paid": true, "trade_no": trade_no})),
        Err(NotPayable::NoSuchOrder) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"paid": false, "error": "no such order"}),
        ),
        Err(NotPayable::NotPlaced) => json_response(
            StatusCode::CONFLICT,
            &json!({"paid": false, "error": "the order was never placed (no PAY_SUCCESS answer)"}),
        ),
        Err(NotPayable::Closed) => json_response(
            StatusCode::CONFLICT,
            &json!({"paid": false, "error": "the order was closed"}),
        ),
    }
}
