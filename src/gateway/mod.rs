//! The gateway edge: wire types, the signing rule, classification of
//! answers, the backoff policy, and the HTTP client that ties them together.

pub mod classify;
pub mod client;
pub mod retry;
pub mod sign;
pub mod types;

pub use client::{Abandoned, GatewayClient};
pub use types::{H5PayRequest, PayType};
