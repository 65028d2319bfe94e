//! `POST /api/openpay/v3/h5pay`: placing an order, as the gateway does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use serde_json::{Map, Value, json};

use secrecy::SecretString;

use super::{IdentityKey, Sandbox, fail, fail_signed, json_response, payment};
use crate::gateway::sign;
use crate::gateway::wire::{JSAPI_FIELDS, PayType, json_kind};
use crate::intent::parse_pay_time;

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

pub(super) async fn h5pay(
    State(s): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.total_calls.fetch_add(1, Ordering::Relaxed);
    let m = match json_object(&headers, &body) {
        Ok(m) => m,
        Err(msg) => return fail(msg),
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
    let calls = count_call(&s, &identity);
    let Some((trade_no, nonce)) = remember(&s, &identity, &params) else {
        return fail_signed(
            "重复的请求流水号 (duplicate pay_trace_no with different parameters)",
            &key,
        );
    };
    let amount: u64 = params
        .get("total_amount")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    if let Some(scripted) = scenario(&s, &identity, amount, calls, &key).await {
        return scripted;
    }

    let (result_code, return_msg) = match amount {
        4001 => ("PAY_FAIL", "支付失败 (sandbox scenario 4001)"),
        4002 => ("PAY_IN_PROCESS", "支付中 (sandbox scenario 4002)"),
        _ => ("PAY_SUCCESS", "支付成功"),
    };
    s.ledger()
        .orders
        .entry(identity.clone())
        .or_default()
        .answered = Some(result_code);
    if result_code == "PAY_SUCCESS" {
        payment::placed(&s, &identity, amount);
    }
    let mut answer = decision_fields(&params, result_code, return_msg, &trade_no);
    let paid = result_code == "PAY_SUCCESS";
    put_payable(&mut answer, &s, &params, paid, &trade_no, &nonce);
    let signature = if amount == 4010 {
        // Scenario 4010: a sign that does not verify.
        "0123456789abcdef0123456789abcdef".to_owned()
    } else {
        sign::sign(&answer, &key)
    };
    answer.insert("sign".into(), Value::String(signature));
    json_response(StatusCode::OK, &Value::Object(answer))
}

/// The answer's fields besides the payable ones and the sign: the
/// decision, the request's echoes, the merchant and the trade_no.
fn decision_fields(
    params: &BTreeMap<String, String>,
    result_code: &str,
    return_msg: &str,
    trade_no: &str,
) -> Map<String, Value> {
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
    answer
}

/// The body, if it is a JSON object sent as JSON; else why not.
fn json_object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(format!(
            "Content-Type must be application/json, got {content_type:?}"
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("body is {}, not a JSON object", json_kind(&other))),
        Err(e) => Err(format!("body is not JSON: {e}")),
    }
}

/// Every signed call of an identity is counted: tests prove "no second
/// gateway call" with these numbers. Returns this call's number.
fn count_call(s: &Sandbox, identity: &IdentityKey) -> u64 {
    let mut ledger = s.ledger();
    let order = ledger.orders.entry(identity.clone()).or_default();
    order.calls += 1;
    order.calls
}

/// Idempotency per identity: the order's trade_no and nonce, the same on
/// every call; None if the identity was first placed with other parameters.
fn remember(
    s: &Sandbox,
    identity: &IdentityKey,
    params: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    let mut ledger = s.ledger();
    let order = ledger.orders.entry(identity.clone()).or_default();
    order.distinct.insert(params.clone());
    match &order.params {
        Some(first) if first != params => return None,
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
    Some((trade_no, nonce))
}

/// The scripted amounts that answer otherwise than with a decision (or
/// only after a hang); None: answer as the gateway does.
async fn scenario(
    s: &Arc<Sandbox>,
    identity: &IdentityKey,
    amount: u64,
    calls: u64,
    key: &SecretString,
) -> Option<Response> {
    match amount {
        // Placed, but the answer never arrives (4026: lost at once; 4028:
        // after the call hung); every later call is refused as a duplicate
        // (the field's classic outcome_unknown).
        4026 | 4028 if calls == 1 => {
            s.ledger()
                .orders
                .entry(identity.clone())
                .or_default()
                .answered = Some("PAY_SUCCESS");
            payment::placed(s, identity, amount);
            if amount == 4028 {
                tokio::time::sleep(s.options.hang).await;
            }
            Some(
                (
                    StatusCode::BAD_GATEWAY,
                    "sandbox scenario 4026/4028: the answer is lost",
                )
                    .into_response(),
            )
        }
        4026 | 4028 => Some(fail_signed(
            "重复的请求流水号 (sandbox scenario 4026/4028: duplicate pay_trace_no)",
            key,
        )),
        5001 if calls <= 2 => Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox scenario 5001: busy, try again",
            )
                .into_response(),
        ),
        5002 => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "sandbox scenario 5002: internal error",
            )
                .into_response(),
        ),
        5003 if calls == 1 => {
            tokio::time::sleep(s.options.hang).await;
            None
        }
        4003 => Some(fail_signed(
            "参数不合法 (sandbox scenario 4003: parameter error)",
            key,
        )),
        _ => None,
    }
}

/// What the payer is given: JSAPI parameters (WeChat with an open_id), or
/// a code_url; and an ali_trade_no (Alipay with an open_id).
fn put_payable(
    answer: &mut Map<String, Value>,
    s: &Sandbox,
    params: &BTreeMap<String, String>,
    paid: bool,
    trade_no: &str,
    nonce: &str,
) {
    let mut put = |k: &str, v: Value| {
        answer.insert(k.to_owned(), v);
    };
    let pay_type = params.get("pay_type").and_then(|p| PayType::parse(p));
    let jsapi = paid && pay_type == Some(PayType::Wechat) && params.contains_key("open_id");
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
        for k in JSAPI_FIELDS {
            put(k, Value::Null);
        }
        let link = paid.then(|| format!("{}/sandbox/pay/{trade_no}", s.base_url()));
        put("code_url", json!(link));
    }
    let ali = paid && pay_type == Some(PayType::Alipay) && params.contains_key("open_id");
    put(
        "ali_trade_no",
        if ali {
            json!(format!("2088{trade_no}"))
        } else {
            Value::Null
        },
    );
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
