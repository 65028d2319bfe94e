//! The gateway edge. [`signed_call`] is the HTTP client every endpoint
//! shares (timeouts, size cap, the attempt loop with [`retry`] and the
//! [`breaker`]); [`sign`] is the MD5 rule; [`wire`] the request and answer
//! types; [`h5pay`] places an order and classifies the answer; [`query`]
//! and [`close`] follow it afterwards. [`Gateway`] ties them to the
//! configured URLs.

pub mod breaker;
pub mod close;
pub mod h5pay;
pub mod kinds;
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
    /// must echo; its `verify_key` is filled in here.
    pub async fn query(
        &self,
        req: &QueryRequest,
        key: &SecretString,
        expect: QueryExpect<'_>,
        abandon: Abandon<'_>,
    ) -> Result<QueryAnswer, Abandoned> {
        let expect = QueryExpect {
            verify_key: self.verify_response_sign.then_some(key),
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
            .instrument(crate::step_span!(
                "queryorder",
                otel.name = "POST /api/openpay/v3/queryorder",
                otel.kind = "client",
                http.request.method = "POST",
            ))
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
    /// `close_time` (the identical body on every attempt).
    pub async fn close(
        &self,
        req: &CloseRequest,
        key: &SecretString,
        abandon: Abandon<'_>,
    ) -> Result<CloseAnswer, Abandoned> {
        let verify = self.verify_response_sign.then_some(key);
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
            .instrument(crate::step_span!(
                "closeorder",
                otel.name = "POST /api/openpay/v3/closeorder",
                otel.kind = "client",
                http.request.method = "POST",
            ))
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
