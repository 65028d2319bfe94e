//! One integration-test binary (one link step) over the real local
//! RabbitMQ and Redis and the sandbox over HTTP. Every test isolates itself
//! with its own names and Redis prefix (see `support`), so they run in
//! parallel. `make services` starts RabbitMQ and Redis when they are down.

mod breaker;
mod browser;
mod cli;
mod dashboards;
mod deploy_files;
mod fuzz_corpus;
mod gateway_client;
mod http_limits;
mod layers;
mod least_privilege;
#[path = "../common/net.rs"]
mod net;
mod notify;
mod pipeline_order;
#[path = "../common/proxy.rs"]
mod proxy;
mod publishing;
mod reconcile;
mod redis_cluster;
mod replicas;
mod sandbox_api;
mod schemas;
mod sign_vectors;
mod support;
mod terminal_output;
mod traces;
mod trust;
#[path = "../common/vhost.rs"]
mod vhost;
mod worker_dedup;
mod worker_flow;
mod worker_ops;
