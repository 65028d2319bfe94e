//! Micro-benchmarks of the per-intent CPU work: signing a request,
//! verifying an answer, validating an intent, classifying an answer and
//! building the result event. `cargo bench --bench hot_path`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use h5pay_worker::gateway::h5pay::classify::{Expect, classify};
use h5pay_worker::gateway::sign;
use h5pay_worker::gateway::signed_call::Exchange;
use h5pay_worker::intent::{self, Rules};
use h5pay_worker::keys::Institutions;
use h5pay_worker::result_event::ResultEvent;
use secrecy::SecretString;
use serde_json::{Value, json};

const KEY: &str = "sandbox-key-5f2b9c0e7d1a4b3c";

fn answer(req: &h5pay_worker::gateway::H5PayRequest, key: &SecretString) -> Vec<u8> {
    let mut m = json!({
        "return_code": "SUCCESS", "return_msg": "支付成功", "result_code": "PAY_SUCCESS",
        "pay_type": "400", "mch_name": "沙箱商户", "shop_name": "", "mch_no": req.mch_no,
        "shop_no": "", "pay_trace_no": req.pay_trace_no, "pay_time": req.pay_time,
        "total_amount": req.total_amount.to_string(), "trade_no": "200001102F4623030615082110001",
        "appId": null, "timeStamp": null, "nonceStr": null, "packages": null, "signType": null,
        "paySign": null, "ali_trade_no": null, "attach": null,
        "code_url": "https://pay.example.com/pay/scene/h5tominiapp_new.html?order_id=h5_20230306151092052057"
    });
    if let Value::Object(map) = &mut m {
        let s = sign::sign(map, key);
        map.insert("sign".into(), Value::String(s));
    }
    serde_json::to_vec(&m).unwrap_or_default()
}

fn benches(c: &mut Criterion) {
    let key = SecretString::from(KEY);
    let institutions = Institutions::from_pairs([("60000001".to_owned(), key.clone())])
        .unwrap_or_else(|| unreachable!());
    let rules = Rules {
        institutions: &institutions,
        default_mch_no: None,
        max_amount: 100_000_000,
    };
    let body = br#"{"pay_trace_no":"998877665544332018","mch_no":"Y52212190001","pay_type":"wechat","total_amount":100,"metadata":{"order_id":"A-1001"}}"#;

    c.bench_function("read_and_validate_intent", |b| {
        b.iter(|| {
            let obj = intent::read(black_box(body)).unwrap_or_default();
            black_box(intent::validate(&obj, rules).is_ok())
        })
    });
    let obj = intent::read(body).unwrap_or_default();
    let Ok(valid) = intent::validate(&obj, rules) else {
        unreachable!("the benchmark intent is valid")
    };
    let req = valid.request("20261126101500", None);
    c.bench_function("sign_request_body", |b| {
        b.iter(|| black_box(req.signed_body(&key)))
    });
    let raw = answer(&req, &key);
    c.bench_function("classify_signed_answer", |b| {
        b.iter(|| {
            let ex = Exchange::Answered {
                status: 200,
                retry_after: None,
                body: black_box(&raw),
            };
            let expect = Expect {
                verify_key: Some(&key),
                http_links: false,
            };
            black_box(classify(&ex, &req, expect))
        })
    });
    let call = h5pay_worker::outcome::CallResult {
        decision: h5pay_worker::outcome::Decision::Ready(h5pay_worker::outcome::Payable {
            code_url: Some("https://pay.example.com/x".into()),
            ..Default::default()
        }),
        attempts: 1,
        answer: None,
        trade_no: Some("T".into()),
    };
    c.bench_function("build_and_serialise_event", |b| {
        b.iter(|| {
            black_box(
                ResultEvent::decided(&valid, "20261126101500", &call, chrono::Utc::now()).to_json(),
            )
        })
    });
    c.bench_function("fingerprint", |b| b.iter(|| black_box(valid.fingerprint())));
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
