//! Entry points for the fuzz targets in `fuzz/` (cargo fuzz), one per
//! parser of untrusted bytes, each with the properties it must keep. The
//! corpus replay test (`tests/integration/fuzz_corpus.rs`) runs the same
//! functions over the seeds and every crash found, in `make test`.
//!
//! Not part of the product's API.

use std::borrow::Cow;

use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::gateway::h5pay::H5PayDecided;
use crate::gateway::h5pay::classify::{Expect, classify};
use crate::gateway::signed_call::{Exchange, Verdict};
use crate::gateway::wire::{H5PayRequest, PayType};
use crate::gateway::{sign, wire::ReceivedResponse};
use crate::intent::{self, Rules};
use crate::keys::Institutions;
use crate::outcome::{CallResult, Decision};
use crate::result_event::{self, ResultEvent};

const KEY: &str = "sandbox-key-5f2b9c0e7d1a4b3c";

fn institutions() -> Institutions {
    Institutions::from_pairs([
        ("60000001".to_owned(), SecretString::from(KEY)),
        ("60000002".to_owned(), SecretString::from("second-key")),
    ])
    .unwrap_or_else(|| unreachable!("two institutions"))
}

/// An intent body: read, validated, and its event built and read back.
pub fn intake(data: &[u8]) {
    let institutions = institutions();
    let rules = Rules {
        institutions: &institutions,
        default_mch_no: None,
        max_amount: 100_000_000,
    };
    let strict = serde_json::from_slice::<Value>(data);
    let Ok(obj) = intent::read(data) else {
        // What a standard parser reads as an object is always an intent.
        assert!(
            !matches!(strict, Ok(Value::Object(_))) || data.len() > intent::MAX_BODY_BYTES,
            "a JSON object was not read"
        );
        return;
    };
    if matches!(strict, Ok(Value::Object(_))) {
        assert!(obj.unrepresentable.is_empty(), "{:?}", obj.unrepresentable);
    }
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let event = match intent::validate(&obj, rules) {
        Ok(i) => {
            let id = &i.identity;
            assert!(intent::is_identifier(&id.pay_trace_no, 64));
            assert!(intent::is_identifier(&id.mch_no, 32));
            assert!((1..=100_000_000).contains(&i.total_amount));
            let body = i
                .request("20261126101500", i.notify_url.as_deref())
                .signed_body(&SecretString::from(KEY));
            assert!(serde_json::from_slice::<Map<String, Value>>(&body).is_ok());
            if let Some(m) = &i.metadata {
                assert!(m.get().len() <= intent::MAX_METADATA_BYTES);
                assert!(serde_json::from_str::<Value>(m.get()).is_ok_and(|v| v.is_object()));
            }
            let call = CallResult {
                decision: Decision::InProcess,
                attempts: 1,
                answer: None,
                trade_no: None,
            };
            ResultEvent::decided(&i, "20261126101500", &call, now)
        }
        Err(invalid) => {
            assert!(!invalid.errors.is_empty());
            ResultEvent::invalid(&invalid, data, now)
        }
    };
    let json = event.to_json();
    let back = result_event::replay(&String::from_utf8_lossy(&json), false);
    assert_eq!(
        back.ok().as_ref(),
        Some(&event),
        "the event reads back as itself"
    );
    assert!(event.routing_key().starts_with("h5pay.result."));
}

/// A gateway answer: the first two bytes choose the HTTP status, the rest
/// is the body.
pub fn gateway_answer(data: &[u8]) {
    let status = match data {
        [a, b, ..] => 100 + (u16::from_be_bytes([*a, *b]) % 500),
        _ => 200,
    };
    let body = data.get(2..).unwrap_or_default();
    let _ = ReceivedResponse::parse(body);
    let request = H5PayRequest::example("T1", 100);
    let key = SecretString::from(KEY);
    for http_links in [false, true] {
        let exchange = Exchange::Answered {
            status,
            retry_after: None,
            body,
        };
        let expect = Expect {
            verify_key: Some(&key),
            http_links,
        };
        let verdict = classify(&exchange, &request, expect);
        if let Verdict::Final {
            value:
                H5PayDecided {
                    decision: Decision::Ready(p),
                    trade_no,
                    ..
                },
            ..
        } = &verdict
        {
            // Only a signed, echoing answer with a web link is ready.
            let verified = serde_json::from_slice::<Map<String, Value>>(body)
                .is_ok_and(|m| sign::verify(&m, &key).is_ok());
            assert!(verified, "an unsigned answer was taken");
            if let Some(u) = &p.code_url {
                assert!(u.starts_with("https://") || (http_links && u.starts_with("http://")));
            }
            assert!(trade_no.as_ref().is_none_or(|t| t.chars().count() <= 64));
        }
        let (message, answer) = verdict.carried();
        let message = message.unwrap_or_default();
        assert!(
            message.chars().count() <= 2048,
            "{} chars",
            message.chars().count()
        );
        if let Some(a) = answer {
            for text in [a.return_code, a.result_code, a.return_msg]
                .into_iter()
                .flatten()
            {
                assert!(text.chars().count() <= 257);
            }
        }
    }
}

/// A signed JSON object: verifying never panics, and signing then
/// verifying always agrees.
pub fn sign_verify(data: &[u8]) {
    let Ok(mut m) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let key = SecretString::from(KEY);
    let _ = sign::verify(&m, &key);
    m.remove("sign");
    let s = sign::sign(&m, &key);
    assert_eq!(s.len(), 32);
    m.insert("sign".into(), Value::String(s.to_uppercase()));
    assert_eq!(sign::verify(&m, &key), Ok(()));
    let other = SecretString::from("another-key");
    assert!(sign::verify(&m, &other).is_err());
}

/// Configuration text (and an environment override made of the same
/// bytes): parsed and validated, never a panic, never a key in an error.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let secret = "k-fuzz-secret-5e1";
    let with_key = format!("{text}\n[[institutions]]\ninst_no = \"1\"\nkey = \"{secret}\"\n");
    for candidate in [text.as_ref(), with_key.as_str()] {
        let env = [(
            "H5PAY__AMQP__PREFETCH".to_owned(),
            text.chars().take(16).collect(),
        )];
        match crate::config::parse(candidate, env) {
            Ok(settings) => {
                if let Err(e) = settings.validate() {
                    assert!(!e.to_string().contains(secret), "{e}");
                }
            }
            Err(e) => {
                assert!(!e.to_string().contains(secret), "{e}");
                assert!(!e.to_string().contains('\n'), "one line: {e}");
            }
        }
    }
}

/// A notify body, as anyone on the internet can send it: read, verified as
/// received, then signed with the key of the institution it names and
/// verified again; its identity, evidence and differences from a known
/// payment; and the anomaly event built from it, read back.
pub fn notify(data: &[u8]) {
    use crate::notify::parse;
    use crate::payment::Evidence;

    let institutions = institutions();
    let Ok(m) = parse::read(data) else {
        return;
    };
    assert!(m.iter().all(|(_, v)| v.nested().is_none()));
    if let Ok(inst) = parse::verify(&m, &institutions) {
        assert!(institutions.key(&inst).is_some());
    }
    let inst_no = m.text("inst_no").filter(|s| !s.is_empty()).map_or_else(
        || institutions.default_inst_no().to_owned(),
        Cow::into_owned,
    );
    let Some(key) = institutions.key(&inst_no) else {
        assert!(
            parse::verify(&m, &institutions).is_err(),
            "an unknown institution verified"
        );
        return;
    };
    // The same fields signed with that key (as a map reads them: the
    // object reads exactly what a map reads), sent again.
    let map = serde_json::from_slice::<Map<String, Value>>(data);
    assert!(map.is_ok(), "read as a notify but not as a map");
    let Ok(mut map) = map else { return };
    map.remove("sign");
    let signature = sign::sign(&map, key);
    map.insert("sign".into(), Value::String(signature));
    let body = serde_json::to_vec(&map).unwrap_or_default();
    let m = parse::read(&body);
    assert!(m.is_ok(), "a signed notify no longer reads");
    let Ok(m) = m else { return };
    assert_eq!(
        parse::verify(&m, &institutions).as_deref(),
        Ok(inst_no.as_str())
    );

    let id = parse::identity(&m, &inst_no);
    for f in [&id.mch_no, &id.pay_trace_no] {
        assert!(f == "_" || intent::is_identifier(f, 64), "{f:?}");
    }
    match parse::evidence(&m) {
        Ok(Evidence::Paid { trade_no }) => {
            assert_eq!(m.text("result_code").as_deref(), Some("PAY_SUCCESS"));
            assert!(trade_no.is_none_or(|t| !t.is_empty()));
        }
        Ok(_) => {}
        Err(message) => assert!(message.chars().count() <= 300, "{message}"),
    }
    against_a_known_payment(&m, &id);
}

/// A verified notify against an open payment: its differences from what
/// was sent (exactly the echoes match), and the anomaly event built from
/// them, read back.
fn against_a_known_payment(m: &crate::gateway::object::Object<'_>, id: &intent::Identity) {
    use crate::notify::parse;
    use crate::payment::event::{Anomaly, AnomalyKind, EvidenceSource, Facts, PaymentEvent, Sent};
    use crate::payment::{Known, PaymentState, View};

    let sent = Sent {
        pay_type: PayType::Wechat,
        total_amount: 100,
        notify_url: None,
        correlation_id: "c-1".into(),
        metadata: None,
        trace: Default::default(),
    };
    let view = View {
        known: Known::Followed(PaymentState::Open),
        raw_state: "open".into(),
        sent: Some(sent),
        pay_time: Some("20261126101500".into()),
        trade_no: Some("T-1".into()),
        outcome: None,
        outcome_json: None,
        unconfirmed: None,
        notifies: 0,
    };
    let wrong = parse::mismatches(m, &view);
    // Exactly the notifies that echo what was sent match.
    let echoes = m.text("total_amount").is_some_and(|t| {
        t.bytes().all(|b| b.is_ascii_digit()) && t.trim_start_matches('0') == "100"
    }) && m.text("pay_time").is_none_or(|p| p == "20261126101500")
        && m.text("trade_no")
            .is_none_or(|t| t.is_empty() || t == "T-1");
    assert_eq!(wrong.is_empty(), echoes, "{wrong:?}");
    for w in &wrong {
        assert!(w.chars().count() <= 400, "{w}");
    }
    let facts = Facts {
        identity: id,
        sent: view.sent.as_ref(),
        pay_time: view.pay_time.as_deref(),
        trade_no: view.trade_no.as_deref(),
    };
    let anomaly = Anomaly {
        kind: AnomalyKind::Mismatch,
        message: wrong.join("; "),
    };
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let ev = PaymentEvent::anomaly(
        &facts,
        anomaly,
        Some(PaymentState::Open),
        EvidenceSource::Notify,
        m.text("sign").as_deref().unwrap_or_default(),
        now,
    );
    let back = serde_json::from_slice::<PaymentEvent>(&ev.to_json());
    assert_eq!(
        back.ok().as_ref(),
        Some(&ev),
        "the event reads back as itself"
    );
    assert_eq!(
        ev.routing_key(),
        format!("h5pay.payment.anomaly.{}", id.mch_no)
    );
}
