//! Every vector of tests/data/sign-vectors.json, both rules.

use h5pay_worker::gateway::sign::{self, Rule};
use secrecy::SecretString;
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let text = include_str!("../data/sign-vectors.json");
    let doc: Value = serde_json::from_str(text).expect("JSON");
    doc["cases"].as_array().cloned().unwrap_or_default()
}

#[test]
fn every_vector_signs_and_canonicalises_by_both_rules() {
    let cases = vectors();
    assert_eq!(cases.len(), 6, "the vector file changed");
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let key = SecretString::from(case["key"].as_str().unwrap_or_default().to_owned());
        let params = case["params"].as_object().cloned().unwrap_or_default();
        assert_eq!(
            sign::canonical_string(&params, &key, Rule::Primary),
            case["canonical"],
            "{name}: canonical"
        );
        assert_eq!(
            sign::canonical_string(&params, &key, Rule::SkipEmpty),
            case["canonical_skip_empty"],
            "{name}: canonical_skip_empty"
        );
        assert_eq!(sign::sign(&params, &key), case["sign"], "{name}: sign");
        assert_eq!(
            hex::encode(sign::digest(&params, &key, Rule::SkipEmpty)),
            case["sign_skip_empty"],
            "{name}: sign_skip_empty"
        );
    }
}

#[test]
fn verification_accepts_each_vector_by_either_rule_and_nothing_else() {
    for case in vectors() {
        let name = case["name"].as_str().unwrap_or("?");
        let key = SecretString::from(case["key"].as_str().unwrap_or_default().to_owned());
        let mut params = case["params"].as_object().cloned().unwrap_or_default();
        for field in ["sign", "sign_skip_empty"] {
            params.insert("sign".into(), case[field].clone());
            assert_eq!(
                sign::verify(&params, &key),
                Ok(()),
                "{name}: {field} must verify"
            );
        }
        params.insert(
            "sign".into(),
            Value::String(case["sign"].as_str().unwrap_or_default().to_uppercase()),
        );
        assert_eq!(
            sign::verify(&params, &key),
            Ok(()),
            "{name}: upper-case hex"
        );
        let wrong = SecretString::from("not-the-key");
        params.insert("sign".into(), case["sign"].clone());
        assert!(
            sign::verify(&params, &wrong).is_err(),
            "{name}: another key must not verify"
        );
    }
}
