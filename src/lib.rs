//! h5pay-worker turns payment intents from RabbitMQ into payable H5 links.
//!
//! The path of an intent, one module per step:
//!
//! 1. [`intent`]: message bytes → a validated, normalised intent (or a
//!    named reason why not).
//! 2. [`claim`]: the Redis claim on the intent's identity → claimed, replay
//!    of a stored outcome, conflict, or wait for another worker.
//! 3. [`gateway`]: the signed H5 pay call with retries, classified into an
//!    [`outcome`]; [`breaker`] pauses attempts when the gateway is down.
//! 4. [`result_event`]: the outcome → the result event and its routing.
//! 5. [`amqp`]: topology, consuming intents, publishing confirmed results.
//!
//! [`worker`] runs the pipeline with bounded concurrency, [`config`] loads
//! the settings, [`admin`] serves health and metrics, [`sandbox`] simulates
//! the gateway, [`cli`] holds the operator commands, and [`allocator`] sets
//! jemalloc for every binary.

pub mod admin;
pub mod allocator;
pub mod amqp;
pub mod breaker;
pub mod claim;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod gateway;
pub mod http_server;
pub mod intent;
pub mod outcome;
pub mod pipeline;
pub mod result_event;
pub mod sandbox;
pub mod telemetry;
pub mod text;
pub mod worker;
