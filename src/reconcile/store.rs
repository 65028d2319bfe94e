//! The reconciler's Redis edge (contract §12): the schedule of due checks,
//! one sorted set `<prefix>:checks` (member `inst_no:mch_no:pay_trace_no`,
//! score the due time in ms), picked up with a lease ([`due.lua`]); the
//! identity's lease while a check works; the close pair; the last check.
//! The set is a key of its own, outside the one-key scripts of the
//! identity (a Redis Cluster keeps it in one slot: one hot key, about one
//! command per followed intent).

use redis::Script;

use crate::claim::{ClaimError, ClaimStore, RedisConn};
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
    key: String,
    scripts: std::sync::Arc<Scripts>,
}

/// The schedule's member for an identity.
pub fn member(id: &Identity) -> String {
    format!("{}:{}:{}", id.inst_no, id.mch_no, id.pay_trace_no)
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
    pub fn new(claims: ClaimStore) -> Self {
        ChecksStore {
            key: format!("{}:checks", claims.prefix()),
            claims,
            scripts: std::sync::Arc::new(Scripts {
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

    /// The schedule's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Schedules an identity's first check, unless one is scheduled:
    /// idempotent, so a replay schedules again what a crash lost.
    pub async fn schedule(&self, id: &Identity, due_ms: i64) -> Result<(), ClaimError> {
        let mut conn = self.conn();
        let _: i64 = redis::cmd("ZADD")
            .arg(&self.key)
            .arg("NX")
            .arg(due_ms)
            .arg(member(id))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Makes a check due at `at_ms` whatever was scheduled (the next check).
    pub async fn reschedule(&self, member: &str, at_ms: i64) -> Result<(), ClaimError> {
        let mut conn = self.conn();
        let _: i64 = redis::cmd("ZADD")
            .arg(&self.key)
            .arg(at_ms)
            .arg(member)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Brings a check forward to `at_ms` (or schedules it): a notify that
    /// did not match asks for a query at once.
    pub async fn bring_forward(&self, id: &Identity, at_ms: i64) -> Result<(), ClaimError> {
        let mut conn = self.conn();
        let _: i64 = redis::cmd("ZADD")
            .arg(&self.key)
            .arg("LT")
            .arg(at_ms)
            .arg(member(id))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// No more checks for this payment.
    pub async fn remove(&self, member: &str) -> Result<(), ClaimError> {
        let mut conn = self.conn();
        let _: i64 = redis::cmd("ZREM")
            .arg(&self.key)
            .arg(member)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// When the identity is checked next, in ms (None: not scheduled).
    pub async fn next(&self, id: &Identity) -> Result<Option<i64>, ClaimError> {
        let mut conn = self.conn();
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&self.key)
            .arg(member(id))
            .query_async(&mut conn)
            .await?;
        Ok(score.map(|s| s as i64))
    }

    /// Picks up at most `limit` due checks, each leased for `lease_ms`.
    /// Returns Redis's clock (ms) and the checks.
    pub async fn due(&self, limit: usize, lease_ms: u64) -> Result<(i64, Vec<Due>), ClaimError> {
        let mut conn = self.conn();
        let reply: Vec<String> = self
            .scripts
            .due
            .key(&self.key)
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
                }),
                _ => None,
            })
            .collect();
        Ok((now, due))
    }

    /// How many checks are due by `now_ms` and not picked up.
    pub async fn overdue(&self, now_ms: i64) -> Result<u64, ClaimError> {
        let mut conn = self.conn();
        Ok(redis::cmd("ZCOUNT")
            .arg(&self.key)
            .arg("-inf")
            .arg(now_ms)
            .query_async(&mut conn)
            .await?)
    }

    /// Takes (or renews) the identity's lease for a check.
    pub async fn lease(
        &self,
        id: &Identity,
        token: &str,
        lease_ms: u64,
    ) -> Result<Lease, ClaimError> {
        let mut conn = self.conn();
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

    pub async fn release(&self, id: &Identity, token: &str) -> Result<(), ClaimError> {
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
    ) -> Result<Option<(String, String)>, ClaimError> {
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
    pub async fn facts(&self, id: &Identity) -> Result<CheckFacts, ClaimError> {
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
    ) -> Result<(), ClaimError> {
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
    fn members_name_identities_and_nothing_else() {
        let id = Identity {
            inst_no: "60000001".into(),
            mch_no: "M1".into(),
            pay_trace_no: "T-1".into(),
        };
        assert_eq!(identity(&member(&id)), Some(id));
        for bad in ["", "a:b", "a:b:c:d", "a::c", ":b:c"] {
            assert_eq!(identity(bad), None, "{bad}");
        }
    }
}
