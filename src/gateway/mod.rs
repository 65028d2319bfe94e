//! The gateway edge. [`signed_call`] is the HTTP client every endpoint
//! shares (timeouts, size cap, the attempt loop with [`retry`] and the
//! [`breaker`]); [`sign`] is the MD5 rule; [`wire`] the request and answer
//! types, an answer read as an [`object`]; [`h5pay`] places an order and classifies the answer; [`query`]
//! and [`close`] follow it afterwards. [`Gateway`] ties them to the
//! configured URLs.

pub mod breaker;
pub mod close;
pub mod h5pay;
pub mod kinds;
pub mod object;
pub mod query;
pub mod retry;
pub mod sign;
pub mod signed_call;
pub mod wire;

use std::sync::Arc;

use secrecy::SecretString;
use tracing::Instrument;

pub use signed_call::{Abandon, Abandoned, ClientError};
pub use wire::{CloseRequest, H5PayRequest, PayType, QueryBy, QueryRequest};

use crate::config::{GatewaySettings, RetrySettings};
use crate::outcome::CallResult;
use breaker::Breaker;
use close::CloseAnswer;
use query::{QueryAnswer, QueryExpect};
use signed_call::{Ended, SignedClient};

/// The gateway as the worker calls it: one shared client and the
/// endpoints' URLs.
pub struct Gateway {
    client: SignedClient,
    h5pay_url: reqwest::Url,
    query_url: reqwest::Url,
    close_url: reqwest::Url,
    /// h5pay answers only: queryorder and closeorder answers are always
    /// verified (contract §5.7: nothing unverified moves a payment).
    verify_response_sign: bool,
}

/// The URL of a sibling endpoint: the h5pay URL with its last path segment
/// replaced (`…/v3/h5pay` → `…/v3/queryorder`).
pub fn sibling(h5pay: &reqwest::Url, endpoint: &str) -> reqwest::Url {
    let mut u = h5pay.clone();
    if let Ok(mut segments) = u.path_segments_mut() {
        segments.pop().push(endpoint);
    }
    u
}

impl Gateway {
    pub fn new(
        gateway: &GatewaySettings,
        retry: &RetrySettings,
        breaker: Arc<Breaker>,
    ) -> Result<Self, ClientError> {
        let parse = |u: &str| reqwest::Url::parse(u).map_err(|e| ClientError::Url(e.to_string()));
        let h5pay_url = parse(&gateway.url)?;
        // Set, or the h5pay URL's sibling.
        let endpoint = |set: &str, name: &str| match set {
            "" => Ok(sibling(&h5pay_url, name)),
            set => parse(set),
        };
        Ok(Gateway {
            client: SignedClient::new(gateway, retry, breaker)?,
            query_url: endpoint(&gateway.query_url, "queryorder")?,
            close_url: endpoint(&gateway.close_url, "closeorder")?,
            h5pay_url,
            verify_response_sign: gateway.verify_response_sign,
        })
    }

    /// Places the order for one identity (see [`h5pay::place`]).
    pub async fn h5pay(
        &self,
        req: &H5PayRequest,
        key: &SecretString,
        abandon: Abandon<'_>,
        earlier: Option<&str>,
    ) -> Result<CallResult, Abandoned> {
        h5pay::place(
            &self.client,
            &self.h5pay_url,
            req,
            key,
            self.verify_response_sign,
            abandon,
            earlier,
        )
        .await
    }

    /// Queries an order (read-only, so retried like any transient failure;
    /// retries that run out are no answer). `expect` names what the answer
    /// must echo; its `verify_key` is filled in here: always `key`, whatever
    /// `gateway.verify_response_sign` says.
    pub async fn query(
        &self,
        req: &QueryRequest,
        key: &SecretString,
        expect: QueryExpect<'_>,
        abandon: Abandon<'_>,
    ) -> Result<QueryAnswer, Abandoned> {
        let expect = QueryExpect {
            verify_key: Some(key),
            ..expect
        };
        let body = bytes::Bytes::from(req.signed_body(key));
        let called = self
            .client
            .call(
                &self.query_url,
                body,
                |x| query::classify(x, expect),
                abandon,
                None,
            )
            .instrument(crate::gateway_span!("queryorder"))
            .await?;
        Ok(match called.ended {
            Ended::Decided(a) => a,
            Ended::GaveUp { message, why, .. } => QueryAnswer::NoAnswer(format!(
                "{message} (gave up after {} attempts: {why})",
                called.attempts
            )),
        })
    }

    /// Closes an order with the payment's stored `close_trace_no` and
    /// `close_time` (the identical body on every attempt). The answer is
    /// always verified, whatever `gateway.verify_response_sign` says.
    pub async fn close(
        &self,
        req: &CloseRequest,
        key: &SecretString,
        abandon: Abandon<'_>,
    ) -> Result<CloseAnswer, Abandoned> {
        let verify = Some(key);
        let body = bytes::Bytes::from(req.signed_body(key));
        let called = self
            .client
            .call(
                &self.close_url,
                body,
                |x| close::classify(x, req, verify),
                abandon,
                None,
            )
            .instrument(crate::gateway_span!("closeorder"))
            .await?;
        Ok(match called.ended {
            Ended::Decided(a) => a,
            Ended::GaveUp { message, why, .. } => CloseAnswer::Unknown(format!(
                "{message} (gave up after {} attempts: {why})",
                called.attempts
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use secrecy::SecretString;
    use serde_json::{Map, Value, json};
    use tokio_util::sync::CancellationToken;

    use super::close::CloseAnswer;
    use super::query::{QueryAnswer, QueryExpect};
    use super::*;

    const KEY: &str = "sandbox-key-5f2b9c0e7d1a4b3c";

    /// A gateway on loopback whose `/good/*` answers are signed with
    /// [`KEY`] and whose `/forged/*` answers carry a sign made with another
    /// key; each says paid (queryorder) or closed (closeorder).
    async fn lifecycle_gateway() -> std::net::SocketAddr {
        fn answer(fields: Value, key: &str) -> axum::Json<Value> {
            let mut m: Map<String, Value> = fields.as_object().cloned().unwrap_or_default();
            let s = sign::sign(&m, &SecretString::from(key));
            m.insert("sign".into(), Value::String(s));
            axum::Json(Value::Object(m))
        }
        let paid = json!({"return_code": "SUCCESS", "result_code": "PAY_SUCCESS",
                          "mch_no": "M1", "pay_trace_no": "T1", "trade_no": "TN1",
                          "total_amount": "100"});
        let closed = json!({"return_code": "SUCCESS", "result_code": "PAY_SUCCESS",
                            "mch_no": "M1", "trade_no": "TN1", "close_trace_no": "C1"});
        let route = |fields: Value, key: &'static str| {
            axum::routing::post(move || {
                let fields = fields.clone();
                async move { answer(fields, key) }
            })
        };
        let app = axum::Router::new()
            .route("/good/q", route(paid.clone(), KEY))
            .route("/good/c", route(closed.clone(), KEY))
            .route("/forged/q", route(paid, "a-key-the-worker-does-not-have"))
            .route("/forged/c", route(closed, "a-key-the-worker-does-not-have"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("its address: {e}"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    /// A client with `verify_response_sign = false` whose query and close
    /// URLs are the `which` ones of [`lifecycle_gateway`].
    fn unverifying_client(addr: std::net::SocketAddr, which: &str) -> Gateway {
        let settings = GatewaySettings {
            url: format!("http://{addr}/api/openpay/v3/h5pay"),
            query_url: format!("http://{addr}/{which}/q"),
            close_url: format!("http://{addr}/{which}/c"),
            verify_response_sign: false,
            connect_timeout_ms: 500,
            request_timeout_ms: 2000,
            ..GatewaySettings::default()
        };
        Gateway::new(
            &settings,
            &RetrySettings::default(),
            Arc::new(Breaker::disabled()),
        )
        .unwrap_or_else(|e| panic!("a client: {e}"))
    }

    async fn query_and_close(g: &Gateway) -> (QueryAnswer, CloseAnswer) {
        let key = SecretString::from(KEY);
        let never = CancellationToken::new();
        let abandon = || Abandon {
            any_time: &never,
            before_first: &never,
            unless: None,
        };
        let query = QueryRequest {
            inst_no: "60000001".into(),
            mch_no: "M1".into(),
            query_trace_no: "Q1".into(),
            by: QueryBy::TradeNo("TN1".into()),
        };
        let expect = QueryExpect {
            verify_key: None,
            mch_no: "M1",
            pay_trace_no: "T1",
            pay_time: "20261126101500",
            total_amount: Some(100),
            trade_no: Some("TN1"),
            query_trace_no: "Q1",
        };
        let close = CloseRequest {
            inst_no: "60000001".into(),
            mch_no: "M1".into(),
            close_trace_no: "C1".into(),
            close_time: "20261126120000".into(),
            trade_no: "TN1".into(),
        };
        let q = g
            .query(&query, &key, expect, abandon())
            .await
            .unwrap_or_else(|_| panic!("never abandoned"));
        let c = g
            .close(&close, &key, abandon())
            .await
            .unwrap_or_else(|_| panic!("never abandoned"));
        (q, c)
    }

    #[tokio::test]
    async fn query_and_close_answers_are_verified_even_with_verify_response_sign_off() {
        let addr = lifecycle_gateway().await;
        // Signed with the institution's key: taken, from the set URLs.
        let (q, c) = query_and_close(&unverifying_client(addr, "good")).await;
        assert!(
            matches!(&q, QueryAnswer::Paid { trade_no, .. } if trade_no == "TN1"),
            "{q:?}"
        );
        assert_eq!(c, CloseAnswer::Closed);
        // A sign made with another key moves nothing.
        let (q, c) = query_and_close(&unverifying_client(addr, "forged")).await;
        assert!(
            matches!(&q, QueryAnswer::NoAnswer(m) if m.contains("sign check failed")),
            "{q:?}"
        );
        assert!(
            matches!(&c, CloseAnswer::Unknown(m) if m.contains("sign check failed")),
            "{c:?}"
        );
    }

    #[test]
    fn sibling_endpoints_replace_the_last_path_segment() {
        let u = reqwest::Url::parse("https://gw.example.com/api/openpay/v3/h5pay")
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(
            super::sibling(&u, "queryorder").as_str(),
            "https://gw.example.com/api/openpay/v3/queryorder"
        );
        assert_eq!(
            super::sibling(&u, "closeorder").path(),
            "/api/openpay/v3/closeorder"
        );
    }
}
