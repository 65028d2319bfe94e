//! The reconciler's Redis edge (contract §12, §14): the schedule of due
//! checks, sorted sets (member `inst_no:mch_no:pay_trace_no`, score the due
//! time in ms) picked up with a lease ([`due.lua`]); the identity's lease
//! while a check works; the close pair; the last check.
//!
//! The schedule is spread over `reconcile.schedule_shards` keys
//! `<prefix>:checks:<n>` (a member's shard is a hash of it), so on a Redis
//! Cluster it lives on several nodes and a failed node delays only its
//! share. With one shard the key is `<prefix>:checks`, the one key of
//! earlier versions; with more, that key is still drained, so an upgrade
//! loses no check. A picked-up check is rescheduled or removed in the key
//! it came from.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use redis::Script;

use crate::claim::{ClaimStore, RedisConn, StoreError};
use crate::intent::Identity;

/// A check's hold on its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    Taken,
    /// Another check (or the intent's own claim) holds it for this long.
    Busy(u64),
    /// The identity's state is gone (expired).
    Gone,
}

/// A due check, as picked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub member: String,
    pub due_ms: i64,
    /// Which of the schedule's keys holds it.
    pub key: usize,
}

struct Scripts {
    due: Script,
    lease: Script,
    release: Script,
    close: Script,
    note: Script,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct ChecksStore {
    claims: ClaimStore,
    /// The shards, then (with more than one) the key of earlier versions.
    keys: Arc<[String]>,
    shards: usize,
    /// Where the next pick-up starts, so no shard is always served last.
    cursor: Arc<AtomicUsize>,
    scripts: Arc<Scripts>,
}

/// The shard of a member among `shards` (FNV-1a: stable across processes
/// and versions, which every replica and the receiver must agree on).
pub fn shard_of(member: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % (shards.max(1) as u64)).unwrap_or(0)
}

/// The schedule's member for an identity.
pub fn member(id: &Identity) -> String {
    // Built by hand: `format!` of three strings costs several times as
    // much, once per intent.
    let (a, b, c) = (&id.inst_no, &id.mch_no, &id.pay_trace_no);
    let mut m = String::with_capacity(a.len() + b.len() + c.len() + 2);
    m.push_str(a);
    m.push(':');
    m.push_str(b);
    m.push(':');
    m.push_str(c);
    m
}

/// The identity a member names (the identity alphabet has no `:`).
pub fn identity(member: &str) -> Option<Identity> {
    let mut parts = member.split(':');
    let (inst_no, mch_no, pay_trace_no) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || inst_no.is_empty() || mch_no.is_empty() || pay_trace_no.is_empty()
    {
        return None;
    }
    Some(Identity {
        inst_no: inst_no.to_owned(),
        mch_no: mch_no.to_owned(),
        pay_trace_no: pay_trace_no.to_owned(),
    })
}

impl ChecksStore {
    /// The schedule in `shards` keys (at least one).
    pub fn new(claims: ClaimStore, shards: usize) -> Self {
        let shards = shards.max(1);
        let base = format!("{}:checks", claims.prefix());
        let mut keys: Vec<String> = if shards == 1 {
            vec![base.clone()]
        } else {
            (0..shards).map(|i| format!("{base}:{i}")).collect()
        };
        if shards > 1 {
            keys.push(base);
        }
        ChecksStore {
            keys: keys.into(),
            shards,
            cursor: Arc::new(AtomicUsize::new(0)),
            claims,
            scripts: Arc::new(Scripts {
                due: Script::new(include_str!("due.lua")),
                lease: Script::new(include_str!("lease.lua")),
                release: Script::new(include_str!("release.lua")),
                close: Script::new(include_str!("close.lua")),
                note: Script::new(include_str!("note.lua")),
            }),
        }
    }

    fn conn(&self) -> RedisConn {
        self.claims.conn()
    }

    /// Every key of the schedule (the shards, then the earlier versions'
    /// key when there are several).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The key that holds an identity's check.
    pub fn key_of(&self, id: &Identity) -> &str {
        self.shard_key(&member(id))
    }

    pub(crate) fn shard_key(&self, member: &str) -> &str {
        self.keys
            .get(shard_of(member, self.shards))
            .map_or("", String::as_str)
    }

    fn key_at(&self, i: usize) -> &str {
        self.keys.get(i).map_or("", String::as_str)
    }

    /// Schedules an identity's first check, unless one is scheduled (a
    /// replay must not move a check the reconciler has moved since):
    /// idempotent, so a replay schedules again what a crash lost.
    pub async fn schedule(&self, id: &Identity, due_ms: i64) -> Result<(), StoreError> {
        let m = member(id);
        let key = self.shard_key(&m);
        self.zadd(key, Some("NX"), due_ms, &m).await?;
        // The first check must survive a failover before the intent's ack.
        self.claims.replicated(key).await
    }

    /// Makes a picked-up check due at `at_ms`, in the key it came from,
    /// whatever was scheduled (the next check).
    pub async fn reschedule(&self, due: &Due, at_ms: i64) -> Result<(), StoreError> {
        self.zadd(self.key_at(due.key), None, at_ms, &due.member)
            .await
    }

    /// Brings a check forward to `at_ms` (or schedules it): a notify that
    /// did not match asks for a query at once.
    pub async fn bring_forward(&self, id: &Identity, at_ms: i64) -> Result<(), StoreError> {
        let m = member(id);
        self.zadd(self.shard_key(&m), Some("LT"), at_ms, &m).await
    }

    async fn zadd(
        &self,
        key: &str,
        flag: Option<&str>,
        at_ms: i64,
        member: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(key);
        if let Some(f) = flag {
            cmd.arg(f);
        }
        let _: i64 = cmd.arg(at_ms).arg(member).query_async(&mut conn).await?;
        Ok(())
    }

    /// No more checks for a picked-up payment.
    pub async fn remove(&self, due: &Due) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 = redis::cmd("ZREM")
            .arg(self.key_at(due.key))
            .arg(&due.member)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// When the identity is checked next, in ms (None: not scheduled).
    pub async fn next(&self, id: &Identity) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn();
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.key_of(id))
            .arg(member(id))
            .query_async(&mut conn)
            .await?;
        Ok(score.map(|s| s as i64))
    }

    /// Picks up at most `limit` due checks, each leased for `lease_ms`,
    /// from every key in turn. Returns Redis's clock (ms) and the checks. A
    /// key that cannot be read (its node down) is skipped: it delays only
    /// its own share; an error only when no key answered.
    pub async fn due(&self, limit: usize, lease_ms: u64) -> Result<(i64, Vec<Due>), StoreError> {
        let n = self.keys.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut now = None;
        let mut picked = Vec::new();
        let mut failed = None;
        for k in (start..start + n).map(|i| i % n) {
            if picked.len() >= limit {
                break;
            }
            match self.due_in(k, limit - picked.len(), lease_ms).await {
                Ok((t, mut d)) => {
                    now = Some(t);
                    picked.append(&mut d);
                }
                Err(e) => failed = Some(e),
            }
        }
        match (now, failed) {
            (Some(t), _) => Ok((t, picked)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok((0, picked)),
        }
    }

    async fn due_in(
        &self,
        key: usize,
        limit: usize,
        lease_ms: u64,
    ) -> Result<(i64, Vec<Due>), StoreError> {
        let mut conn = self.conn();
        let reply: Vec<String> = self
            .scripts
            .due
            .key(self.key_at(key))
            .arg(lease_ms)
            .arg(limit)
            .invoke_async(&mut conn)
            .await?;
        let now = reply.first().and_then(|n| n.parse().ok()).unwrap_or(0);
        let due = reply
            .get(1..)
            .unwrap_or_default()
            .chunks(2)
            .filter_map(|c| match c {
                [m, s] => Some(Due {
                    member: m.clone(),
                    due_ms: s.parse::<f64>().map(|s| s as i64).unwrap_or(now),
                    key,
                }),
                _ => None,
            })
            .collect();
        Ok((now, due))
    }

    /// How many checks are due by `now_ms` and not picked up, over the keys
    /// that answer.
    pub async fn overdue(&self, now_ms: i64) -> Result<u64, StoreError> {
        let mut total = 0u64;
        let mut answered = false;
        let mut failed = None;
        for key in self.keys.iter() {
            let mut conn = self.conn();
            let n: Result<u64, _> = redis::cmd("ZCOUNT")
                .arg(key)
                .arg("-inf")
                .arg(now_ms)
                .query_async(&mut conn)
                .await;
            match n {
                Ok(n) => {
                    total += n;
                    answered = true;
                }
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) if !answered => Err(e.into()),
            _ => Ok(total),
        }
    }

    /// Takes (or renews) the identity's lease for a check.
    pub async fn lease(
        &self,
        id: &Identity,
        token: &str,
        lease_ms: u64,
    ) -> Result<Lease, StoreError> {
        // Never behind a WAIT (see ClaimStore::lease_conn).
        let mut conn = self.claims.lease_conn();
        let reply: Vec<String> = self
            .scripts
            .lease
            .key(self.claims.key(id))
            .arg(token)
            .arg(lease_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(match reply.first().map(String::as_str) {
            Some("ok") => Lease::Taken,
            Some("gone") => Lease::Gone,
            _ => Lease::Busy(
                reply
                    .get(1)
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(lease_ms),
            ),
        })
    }

    pub async fn release(&self, id: &Identity, token: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 = self
            .scripts
            .release
            .key(self.claims.key(id))
            .arg(token)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The payment's close pair: the one stored, else these (stored now,
    /// before the first closeorder call). `None`: the identity is gone.
    pub async fn close_pair(
        &self,
        id: &Identity,
        trace: &str,
        time: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let mut conn = self.conn();
        let reply: Vec<Option<String>> = self
            .scripts
            .close
            .key(self.claims.key(id))
            .arg(trace)
            .arg(time)
            .invoke_async(&mut conn)
            .await?;
        Ok(match reply.as_slice() {
            [Some(t), Some(c)] => Some((t.clone(), c.clone())),
            _ => None,
        })
    }

    /// The close facts of a payment: whether closeorder said closed, and
    /// the last check (JSON), if any.
    pub async fn facts(&self, id: &Identity) -> Result<CheckFacts, StoreError> {
        let mut conn = self.conn();
        let f: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.claims.key(id))
            .arg(&["xd", "xt", "lc"])
            .query_async(&mut conn)
            .await?;
        let get = |i: usize| f.get(i).cloned().flatten();
        Ok(CheckFacts {
            closed: get(0).as_deref() == Some("1"),
            close_trace_no: get(1),
            last_check: get(2),
        })
    }

    /// Writes fields of an existing identity (`only_new`: leaves fields
    /// already set alone).
    pub async fn note(
        &self,
        id: &Identity,
        only_new: bool,
        fields: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut inv = self.scripts.note.key(self.claims.key(id));
        inv.arg(if only_new { "nx" } else { "set" });
        for (k, v) in fields {
            inv.arg(*k).arg(*v);
        }
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }
}

/// What a payment's hash says about its checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckFacts {
    /// closeorder said closed.
    pub closed: bool,
    pub close_trace_no: Option<String>,
    /// The last check, as JSON.
    pub last_check: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_spread_over_every_shard_and_stay_put() {
        let shards = 16;
        let mut seen = vec![0u32; shards];
        for i in 0..1600 {
            let m = format!("60000001:M1:T-{i}");
            let s = shard_of(&m, shards);
            assert_eq!(s, shard_of(&m, shards), "stable");
            seen[s] += 1;
        }
        assert!(seen.iter().all(|n| (50..150).contains(n)), "{seen:?}");
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
        // FNV-1a, fixed for good: replicas and the receiver of any
        // version agree on where a check lives.
        assert_eq!(shard_of("60000001:M1:T-1", 16), 0);
        assert_eq!(shard_of("60000001:M1:T-1", 7), 2);
    }

    #[test]
    fn members_name_identities_and_nothing_else() {
        let id = Identity {
            inst_no: "60000001".into(),
            mch_no: "M1".into(),
            pay_trace_no: "T-1".into(),
        };
        // Pinned: stored schedules and every replica depend on it.
        assert_eq!(member(&id), "60000001:M1:T-1");
        assert_eq!(identity(&member(&id)), Some(id));
        for bad in ["", "a:b", "a:b:c:d", "a::c", ":b:c"] {
            assert_eq!(identity(bad), None, "{bad}");
        }
    }
}
