//! The ground floor: the contract's vocabulary that every layer reads, with
//! no I/O and no import of the crate's other modules but [`crate::text`].
//!
//! * [`digest`]: the digest every id and fingerprint is made of.
//! * [`echo`]: the one echo check of answers and notifies.
//! * [`fields`]: the identity alphabet, a `notify_url`.
//! * [`payment`]: the words of payment events (state, anomaly kinds).

pub mod digest;
pub mod echo;
pub mod fields;
pub mod payment;

pub use digest::digest_id;
pub use echo::{Echoes, Presence, is_same_amount};
pub use fields::{check_notify_url, is_identifier};
pub use payment::{Anomaly, AnomalyKind, EventState};
