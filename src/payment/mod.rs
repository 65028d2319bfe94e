//! After the result event (contract §10): the payment's state per identity
//! and the payment events that report it. Notifies ([`crate::notify`]) and
//! queries bring evidence; [`apply`] turns verified evidence into at most
//! one transition and its confirmed event.
//!
//! * [`state`]: the states and the rules that move them (pure).
//! * [`event`]: the payment event, `h5pay.payment.v1`.
//! * [`store`]: the identity's hash in Redis, compare-and-set scripts.
//! * [`apply`]: view → rules → transition → publish → confirm.

pub mod apply;
pub mod event;
pub mod state;
pub mod store;

pub use event::{AnomalyKind, EventState, EvidenceSource, PaymentEvent, Sent};
pub use state::{Evidence, Known, PaymentState};
pub use store::{PaymentStore, View};
