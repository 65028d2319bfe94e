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
//! broker session alive. Around them: [`config`] and [`keys`] (settings and
//! institution keys), [`signals`], [`reconnect`] (the one wait between
//! tries to reach RabbitMQ or Redis again), [`admin`] and [`http_server`] (health and
//! metrics over HTTP), [`telemetry`] (logs, and every metric in
//! [`telemetry::metrics`]), [`text`] (outside text cut to size),
//! [`sandbox`] (the gateway simulator), [`cli`] (the commands), and
//! [`allocator`] (jemalloc for every binary).

pub mod admin;
pub mod allocator;
pub mod amqp;
pub mod claim;
pub mod cli;
pub mod config;
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
pub mod telemetry;
pub mod text;
pub mod worker;
