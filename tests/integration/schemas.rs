//! The JSON Schemas of `schemas/` hold for what the worker really sends:
//! every result and payment event any integration test captures (bodies and
//! AMQP properties) passes through [`check_captured`]; hand-made bad
//! messages are rejected; the AsyncAPI document's examples validate.

use std::sync::LazyLock;

use jsonschema::Validator;
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use serde_json::{Map, Value, json};

fn load(name: &str) -> Validator {
    let path = format!("{}/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let schema: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    jsonschema::draft7::new(&schema)
        .unwrap_or_else(|e| panic!("{path} is not a draft-07 schema: {e}"))
}

static INTENT: LazyLock<Validator> = LazyLock::new(|| load("intent.schema.json"));
static RESULT: LazyLock<Validator> = LazyLock::new(|| load("result-event.schema.json"));
static PAYMENT: LazyLock<Validator> = LazyLock::new(|| load("payment-event.schema.json"));
static RESULT_PROPS: LazyLock<Validator> = LazyLock::new(|| load("result-properties.schema.json"));
static PAYMENT_PROPS: LazyLock<Validator> =
    LazyLock::new(|| load("payment-properties.schema.json"));
static INTENT_PROPS: LazyLock<Validator> = LazyLock::new(|| load("intent-properties.schema.json"));

fn errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// AMQP properties as the JSON object the properties schemas describe.
pub fn properties_json(p: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    put(
        "content_type",
        p.content_type().as_ref().map(|s| json!(s.as_str())),
    );
    put("delivery_mode", p.delivery_mode().map(|d| json!(d)));
    put(
        "message_id",
        p.message_id().as_ref().map(|s| json!(s.as_str())),
    );
    put(
        "correlation_id",
        p.correlation_id().as_ref().map(|s| json!(s.as_str())),
    );
    put("reply_to", p.reply_to().as_ref().map(|s| json!(s.as_str())));
    put("type", p.kind().as_ref().map(|s| json!(s.as_str())));
    put("app_id", p.app_id().as_ref().map(|s| json!(s.as_str())));
    put("timestamp", p.timestamp().map(|t| json!(t)));
    let headers: Map<String, Value> = p
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
                        AMQPValue::ShortString(s) => json!(s.as_str()),
                        other => json!(format!("{other:?}")),
                    };
                    (k.to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    put("headers", Some(Value::Object(headers)));
    Value::Object(m)
}

/// Panics, naming every violation, unless the event and its properties
/// match their schemas (chosen by the event's `schema` field).
pub fn check_captured(event: &Value, props: &BasicProperties) {
    let (body, headers) = match event["schema"].as_str() {
        Some("h5pay.result.v1") => (&*RESULT, &*RESULT_PROPS),
        Some("h5pay.payment.v1") => (&*PAYMENT, &*PAYMENT_PROPS),
        other => panic!("an event with schema {other:?}: {event}"),
    };
    let wrong = errors(body, event);
    assert!(
        wrong.is_empty(),
        "event breaks its schema: {wrong:?}\n{event}"
    );
    let p = properties_json(props);
    let wrong = errors(headers, &p);
    assert!(
        wrong.is_empty(),
        "properties break their schema: {wrong:?}\n{p}"
    );
    // What a schema alone cannot tie together.
    assert_eq!(p["message_id"], event["event_id"], "message_id = event_id");
    assert_eq!(p["headers"]["cloudEvents_id"], event["event_id"]);
    assert_eq!(p["headers"]["cloudEvents_time"], event["occurred_at"]);
    if let Some(subject) = event["pay_trace_no"].as_str() {
        assert_eq!(p["headers"]["cloudEvents_subject"], subject);
    }
}

fn good_result() -> Value {
    json!({"schema": "h5pay.result.v1", "event_id": "0123456789abcdef0123456789abcdef", "status": "ready",
           "inst_no": "60000001", "mch_no": "M1", "pay_trace_no": "T1", "pay_type": "400", "total_amount": 100,
           "pay_time": "20261130101500", "trade_no": "TN1", "code_url": "https://pay.example/x", "jsapi": null,
           "ali_trade_no": null, "gateway": {"return_code": "SUCCESS", "result_code": "PAY_SUCCESS", "return_msg": "ok", "http_status": 200},
           "error": null, "attempts": 1, "duplicate": false, "metadata": {"order_id": "A-1"},
           "occurred_at": "2026-11-30T02:15:00.123Z"})
}

fn good_payment() -> Value {
    json!({"schema": "h5pay.payment.v1", "event_id": "0123456789abcdef0123456789abcdef", "state": "paid",
           "inst_no": "60000001", "mch_no": "M1", "pay_trace_no": "T1", "pay_type": "400", "total_amount": 100,
           "pay_time": "20261130101500", "trade_no": "TN1", "paid_at": "2026-11-30T02:16:00Z", "source": "notify",
           "late": false, "previous": "open", "anomaly": null, "metadata": null,
           "occurred_at": "2026-11-30T02:16:00.456Z"})
}

#[test]
fn hand_made_good_messages_pass_and_bad_ones_are_rejected() {
    assert!(
        errors(&RESULT, &good_result()).is_empty(),
        "{:?}",
        errors(&RESULT, &good_result())
    );
    assert!(
        errors(&PAYMENT, &good_payment()).is_empty(),
        "{:?}",
        errors(&PAYMENT, &good_payment())
    );
    let bad_results: Vec<(&str, Value)> = vec![
        ("a field missing", {
            let mut v = good_result();
            v.as_object_mut().map(|m| m.remove("attempts"));
            v
        }),
        ("an unknown status", {
            let mut v = good_result();
            v["status"] = json!("paid");
            v
        }),
        ("an upper-case event_id", {
            let mut v = good_result();
            v["event_id"] = json!("0123456789ABCDEF0123456789ABCDEF");
            v
        }),
        ("ready without a way to pay", {
            let mut v = good_result();
            v["code_url"] = Value::Null;
            v
        }),
        ("failed without an error", {
            let mut v = good_result();
            v["status"] = json!("failed");
            v["code_url"] = Value::Null;
            v
        }),
        ("an amount as a string", {
            let mut v = good_result();
            v["total_amount"] = json!("100");
            v
        }),
        ("a field the contract does not have", {
            let mut v = good_result();
            v["paid"] = json!(true);
            v
        }),
        ("a javascript: code_url", {
            let mut v = good_result();
            v["code_url"] = json!("javascript:alert(1)");
            v
        }),
    ];
    for (why, v) in bad_results {
        assert!(!errors(&RESULT, &v).is_empty(), "accepted {why}: {v}");
    }
    let bad_payments: Vec<(&str, Value)> = vec![
        ("paid without a trade_no", {
            let mut v = good_payment();
            v["trade_no"] = Value::Null;
            v
        }),
        ("late but not paid", {
            let mut v = good_payment();
            v["state"] = json!("failed");
            v["late"] = json!(true);
            v["previous"] = json!("open");
            v
        }),
        ("late after open", {
            let mut v = good_payment();
            v["late"] = json!(true);
            v
        }),
        ("an anomaly without its kind", {
            let mut v = good_payment();
            v["state"] = json!("anomaly");
            v
        }),
        ("an unknown source", {
            let mut v = good_payment();
            v["source"] = json!("guess");
            v
        }),
    ];
    for (why, v) in bad_payments {
        assert!(!errors(&PAYMENT, &v).is_empty(), "accepted {why}: {v}");
    }
    // Intents: the contract's examples pass, its counter-examples do not.
    let good = json!({"pay_trace_no": "998877665544332018", "mch_no": "Y52212190001", "pay_type": "wechat",
                      "total_amount": 100, "notify_url": "https://shop.example/notify", "metadata": {"order_id": "A-1001"}});
    assert!(
        errors(&INTENT, &good).is_empty(),
        "{:?}",
        errors(&INTENT, &good)
    );
    for amount in [
        json!("1.00"),
        json!(-1),
        json!(0),
        json!("1e3"),
        json!(" 1"),
        json!(1.5),
    ] {
        let mut v = good.clone();
        v["total_amount"] = amount.clone();
        assert!(
            !errors(&INTENT, &v).is_empty(),
            "accepted total_amount {amount}"
        );
    }
    // An optional field given as null or "" counts as absent (contract §3),
    // metadata included; anything else that is not an object is refused.
    for (field, absent) in [
        ("metadata", json!(null)),
        ("metadata", json!("")),
        ("notify_url", json!("")),
        ("open_id", json!(null)),
        ("pay_time", json!("")),
    ] {
        let mut v = good.clone();
        v[field] = absent.clone();
        assert!(
            errors(&INTENT, &v).is_empty(),
            "{field}: {absent} is absent: {:?}",
            errors(&INTENT, &v)
        );
    }
    for metadata in [json!("text"), json!([1]), json!(1), json!(" ")] {
        let mut v = good.clone();
        v["metadata"] = metadata.clone();
        assert!(
            !errors(&INTENT, &v).is_empty(),
            "accepted metadata {metadata}"
        );
    }
    let mut no_trace = good.clone();
    no_trace.as_object_mut().map(|m| m.remove("pay_trace_no"));
    assert!(!errors(&INTENT, &no_trace).is_empty());
    let props = json!({"content_type": "application/json", "delivery_mode": 2, "message_id": "998877665544332018"});
    assert!(errors(&INTENT_PROPS, &props).is_empty());
    assert!(
        !errors(
            &INTENT_PROPS,
            &json!({"content_type": "application/json", "delivery_mode": 1, "message_id": "x"})
        )
        .is_empty()
    );
}

/// The examples of docs/asyncapi.yaml: each message's example payload
/// validates against the schema its message names.
#[test]
fn the_asyncapi_examples_validate_against_the_schemas() {
    let path = format!("{}/docs/asyncapi.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("asyncapi.yaml parses");
    let doc = yaml_to_json(&docs[0]);
    let messages = doc["components"]["messages"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(messages.len() >= 3, "intent, result and payment messages");
    let mut checked = 0;
    for (name, m) in &messages {
        let schema = m["payload"]["$ref"].as_str().unwrap_or_default();
        let v: &Validator = if schema.ends_with("intent.schema.json") {
            &INTENT
        } else if schema.ends_with("result-event.schema.json") {
            &RESULT
        } else if schema.ends_with("payment-event.schema.json") {
            &PAYMENT
        } else {
            panic!("{name}: payload is not one of schemas/: {schema:?}");
        };
        let examples = m["examples"].as_array().cloned().unwrap_or_default();
        assert!(!examples.is_empty(), "{name} has no examples");
        for ex in examples {
            let wrong = errors(v, &ex["payload"]);
            assert!(wrong.is_empty(), "{name} example {}: {wrong:?}", ex["name"]);
            checked += 1;
        }
    }
    // One example per outcome and per state, at least.
    assert!(checked >= 1 + 11 + 5, "{checked} examples");
}

pub fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(r) => r.parse::<f64>().map(|f| json!(f)).unwrap_or(Value::Null),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}
