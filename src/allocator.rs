//! The process allocator, for every binary of the crate (the worker, the
//! benchmark and its skeleton, the tests), so they compare like with like.
//!
//! jemalloc: per intent the worker allocates and frees many small objects
//! across two runtime threads (parsed intents, signed parameters, events,
//! log lines); glibc malloc spent 15–19 % of the worker's CPU on that
//! (BENCHMARKS.md). One arena and a one-second decay keep the resident set
//! no larger than glibc's (≤ 64 MiB with 1000 intents in flight); the
//! thread caches keep the arena's lock cold.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Read by jemalloc at start-up; `_RJEM_MALLOC_CONF` in the environment
/// still overrides it.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &u8 = &b"narenas:1,dirty_decay_ms:1000\0"[0];
