//! Paying: the payer pays some orders on the sandbox at once, before the
//! reconciler closes what stays unpaid; the sandbox then notifies.

use serde_json::json;

/// Pays each trace's order; false if the sandbox refused one.
pub(super) async fn pay_by_hand(sandbox: std::net::SocketAddr, to_pay: &[String]) -> bool {
    let mut ok = true;
    let http = reqwest::Client::new();
    for trace in to_pay {
        let paid = http
            .post(format!("http://{sandbox}/sandbox/pay"))
            .header("content-type", "application/json")
            .body(json!({"mch_no": "DEMO0001", "pay_trace_no": trace}).to_string())
            .send()
            .await;
        ok &= paid.is_ok_and(|r| r.status().is_success());
    }
    ok
}
