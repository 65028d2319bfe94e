//! The connection to Redis the claims (and the payment state in the same
//! hashes) go through: one Redis or a Redis Cluster, with timeouts that
//! keep a renewal well inside the lease.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind,
    Value,
};

use crate::config::RedisSettings;
use crate::telemetry::metrics::RedisCause;

/// A multiplexed connection to one Redis, or to a Redis Cluster. Both
/// reconnect by themselves; a failing call returns its error and callers
/// retry with their own backoff.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConn {
    /// One Redis: commands on keys of different slots may share a pipeline
    /// (on a cluster each goes to its own node).
    pub fn is_single(&self) -> bool {
        matches!(self, RedisConn::Single(_))
    }

    /// Sends `pipe`, whose scripts go by hash (`EVALSHA`, built by
    /// [`evalsha`]), and once more after loading `script` when Redis does
    /// not know it (a restart, a failover, a new node). `Script` does this
    /// for a lone invocation, not in a pipeline.
    pub async fn query_scripted<T: FromRedisValue>(
        &mut self,
        pipe: &Pipeline,
        script: &Script,
    ) -> Result<T, RedisError> {
        match pipe.query_async(self).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.load_async(self).await?;
                pipe.query_async(self).await
            }
            r => r,
        }
    }

    /// `WAIT replicas timeout_ms` on the connection that wrote `key` (on a
    /// cluster: the node that owns its slot; a plain WAIT would go to every
    /// master). Returns how many replicas confirmed.
    pub async fn wait_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout_ms: u64,
    ) -> Result<i64, RedisError> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        match self {
            RedisConn::Single(c) => cmd.query_async(c).await,
            RedisConn::Cluster(c) => {
                use redis::cluster_routing::{
                    Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
                };
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let v = c
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(v)?)
            }
        }
    }
}

/// `EVALSHA` of `script` on one key, its arguments to be added: for a
/// script sent in a pipeline ([`RedisConn::query_scripted`]). Sized for
/// the `args` more arguments of `bytes` in all the caller adds, so the
/// command's buffer is not reallocated argument by argument.
pub fn evalsha(script: &Script, key: &str, args: usize, bytes: usize) -> Cmd {
    let hash = script.get_hash();
    let mut cmd = Cmd::with_capacity(4 + args, 16 + hash.len() + key.len() + bytes);
    cmd.arg("EVALSHA").arg(hash).arg(1).arg(key);
    cmd
}

/// A node's connection settings, without the `CLIENT SETINFO` calls the
/// client would otherwise send after connecting: a Redis ACL user needs no
/// permission beyond the commands the product runs (deploy/redis/users.acl;
/// the subcommand does not exist before Redis 7.2 either).
fn connection_info(url: &str) -> Result<redis::ConnectionInfo, RedisError> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    Ok(info.set_redis_settings(settings))
}

/// Connects lazily: a Redis that is down at start-up is waited for, not fatal.
pub fn connect(settings: &RedisSettings) -> Result<RedisConn, RedisError> {
    // Fail fast and let callers retry with their own backoff: a request
    // stuck on a dead connection must not hold an intent for long, and a
    // slow renewal must end well before the lease could lapse.
    let timeout = settings.response_timeout();
    if settings.cluster {
        // Set on the builder, the response timeout also bounds a whole call
        // with its retries through a failover (per-connection timeouts alone
        // would not): a lease renewal never hangs past the lease (§14).
        let seeds = settings
            .seeds()
            .map(|u| connection_info(u.expose()))
            .collect::<Result<Vec<_>, _>>()?;
        let client = redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()?;
        return Ok(RedisConn::Cluster(
            client.get_pending_async_connection_with_config(
                redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout),
            ),
        ));
    }
    let client = redis::Client::open(connection_info(settings.url.expose())?)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client, config).map(RedisConn::Single)
}

/// Deletes every key under `prefix:` on a single Redis (the demo's, a test's
/// or a benchmark run's own keys); returns how many. Not for a cluster,
/// where SCAN sees one node: there the keys expire with their TTL.
pub async fn remove_keys(url: &str, prefix: &str) -> Result<u64, RedisError> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let mut cursor = 0u64;
    let mut removed = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(5000)
            .query_async(&mut c)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK").arg(keys).query_async(&mut c).await?;
            removed += n;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Why a read or write of the state in Redis failed: the claims, the
/// payments and the due checks all return it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("unexpected reply from the claim script: {0:?}")]
    Reply(Vec<String>),
    /// `redis.wait_replicas` (contract §14): the write reached fewer
    /// replicas within the wait; retried like any Redis error, and nothing
    /// is published or acknowledged on it.
    #[error("the write reached {got} of {wanted} replicas within {timeout_ms} ms")]
    Replicas {
        wanted: u32,
        got: i64,
        timeout_ms: u64,
    },
}

impl StoreError {
    /// The cause, as metrics label it.
    pub fn cause(&self) -> RedisCause {
        match self {
            StoreError::Redis(e) if e.is_timeout() => RedisCause::Timeout,
            StoreError::Redis(e)
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() =>
            {
                RedisCause::Connection
            }
            StoreError::Redis(e) => match e.code() {
                Some("WRONGTYPE") => RedisCause::WrongType,
                Some("ERR") if is_script_error(e) => RedisCause::Script,
                Some("NOPERM") => RedisCause::NoPermission,
                Some("CROSSSLOT") => RedisCause::CrossSlot,
                _ if matches!(
                    e.kind(),
                    redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse
                ) =>
                {
                    RedisCause::Reply
                }
                _ => RedisCause::Redis,
            },
            StoreError::Reply(_) => RedisCause::Reply,
            StoreError::Replicas { .. } => RedisCause::Replicas,
        }
    }

    /// A reply the worker cannot use, which asking again will not change
    /// (a key of the wrong type, a script error, an unexpected reply): the
    /// intent is handed back after a few tries instead of waiting forever
    /// (contract §5.13). Everything else (connection loss, timeouts,
    /// LOADING, TRYAGAIN, a failover's READONLY, OOM) may pass: keep trying.
    pub fn is_unusable(&self) -> bool {
        self.cause().is_unusable()
    }
}

/// An error raised by the script itself, not by the server's state.
fn is_script_error(e: &RedisError) -> bool {
    let text = e.to_string();
    text.contains("script") || text.contains("Script")
}
