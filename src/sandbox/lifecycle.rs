//! `POST /api/openpay/v3/queryorder` and `/v3/closeorder`, as
//! gateway-lifecycle.md describes them: signed and checked like h5pay,
//! answers signed; queries in either answer shape ([`QueryShape`]); closes
//! idempotent per `close_trace_no`. Calls for one order that overlap are
//! counted, so tests can prove two checks never ran at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use super::{IdentityKey, QueryShape, Sandbox, fail, fail_signed, json_response};
use crate::gateway::sign;
use crate::gateway::wire::json_kind;

/// The signed request's string fields (sign excluded), its institution's
/// key, or the refusal to answer with (boxed: a Response is large).
fn read_signed(
    s: &Sandbox,
    body: &[u8],
    required: &[&str],
) -> Result<(BTreeMap<String, String>, SecretString), Box<Response>> {
    let m = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        Ok(other) => {
            let msg = format!("body is {}, not a JSON object", json_kind(&other));
            return Err(Box::new(fail(msg)));
        }
        Err(e) => return Err(Box::new(fail(format!("body is not JSON: {e}")))),
    };
    let mut params = BTreeMap::new();
    for (k, v) in &m {
        match v {
            Value::String(x) if k != "sign" => {
                params.insert(k.clone(), x.clone());
            }
            Value::String(_) | Value::Null => {}
            other => {
                let msg = format!("{k} must be a string, not {}", json_kind(other));
                return Err(Box::new(fail(msg)));
            }
        }
    }
    let inst_no = params.get("inst_no").cloned().unwrap_or_default();
    let Some(key) = s.institutions.key(&inst_no).cloned() else {
        let msg = format!("机构号不存在 (unknown inst_no {inst_no:?})");
        return Err(Box::new(fail(msg)));
    };
    if sign::verify(&m, &key).is_err() {
        return Err(Box::new(fail_signed("签名错误 (sign check failed)", &key)));
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|f| params.get(*f).is_none_or(String::is_empty))
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "参数不合法 (invalid parameters): {} required",
            missing.join(", ")
        );
        return Err(Box::new(fail_signed(msg, &key)));
    }
    Ok((params, key))
}

fn signed_answer(mut m: Map<String, Value>, key: &SecretString) -> Response {
    let s = sign::sign(&m, key);
    m.insert("sign".into(), Value::String(s));
    json_response(StatusCode::OK, &Value::Object(m))
}

/// Counts a call in progress for an order; the guard ends it.
struct InFlight {
    s: Arc<Sandbox>,
    identity: IdentityKey,
}

impl InFlight {
    fn enter(s: &Arc<Sandbox>, identity: &IdentityKey, query: bool) -> InFlight {
        let mut ledger = s.ledger();
        if let Some(o) = ledger.orders.get_mut(identity) {
            o.in_flight += 1;
            o.max_in_flight = o.max_in_flight.max(o.in_flight);
            if query {
                o.queries += 1;
            } else {
                o.closes += 1;
            }
        }
        InFlight {
            s: s.clone(),
            identity: identity.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(o) = self.s.ledger().orders.get_mut(&self.identity) {
            o.in_flight = o.in_flight.saturating_sub(1);
        }
    }
}

/// The order a request names: by trade_no, else by pay_trace_no (and
/// pay_time, when sent, which must match).
fn find(s: &Sandbox, p: &BTreeMap<String, String>) -> Option<IdentityKey> {
    let ledger = s.ledger();
    let inst = p.get("inst_no")?;
    let mch = p.get("mch_no")?;
    let identity = match p.get("trade_no").filter(|t| !t.is_empty()) {
        Some(t) => ledger.by_trade_no.get(t)?.clone(),
        None => (inst.clone(), mch.clone(), p.get("pay_trace_no")?.clone()),
    };
    let order = ledger.orders.get(&identity)?;
    order.answered?;
    if &identity.0 != inst || &identity.1 != mch {
        return None;
    }
    if let (Some(sent), Some(first)) = (
        p.get("pay_time"),
        order.params.as_ref().and_then(|q| q.get("pay_time")),
    ) && sent != first
    {
        return None;
    }
    Some(identity)
}

pub(super) async fn queryorder(State(s): State<Arc<Sandbox>>, body: Bytes) -> Response {
    let (p, key) = match read_signed(&s, &body, &["inst_no", "mch_no", "query_trace_no"]) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if !p.contains_key("trade_no") && !p.contains_key("pay_trace_no") {
        return fail_signed(
            "参数不合法 (invalid parameters): trade_no or pay_trace_no required",
            &key,
        );
    }
    let Some(identity) = find(&s, &p) else {
        return fail_signed("订单不存在 (no such order)", &key);
    };
    let _in_flight = InFlight::enter(&s, &identity, true);
    if !s.options.latency.is_zero() {
        tokio::time::sleep(s.options.latency).await;
    }
    let (params, trade_no, paid_at, closed, answered) = {
        let ledger = s.ledger();
        let Some(o) = ledger.orders.get(&identity) else {
            return fail_signed("订单不存在 (no such order)", &key);
        };
        (
            o.params.clone().unwrap_or_default(),
            o.trade_no.clone(),
            o.paid_at,
            o.closed,
            o.answered,
        )
    };
    let amount: u64 = params
        .get("total_amount")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    // (result_code, trade_state)
    let (rc, ts) = if paid_at.is_some() {
        ("PAY_SUCCESS", "SUCCESS")
    } else if closed {
        ("PAY_FAIL", "CLOSED")
    } else if amount == 4024 || answered == Some("PAY_FAIL") {
        ("PAY_FAIL", "PAYERROR")
    } else {
        ("PAY_IN_PROCESS", "NOTPAY")
    };
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("return_code", json!("SUCCESS"));
    put("return_msg", json!("查询成功"));
    if amount == 4027 {
        // Scenario 4027: two fields that disagree.
        put("result_code", json!("PAY_SUCCESS"));
        put("trade_state", json!("NOTPAY"));
    } else {
        match s.options.query_shape {
            QueryShape::ResultCode => put("result_code", json!(rc)),
            QueryShape::TradeState => put("trade_state", json!(ts)),
        }
    }
    put("inst_no", json!(identity.0));
    put("mch_no", json!(identity.1));
    put("pay_trace_no", json!(identity.2));
    put("pay_time", json!(params.get("pay_time")));
    put("total_amount", json!(params.get("total_amount")));
    put("trade_no", json!(trade_no));
    put("query_trace_no", json!(p.get("query_trace_no")));
    if let Some(at) = paid_at
        && let Some(beijing) = chrono::FixedOffset::east_opt(8 * 3600)
    {
        put(
            "end_time",
            json!(
                at.with_timezone(&beijing)
                    .format("%Y%m%d%H%M%S")
                    .to_string()
            ),
        );
    }
    signed_answer(m, &key)
}

pub(super) async fn closeorder(State(s): State<Arc<Sandbox>>, body: Bytes) -> Response {
    let required = [
        "inst_no",
        "mch_no",
        "close_trace_no",
        "close_time",
        "trade_no",
    ];
    let (p, key) = match read_signed(&s, &body, &required) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if crate::intent::parse_pay_time(p.get("close_time").map(String::as_str).unwrap_or_default())
        .is_none()
    {
        return fail_signed(
            "参数不合法 (invalid parameters): close_time is not yyyyMMddHHmmss",
            &key,
        );
    }
    let Some(identity) = find(&s, &p) else {
        return fail_signed("订单不存在 (no such order)", &key);
    };
    let _in_flight = InFlight::enter(&s, &identity, false);
    if !s.options.latency.is_zero() {
        tokio::time::sleep(s.options.latency).await;
    }
    let trace = p.get("close_trace_no").cloned().unwrap_or_default();
    let pair = (
        p.get("trade_no").cloned().unwrap_or_default(),
        p.get("close_time").cloned().unwrap_or_default(),
    );
    let (result, msg, params) = {
        let mut ledger = s.ledger();
        // Idempotent per close_trace_no: the same one with other
        // parameters is refused.
        match ledger.close_traces.get(&trace) {
            Some(first) if *first != pair => {
                drop(ledger);
                return fail_signed(
                    "重复的关单流水号 (duplicate close_trace_no with different parameters)",
                    &key,
                );
            }
            Some(_) => {}
            None => {
                ledger.close_traces.insert(trace.clone(), pair.clone());
            }
        }
        let Some(o) = ledger.orders.get_mut(&identity) else {
            return fail_signed("订单不存在 (no such order)", &key);
        };
        let amount: u64 = o
            .params
            .as_ref()
            .and_then(|q| q.get("total_amount"))
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let params = o.params.clone().unwrap_or_default();
        o.close_trace_nos.insert(trace.clone());
        if o.paid_at.is_some() {
            ("PAY_FAIL", "订单已支付 (already paid)", params)
        } else if amount == 4025 && o.closes == 1 {
            (
                "PAY_FAIL",
                "关单失败 (sandbox scenario 4025: try again)",
                params,
            )
        } else {
            o.closed = true;
            ("PAY_SUCCESS", "关单成功", params)
        }
    };
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("return_code", json!("SUCCESS"));
    put("return_msg", json!(msg));
    put("result_code", json!(result));
    put("mch_no", json!(identity.1));
    put("pay_trace_no", json!(identity.2));
    put("pay_time", json!(params.get("pay_time")));
    put("trade_no", json!(pair.0));
    put("close_trace_no", json!(trace));
    put("close_time", json!(pair.1));
    signed_answer(m, &key)
}
