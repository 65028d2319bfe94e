//! The ground floor: the contract's vocabulary that every layer reads, with
//! no I/O and no import of the crate's other modules but [`crate::text`].
//!
//! * [`digest`]: the digest every id and fingerprint is made of.
//! * [`fields`]: the identity alphabet, a `notify_url`.
//! * [`payment`]: the words of payment events (state, anomaly kinds).

pub mod digest;
pub mod fields;
pub mod payment;

pub use digest::digest_id;
pub use fields::{check_notify_url, is_identifier, is_same_amount};
pub use payment::{Anomaly, AnomalyKind, EventState};
