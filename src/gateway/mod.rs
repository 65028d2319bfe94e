//! The gateway edge. [`signed_call`] is the HTTP client every endpoint
//! shares (timeouts, size cap, the attempt loop with [`retry`] and the
//! [`breaker`]); [`sign`] is the MD5 rule; [`wire`] the request and answer
//! types; [`h5pay`] places an order and classifies the answer. [`Gateway`]
//! ties them to the configured URLs.

pub mod breaker;
pub mod h5pay;
pub mod retry;
pub mod sign;
pub mod signed_call;
pub mod wire;

use std::sync::Arc;

use secrecy::SecretString;

pub use signed_call::{Abandon, Abandoned, ClientError};
pub use wire::{H5PayRequest, PayType};

use crate::config::{GatewaySettings, RetrySettings};
use crate::outcome::CallResult;
use breaker::Breaker;
use signed_call::SignedClient;

/// The gateway as the worker calls it: one shared client and the
/// endpoints' URLs.
pub struct Gateway {
    client: SignedClient,
    h5pay_url: reqwest::Url,
    verify_response_sign: bool,
}

impl Gateway {
    pub fn new(
        gateway: &GatewaySettings,
        retry: &RetrySettings,
        breaker: Arc<Breaker>,
    ) -> Result<Self, ClientError> {
        let h5pay_url =
            reqwest::Url::parse(&gateway.url).map_err(|e| ClientError::Url(e.to_string()))?;
        Ok(Gateway {
            client: SignedClient::new(gateway, retry, breaker)?,
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
}
