//! The claim on an intent identity in Redis (contract §5.1–5.5).
//!
//! One hash per identity, `<key_prefix>:<inst_no>:<mch_no>:<pay_trace_no>`,
//! and one Lua script per transition (claim, renew, store, confirm,
//! release), each touching only that key so the same code runs on Redis
//! Cluster. Renew, store and release are compare-and-set on the owner token.
//! Lease expiry uses the Redis server's clock, so workers' clocks may drift.
//!
//! What to do with a claim's answer is decided by [`next_step`], a plain
//! function. The connection (one Redis or a cluster) is `conn`'s.

mod conn;
pub mod lease;

use std::time::Duration;

use redis::{RedisError, Script};

use crate::config::{DuplicatePolicy, RedisSettings};
use crate::intent::Identity;

// The connection is its own concern (one Redis or a cluster, timeouts);
// its paths stay `claim::RedisConn`, `claim::connect`.
pub use conn::{RedisConn, StoreError, connect, remove_keys};

/// The answer of the claim script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimReply {
    /// This worker owns the identity now and may call the gateway with
    /// `pay_time` and what was stored as sent with the claim (`sent`, JSON;
    /// empty for a claim made before it was stored). `takeover`: an earlier
    /// owner's lease had expired, or an earlier attempt of this delivery
    /// lost its claim mid-call, so the gateway may already have seen this
    /// request.
    Claimed {
        pay_time: String,
        takeover: bool,
        sent: String,
    },
    /// An outcome is stored; `confirmed` once its event was confirmed.
    Done { event: String, confirmed: bool },
    /// Seen before with other parameters (or another explicit pay_time).
    Conflict { stored_pay_time: String },
    /// Another worker holds a live lease.
    Wait { lease_left: Duration },
    /// Never seen, and too old to start.
    Expired,
}

/// What a claim asks for.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// This attempt's owner token.
    pub token: &'a str,
    /// The parameters that must match for a repeat to be a duplicate.
    pub fingerprint: &'a str,
    /// The pay_time to fix if the identity is new.
    pub pay_time: &'a str,
    /// The intent named its pay_time: a different stored one is a conflict.
    pub pay_time_explicit: bool,
    /// Older than `worker.max_intent_age_secs`: not claimed if new.
    pub too_old: bool,
    /// What is sent (JSON), stored with a new claim.
    pub sent: &'a str,
    /// An earlier attempt of this delivery may have reached the gateway
    /// (its claim vanished mid-call): the claim remembers it, and answers
    /// as a takeover (contract §5.6).
    pub reached: bool,
}

/// A decided outcome to store.
#[derive(Debug, Clone, Copy)]
pub struct StoredOutcome<'a> {
    /// The result event, as published.
    pub event: &'a [u8],
    /// Its payment is followed: the state starts `open`.
    pub followed: bool,
    /// The gateway's order number, if it gave one.
    pub trade_no: Option<&'a str>,
    /// Added in the store's round trip: the payment's first check. One
    /// Redis only ([`ClaimStore::shares_round_trips`]): a cluster refuses a
    /// pipeline over two slots (`CROSSSLOT`).
    pub first_check: Option<&'a SortedEntry<'a>>,
}

/// A sorted-set entry added (`ZADD NX`: one already there stays) in the
/// same round trip as a store: the payment's first check, which must be
/// durable before the intent's ack (contract §12). What it means is the
/// reconciler's; the claim only saves the round trip. It is added even
/// when the claim was lost: a check of an identity that another owner
/// stores, or nobody, finds it pending or gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedEntry<'a> {
    pub key: &'a str,
    pub member: String,
    pub score: i64,
}

impl SortedEntry<'_> {
    fn zadd_nx(&self) -> redis::Cmd {
        // Sized up front: grown from empty, its buffer was reallocated at
        // nearly every argument (BENCHMARKS.md, fifth sitting).
        let mut cmd = redis::Cmd::with_capacity(5, 32 + self.key.len() + self.member.len());
        cmd.arg("ZADD")
            .arg(self.key)
            .arg("NX")
            .arg(self.score)
            .arg(&self.member);
        cmd
    }
}

/// How a claim whose call never started is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Nobody called the gateway for this identity: forget it entirely.
    Forget,
    /// A takeover: an earlier owner may have called, so every later call
    /// must send the same request (the stored pay_time stays).
    KeepPayTime,
}

/// What the worker does next with a claim's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStep {
    /// Call the gateway.
    Call {
        pay_time: String,
        takeover: bool,
        sent: String,
    },
    /// Publish the stored event again, `duplicate` set as given.
    Replay { event: String, duplicate: bool },
    /// `drop` policy: acknowledge without publishing.
    AckWithoutPublishing,
    /// Publish a `conflict` event.
    Conflict { stored_pay_time: String },
    /// Publish an `expired` event.
    Expired,
    /// Wait, then ask again.
    Wait(Duration),
}

/// Longest pause between two looks at another worker's claim.
pub const MAX_WAIT_POLL: Duration = Duration::from_millis(250);

/// The dedup decision: what a claim's answer means for this delivery.
/// `waited` is how many times this delivery has already waited (the poll
/// interval grows with it, capped by the lease left).
pub fn next_step(reply: ClaimReply, duplicates: DuplicatePolicy, waited: u32) -> ClaimStep {
    match reply {
        ClaimReply::Claimed {
            pay_time,
            takeover,
            sent,
        } => ClaimStep::Call {
            pay_time,
            takeover,
            sent,
        },
        ClaimReply::Done {
            confirmed: true, ..
        } if duplicates == DuplicatePolicy::Drop => ClaimStep::AckWithoutPublishing,
        ClaimReply::Done { event, confirmed } => ClaimStep::Replay {
            event,
            duplicate: confirmed,
        },
        ClaimReply::Conflict { stored_pay_time } => ClaimStep::Conflict { stored_pay_time },
        ClaimReply::Expired => ClaimStep::Expired,
        ClaimReply::Wait { lease_left } => {
            let poll = Duration::from_millis(10u64.saturating_mul(1 << waited.min(5)));
            // +1 ms: look again just after the lease would lapse.
            ClaimStep::Wait(
                poll.min(MAX_WAIT_POLL)
                    .min(lease_left + Duration::from_millis(1)),
            )
        }
    }
}

/// Reads the claim script's reply.
pub fn parse_claim_reply(reply: Vec<String>) -> Result<ClaimReply, StoreError> {
    let parsed = match reply.as_slice() {
        [s, pay_time, takeover, sent] if s == "claimed" => Some(ClaimReply::Claimed {
            pay_time: pay_time.clone(),
            takeover: takeover == "1",
            sent: sent.clone(),
        }),
        [s, event, confirmed] if s == "done" => Some(ClaimReply::Done {
            event: event.clone(),
            confirmed: confirmed == "1",
        }),
        [s, pt] if s == "conflict" => Some(ClaimReply::Conflict {
            stored_pay_time: pt.clone(),
        }),
        [s, ms] if s == "wait" => ms.parse::<u64>().ok().map(|ms| ClaimReply::Wait {
            lease_left: Duration::from_millis(ms),
        }),
        [s] if s == "expired" => Some(ClaimReply::Expired),
        _ => None,
    };
    parsed.ok_or(StoreError::Reply(reply))
}

/// The claim protocol's scripts as the worker sends them. Public for the
/// bench's skeleton, which does the worker's Redis I/O without its work.
#[doc(hidden)]
pub mod scripts {
    pub const CLAIM: &str = include_str!("claim.lua");
    pub const STORE: &str = include_str!("store.lua");
    pub const CONFIRM: &str = include_str!("confirm.lua");
}

struct Scripts {
    claim: Script,
    renew: Script,
    store: Script,
    confirm: Script,
    release: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            claim: Script::new(scripts::CLAIM),
            renew: Script::new(include_str!("renew.lua")),
            store: Script::new(scripts::STORE),
            confirm: Script::new(scripts::CONFIRM),
            release: Script::new(include_str!("release.lua")),
        }
    }
}

/// The Redis edge of the claim protocol. Cheap to clone: the connection is
/// multiplexed and reconnects by itself.
#[derive(Clone)]
pub struct ClaimStore {
    conn: RedisConn,
    /// Lease renewals (claims and checks) and the readiness PING. With
    /// `redis.wait_replicas` on, a connection of their own: Redis answers
    /// one connection's commands in order, so a `WAIT` holds up everything
    /// sent after it on its connection — for its whole timeout when a
    /// replica is missing — and renewals queued there would time out until
    /// a live call's lease lapsed (contract §14: a failover cannot hang a
    /// renewal past the lease).
    lease_conn: RedisConn,
    prefix: String,
    lease_ms: u64,
    retention_secs: u64,
    /// `redis.wait_replicas` and the WAIT timeout (ms), when on.
    wait: Option<(u32, u64)>,
    scripts: std::sync::Arc<Scripts>,
}

impl ClaimStore {
    /// Connects (lazily) to the Redis of `settings`; with
    /// `redis.wait_replicas` on, leases get a connection of their own.
    pub fn open(settings: &RedisSettings) -> Result<Self, RedisError> {
        let mut store = Self::new(connect(settings)?, settings);
        if settings.wait_replicas > 0 {
            store.lease_conn = connect(settings)?;
        }
        Ok(store)
    }

    /// On one connection for everything (no `WAIT` may then hold up a
    /// renewal only when `redis.wait_replicas` is 0: see [`Self::open`]).
    pub fn new(conn: RedisConn, settings: &RedisSettings) -> Self {
        ClaimStore {
            lease_conn: conn.clone(),
            conn,
            prefix: settings.key_prefix.clone(),
            lease_ms: settings.lease_ms,
            retention_secs: settings.retention_secs,
            wait: (settings.wait_replicas > 0).then(|| {
                (
                    settings.wait_replicas,
                    settings.wait_timeout().as_millis() as u64,
                )
            }),
            scripts: std::sync::Arc::new(Scripts::new()),
        }
    }

    /// The shared connection (payment state lives in the same hash).
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// The connection for leases, where no `WAIT` is ever sent.
    pub fn lease_conn(&self) -> RedisConn {
        self.lease_conn.clone()
    }

    /// After a state write to `key`: with `redis.wait_replicas` on, waits
    /// until that many replicas have it (contract §14); fewer is an error.
    pub async fn replicated(&self, key: &str) -> Result<(), StoreError> {
        let Some((wanted, timeout_ms)) = self.wait else {
            return Ok(());
        };
        let mut conn = self.conn.clone();
        let got = conn.wait_replicas(key, wanted, timeout_ms).await?;
        if got < i64::from(wanted) {
            return Err(StoreError::Replicas {
                wanted,
                got,
                timeout_ms,
            });
        }
        Ok(())
    }

    /// The identity's key. The identity alphabet has no `:`, so keys never
    /// collide.
    pub fn key(&self, id: &Identity) -> String {
        // Built by hand: `format!` costs several times as much, and every
        // Redis call of an intent, a notify and a check names its key.
        let parts = [
            self.prefix.as_str(),
            &id.inst_no,
            &id.mch_no,
            &id.pay_trace_no,
        ];
        let mut key = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            key.push_str(p);
        }
        key
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// `redis.retention_secs`: how long an identity's state is kept.
    pub fn retention_secs(&self) -> u64 {
        self.retention_secs
    }

    /// `redis.key_prefix`: other keys of the product (the reconciler's
    /// schedule) live under it too.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub async fn claim(
        &self,
        id: &Identity,
        req: &ClaimRequest<'_>,
    ) -> Result<ClaimReply, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.key(id);
        let reply: Vec<String> = self
            .scripts
            .claim
            .key(&key)
            .arg(req.token)
            .arg(req.fingerprint)
            .arg(req.pay_time)
            .arg(if req.pay_time_explicit { "1" } else { "0" })
            .arg(self.lease_ms)
            .arg(self.retention_secs)
            .arg(if req.too_old { "1" } else { "0" })
            .arg(req.sent)
            .arg(if req.reached { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        let reply = parse_claim_reply(reply)?;
        // Only a claim writes: it must survive a failover before the call.
        if matches!(reply, ClaimReply::Claimed { .. }) {
            self.replicated(&key).await?;
        }
        Ok(reply)
    }

    /// Extends the lease; `false` when this worker no longer owns the claim.
    pub async fn renew(&self, id: &Identity, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.lease_conn.clone();
        let n: i64 = self
            .scripts
            .renew
            .key(self.key(id))
            .arg(token)
            .arg(self.lease_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Whether a store can carry the payment's first check in its round
    /// trip: on one Redis. On a cluster the check's key lives on another
    /// node, whose failure must not hold back the stores (and so the
    /// results) of identities that live elsewhere (contract §14): the
    /// caller schedules it apart.
    pub fn shares_round_trips(&self) -> bool {
        self.conn.is_single()
    }

    /// Stores the outcome's event, and its first check if given, in one
    /// round trip; `false` when the claim was lost. A followed outcome
    /// starts its payment `open` (contract §10).
    pub async fn store(
        &self,
        id: &Identity,
        token: &str,
        outcome: &StoredOutcome<'_>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.key(id);
        let script = &self.scripts.store;
        let mut pipe = redis::pipe();
        let trade_no = outcome.trade_no.unwrap_or("");
        let more = token.len() + outcome.event.len() + trade_no.len() + 24;
        pipe.add_command(conn::evalsha(script, &key, 5, more))
            .arg(token)
            .arg(outcome.event)
            .arg(self.retention_secs)
            .arg(if outcome.followed { "1" } else { "0" })
            .arg(trade_no);
        let n = match outcome.first_check {
            None => conn.query_scripted::<(i64,)>(&pipe, script).await?.0,
            Some(check) => {
                pipe.add_command(check.zadd_nx());
                // One WAIT (below) covers both writes of the connection.
                conn.query_scripted::<(i64, i64)>(&pipe, script).await?.0
            }
        };
        if n == 1 {
            self.replicated(&key).await?;
        }
        Ok(n == 1)
    }

    /// Marks the stored outcome's event as confirmed by the broker.
    pub async fn mark_confirmed(&self, id: &Identity) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .confirm
            .key(self.key(id))
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Gives up a claim whose call this owner never started.
    pub async fn release(
        &self,
        id: &Identity,
        token: &str,
        how: Release,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .release
            .key(self.key(id))
            .arg(token)
            .arg(match how {
                Release::Forget => "1",
                Release::KeepPayTime => "0",
            })
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Whether Redis answers: on a cluster, whether any master does, so
    /// readiness stays up through one master's failure (contract §14: only
    /// the intents whose keys live there wait).
    pub async fn ping(&self) -> Result<(), RedisError> {
        match self.lease_conn.clone() {
            RedisConn::Single(mut c) => redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ()),
            RedisConn::Cluster(mut c) => {
                use redis::cluster_routing::{
                    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo,
                };
                c.route_command(
                    redis::cmd("PING"),
                    RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::OneSucceeded),
                    )),
                )
                .await
                .map(|_| ())
            }
        }
    }
}

/// A fresh owner token: 128 random bits.
pub fn new_token() -> String {
    use rand::RngExt;
    crate::domain::digest::hex16(&rand::rng().random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn replies_parse() {
        assert_eq!(
            parse_claim_reply(s(&["claimed", "20260101000000", "1", "{}"])).ok(),
            Some(ClaimReply::Claimed {
                pay_time: "20260101000000".into(),
                takeover: true,
                sent: "{}".into(),
            })
        );
        assert_eq!(
            parse_claim_reply(s(&["wait", "1500"])).ok(),
            Some(ClaimReply::Wait {
                lease_left: Duration::from_millis(1500)
            })
        );
        assert_eq!(
            parse_claim_reply(s(&["expired"])).ok(),
            Some(ClaimReply::Expired)
        );
        assert!(parse_claim_reply(s(&["wait", "soon"])).is_err());
        assert!(parse_claim_reply(s(&["what"])).is_err());
    }

    #[test]
    fn the_dedup_decision_table() {
        use DuplicatePolicy::{Drop, Republish};
        let done = |confirmed| ClaimReply::Done {
            event: "{}".into(),
            confirmed,
        };
        assert_eq!(
            next_step(done(false), Drop, 0),
            ClaimStep::Replay {
                event: "{}".into(),
                duplicate: false
            },
            "an unconfirmed outcome is always published, even under drop"
        );
        assert_eq!(
            next_step(done(true), Drop, 0),
            ClaimStep::AckWithoutPublishing
        );
        assert_eq!(
            next_step(done(true), Republish, 0),
            ClaimStep::Replay {
                event: "{}".into(),
                duplicate: true
            }
        );
        assert_eq!(
            next_step(
                ClaimReply::Conflict {
                    stored_pay_time: "p".into()
                },
                Republish,
                0
            ),
            ClaimStep::Conflict {
                stored_pay_time: "p".into()
            }
        );
        assert_eq!(
            next_step(ClaimReply::Expired, Republish, 0),
            ClaimStep::Expired
        );
    }

    #[test]
    fn waiting_polls_faster_than_the_lease_and_backs_off() {
        let wait = |left_ms, waited| {
            next_step(
                ClaimReply::Wait {
                    lease_left: Duration::from_millis(left_ms),
                },
                DuplicatePolicy::Republish,
                waited,
            )
        };
        assert_eq!(wait(30_000, 0), ClaimStep::Wait(Duration::from_millis(10)));
        assert_eq!(wait(30_000, 3), ClaimStep::Wait(Duration::from_millis(80)));
        assert_eq!(wait(30_000, 30), ClaimStep::Wait(MAX_WAIT_POLL));
        assert_eq!(wait(4, 30), ClaimStep::Wait(Duration::from_millis(5)));
    }
}
