//! Settling deliveries (ack, reject, requeue) on the consumer's channel,
//! with contiguous acks coalesced into one `multiple` ack.
//!
//! Why: every ack is a frame for the broker to parse and, on a quorum
//! queue, a Raft command to log. Under load many intents finish in the same
//! instant; acking a contiguous run of them with one frame saves the broker
//! (which shares the machine) a good part of that work.
//!
//! Safety rests on one rule: a `multiple` ack up to tag T is sent only when
//! every delivery this channel handed us with a tag ≤ T and not yet settled
//! has finished with an ack. The consumer loop registers each delivery
//! ([`Settler::delivered`]) before its task starts, so the settler knows the
//! outstanding tags from the deliveries themselves, not from an assumption
//! about how the broker numbers them. Nothing waits for a run to form: what
//! cannot join one is acked on its own in the same pass, so coalescing never
//! holds a prefetch slot longer.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::sync::{mpsc, oneshot};

/// How a delivery ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Ack,
    /// Reject without requeue: the queue dead-letters it.
    DeadLetter,
    /// Nack with requeue: it comes again (and counts toward the delivery limit).
    Requeue,
}

type Reply = oneshot::Sender<Result<(), lapin::Error>>;

/// What a finished delivery hands the settler: its acker and where to
/// report the outcome of its frame.
type Finished = (Acker, Reply);

/// Generic over what a finished delivery carries, so the bookkeeping can be
/// tested without a broker.
enum Msg<P> {
    Delivered(u64),
    Settle { tag: u64, how: Settlement, done: P },
}

/// Handle to one channel's settler task; cheap to clone. The task ends when
/// the last handle is dropped.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Msg<Finished>>,
}

impl Settler {
    /// Starts the settler for one consumer channel.
    pub fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Self { tx }
    }

    /// Registers a delivery; call it in delivery order, before the
    /// delivery's processing starts.
    pub fn delivered(&self, tag: u64) {
        let _ = self.tx.send(Msg::Delivered(tag));
    }

    /// Settles a delivery and returns once its frame went to the broker
    /// (or failed).
    pub async fn settle(
        &self,
        tag: u64,
        acker: Acker,
        how: Settlement,
    ) -> Result<(), lapin::Error> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Settle {
            tag,
            how,
            done: (acker.clone(), reply),
        };
        if self.tx.send(msg).is_err() {
            // The task is gone (it only ends with its last handle, so this
            // is a runtime shutting down): settle directly.
            return send_one(&acker, how).await;
        }
        match answer.await {
            Ok(r) => r,
            Err(_) => send_one(&acker, how).await,
        }
    }
}

/// Outstanding deliveries by tag: `None` while in progress, what it handed
/// over once it finished with an ack that has not been sent yet.
type Open<P> = BTreeMap<u64, Option<P>>;

async fn run(mut rx: mpsc::UnboundedReceiver<Msg<Finished>>) {
    let mut open = Open::new();
    while let Some(first) = rx.recv().await {
        let mut settle_now = Vec::new();
        take(&mut open, first, &mut settle_now);
        // Everything that arrived meanwhile joins this pass.
        while let Ok(m) = rx.try_recv() {
            take(&mut open, m, &mut settle_now);
        }
        let mut sends = Vec::new();
        for ((acker, reply), how) in settle_now {
            sends.push(send(vec![reply], acker, how, false));
        }
        let (run, stragglers) = plan(&mut open);
        let multiple = run.len() > 1;
        let mut replies = Vec::with_capacity(run.len());
        let mut last = None;
        for (acker, reply) in run {
            replies.push(reply);
            last = Some(acker);
        }
        if let Some(acker) = last {
            sends.push(send(replies, acker, Settlement::Ack, multiple));
        }
        for (acker, reply) in stragglers {
            sends.push(send(vec![reply], acker, Settlement::Ack, false));
        }
        join_all(sends).await;
    }
}

/// Records one message. Rejects, requeues, and anything not registered as
/// in progress go to `now`: they are settled on their own and never join a
/// run (a reject leaves `open` at once, so it cannot hold a run back).
fn take<P>(open: &mut Open<P>, m: Msg<P>, now: &mut Vec<(P, Settlement)>) {
    match m {
        Msg::Delivered(tag) => {
            open.insert(tag, None);
        }
        Msg::Settle { tag, how, done } => {
            let in_progress = matches!(open.get(&tag), Some(None));
            if in_progress && how == Settlement::Ack {
                open.insert(tag, Some(done));
            } else {
                if in_progress {
                    open.remove(&tag);
                }
                now.push((done, how));
            }
        }
    }
}

/// Takes the contiguous run of finished acks from the lowest outstanding
/// tag (in tag order: one `multiple` ack with the last one's acker covers
/// them), and the finished acks behind a delivery still in progress (acked
/// one by one). What is still in progress stays.
fn plan<P>(open: &mut Open<P>) -> (Vec<P>, Vec<P>) {
    let mut run = Vec::new();
    while let Some(entry) = open.first_entry() {
        if entry.get().is_none() {
            break;
        }
        run.extend(entry.remove());
    }
    let ready: Vec<u64> = open
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(t, _)| *t)
        .collect();
    let stragglers = ready
        .into_iter()
        .filter_map(|t| open.remove(&t).flatten())
        .collect();
    (run, stragglers)
}

async fn send(replies: Vec<Reply>, acker: Acker, how: Settlement, multiple: bool) {
    let r = match how {
        Settlement::Ack => acker.ack(BasicAckOptions { multiple }).await.map(|_| ()),
        _ => send_one(&acker, how).await,
    };
    for reply in replies {
        let _ = reply.send(r.clone());
    }
}

async fn send_one(acker: &Acker, how: Settlement) -> Result<(), lapin::Error> {
    match how {
        Settlement::Ack => acker.ack(BasicAckOptions::default()).await,
        Settlement::DeadLetter => acker.reject(BasicRejectOptions { requeue: false }).await,
        Settlement::Requeue => {
            acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await
        }
    }
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(entries: &[(u64, bool)]) -> Open<u64> {
        entries
            .iter()
            .map(|&(t, done)| (t, done.then_some(t)))
            .collect()
    }

    #[test]
    fn a_contiguous_prefix_of_acks_becomes_one_run() {
        let mut o = open(&[(1, true), (2, true), (3, true)]);
        assert_eq!(plan(&mut o), (vec![1, 2, 3], vec![]));
        assert!(o.is_empty());
    }

    #[test]
    fn acks_behind_a_delivery_in_progress_go_one_by_one_and_it_stays() {
        let mut o = open(&[(4, true), (5, false), (6, true), (7, false), (8, true)]);
        assert_eq!(plan(&mut o), (vec![4], vec![6, 8]));
        // Only what is in progress remains: a later run can never cover it.
        assert_eq!(o.keys().copied().collect::<Vec<_>>(), vec![5, 7]);
    }

    #[test]
    fn a_reject_leaves_at_once_and_never_joins_a_run() {
        let mut o = Open::new();
        let mut now = Vec::new();
        for tag in 1..=3 {
            take(&mut o, Msg::Delivered(tag), &mut now);
        }
        take(
            &mut o,
            Msg::Settle {
                tag: 3,
                how: Settlement::Ack,
                done: 3,
            },
            &mut now,
        );
        take(
            &mut o,
            Msg::Settle {
                tag: 1,
                how: Settlement::DeadLetter,
                done: 1,
            },
            &mut now,
        );
        assert_eq!(now, vec![(1, Settlement::DeadLetter)]);
        // 2 is still in progress: 3 goes alone, and 2 stays open.
        assert_eq!(plan(&mut o), (vec![], vec![3]));
        take(
            &mut o,
            Msg::Settle {
                tag: 2,
                how: Settlement::Requeue,
                done: 2,
            },
            &mut now,
        );
        assert_eq!(now.last(), Some(&(2, Settlement::Requeue)));
        assert!(o.is_empty());
    }

    #[test]
    fn an_ack_of_a_delivery_never_registered_is_sent_on_its_own() {
        let mut o = Open::new();
        let mut now = Vec::new();
        take(&mut o, Msg::Delivered(5), &mut now);
        take(
            &mut o,
            Msg::Settle {
                tag: 4,
                how: Settlement::Ack,
                done: 4,
            },
            &mut now,
        );
        assert_eq!(now, vec![(4, Settlement::Ack)]);
        assert_eq!(o.keys().copied().collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn nothing_is_acked_while_the_lowest_delivery_is_in_progress() {
        let mut o = open(&[(9, false), (10, false)]);
        assert_eq!(plan(&mut o), (vec![], vec![]));
        assert_eq!(o.len(), 2);
    }
}
