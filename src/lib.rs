//! h5pay-worker turns payment intents from RabbitMQ into payable H5 links.
//!
//! The path of an intent, one module per step:
//!
//! 1. [`intent`]: message bytes → read ([`intent::read`]) → validated and
//!    normalised ([`intent::validate`]), or a named reason why not.
//! 2. [`claim`]: the Redis claim on the intent's identity → claimed, replay
//!    of a stored outcome, conflict, or wait for another worker.
//! 3. [`gateway`]: the signed H5 pay call ([`gateway::h5pay`]) over the
//!    shared signed-call client with retries and the circuit breaker,
//!    classified into an [`outcome`].
//! 4. [`result_event`]: the outcome → the result event and its routing.
//! 5. [`amqp`]: topology, publishing confirmed results, settling deliveries.
//!
//! Then the payment, until it is final:
//!
//! 6. [`notify`]: the gateway's notify → verified evidence.
//! 7. [`reconcile`]: due checks → queryorder / closeorder → evidence.
//! 8. [`payment`]: evidence → one compare-and-set transition → a confirmed
//!    payment event.
//!
//! [`pipeline`] runs those steps for one delivery and says what to do with
//! it; [`worker`] runs the pipeline with bounded concurrency and keeps the
//! broker session alive. Under them: [`domain`] (the contract's vocabulary)
//! and [`sink`] (the ports events leave through). Around them: [`config`]
//! and [`keys`] (settings and institution keys), [`signals`],
//! [`reconnect`] (the one wait between tries to reach RabbitMQ or Redis
//! again), [`admin`] and [`http_server`] (health and metrics over HTTP),
//! [`telemetry`] (logs, and every metric in
//! [`telemetry::metrics`]), [`text`] (outside text cut to size),
//! [`sandbox`] (the gateway simulator), [`cli`] (the commands), and
//! [`allocator`] (jemalloc for every binary).
//!
//! ## Layers
//!
//! A module imports only from the rows above its own ([`LAYERS`]; the test
//! `layers` reads every `crate::` path of `src/` and fails on one that
//! points down or sideways):
//!
//! 1. `text`, `outcome`, `reconnect`, `allocator`, `keys`: no import of
//!    the crate
//! 2. `domain`: the contract's vocabulary every layer reads
//! 3. `config`
//! 4. `telemetry`, `signals`
//! 5. `sink`, `http_server`, `gateway`: the ports, the HTTP edges
//! 6. `intent`
//! 7. `claim`, `result_event`, `sandbox`
//! 8. `payment`, `admin`
//! 9. `amqp`
//! 10. `reconcile`
//! 11. `notify`, `pipeline`
//! 12. `worker`
//! 13. `fuzz_targets`
//! 14. `cli`

pub mod admin;
pub mod allocator;
pub mod amqp;
pub mod claim;
pub mod cli;
pub mod config;
pub mod domain;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod gateway;
pub mod http_server;
pub mod intent;
pub mod keys;
pub mod notify;
pub mod outcome;
pub mod payment;
pub mod pipeline;
pub mod reconcile;
pub mod reconnect;
pub mod result_event;
pub mod sandbox;
pub mod signals;
pub mod sink;
pub mod telemetry;
pub mod text;
pub mod worker;

/// The layer order of the modules above, lowest first: a module imports
/// only from earlier rows.
#[doc(hidden)]
pub const LAYERS: &[&[&str]] = &[
    &["text", "outcome", "reconnect", "allocator", "keys"],
    &["domain"],
    &["config"],
    &["telemetry", "signals"],
    &["sink", "http_server", "gateway"],
    &["intent"],
    &["claim", "result_event", "sandbox"],
    &["payment", "admin"],
    &["amqp"],
    &["reconcile"],
    &["notify", "pipeline"],
    &["worker"],
    &["fuzz_targets"],
    &["cli"],
];
