//! Settling deliveries (ack, dead-letter, hand back) on the consumer's channel,
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
//! about how the broker numbers them. And since the broker counts a
//! rejected delivery as unacknowledged until the reject's frame arrives,
//! rejects and requeues are written before any ack of the same pass.
//! Nothing waits for a run to form: what cannot join one is acked on its own
//! in the same pass, so coalescing never holds a prefetch slot longer.

use std::collections::BTreeMap;
use std::future::Future;

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
    /// Hand it back (a nack with requeue): it comes again, and counts
    /// toward the delivery limit.
    HandBack,
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
        tokio::spawn(run(rx, send_frame));
        Self { tx }
    }

    /// Registers a delivery; call it in delivery order, before the
    /// delivery's processing starts.
    pub fn delivered(&self, tag: u64) {
        let _ = self.tx.send(Msg::Delivered(tag));
    }

    /// Settles a delivery and returns once its frame was written to the
    /// broker's socket (or failed).
    pub async fn settle(&self, tag: u64, acker: Acker, how: Settlement) -> Result<(), SettleError> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Settle {
            tag,
            how,
            done: (acker, reply),
        };
        // Without an answer nothing is known to be on the wire, and sending
        // here could be a second frame for the delivery: report it, and the
        // worker rebuilds the session (the delivery comes again if unsettled).
        self.tx.send(msg).map_err(|_| SettleError::Gone)?;
        match answer.await {
            Ok(r) => r.map_err(SettleError::Frame),
            Err(_) => Err(SettleError::Gone),
        }
    }
}

/// Why a settlement is not known to have reached the broker.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("could not send the settlement: {0}")]
    Frame(lapin::Error),
    #[error(
        "the settlement was not sent (settler stopped, or a second settlement of one delivery)"
    )]
    Gone,
}

/// Outstanding deliveries by tag: `None` while in progress, what it handed
/// over once it finished with an ack that has not been sent yet.
type Open<P> = BTreeMap<u64, Option<P>>;

/// The settler's loop: each pass takes everything queued, then settles in
/// two steps. Frames are written in the order their sends are first polled
/// only by accident (lapin runs each on a task of its own), so rejects and
/// requeues are sent, and written, before any ack of the same pass: a
/// `multiple` ack passing a tag the broker still counts as unacknowledged
/// would settle that delivery as acked. Acks never overlap one another (a
/// run ends below the first delivery in progress, the single acks lie above
/// it, and earlier passes were written before this one began).
async fn run<P, S, F>(mut rx: mpsc::UnboundedReceiver<Msg<P>>, send: S)
where
    S: Fn(Vec<P>, Settlement, bool) -> F,
    F: Future<Output = ()>,
{
    let mut open = Open::new();
    while let Some(first) = rx.recv().await {
        let mut now = Vec::new();
        take(&mut open, first, &mut now);
        // Everything that arrived meanwhile joins this pass.
        while let Ok(m) = rx.try_recv() {
            take(&mut open, m, &mut now);
        }
        join_all(
            now.into_iter()
                .map(|(done, how)| send(vec![done], how, false)),
        )
        .await;
        let (run, singles) = plan(&mut open);
        let mut acks = Vec::with_capacity(singles.len() + 1);
        if !run.is_empty() {
            let multiple = run.len() > 1;
            acks.push(send(run, Settlement::Ack, multiple));
        }
        acks.extend(
            singles
                .into_iter()
                .map(|done| send(vec![done], Settlement::Ack, false)),
        );
        join_all(acks).await;
    }
}

/// Records one message. Rejects, requeues and acks of tags never
/// registered go to `now`, to be sent on their own before this pass's acks
/// (see [`run`]); a rejected tag leaves `open` at once, so it does not hold
/// a later run back. A second settlement of a tag whose ack is already
/// pending is dropped: sending it would be a second frame for one delivery.
fn take<P>(open: &mut Open<P>, m: Msg<P>, now: &mut Vec<(P, Settlement)>) {
    match m {
        Msg::Delivered(tag) => {
            open.insert(tag, None);
        }
        Msg::Settle { tag, how, done } => match open.get(&tag) {
            Some(None) if how == Settlement::Ack => {
                open.insert(tag, Some(done));
            }
            Some(None) => {
                open.remove(&tag);
                now.push((done, how));
            }
            Some(Some(_)) => {
                tracing::warn!(
                    tag,
                    ?how,
                    "a delivery was settled twice; ignoring the second"
                );
            }
            None => now.push((done, how)),
        },
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

/// Sends one frame for `items` with the last one's acker (for a `multiple`
/// ack, the highest tag: it covers the others), and tells each its outcome.
async fn send_frame(items: Vec<Finished>, how: Settlement, multiple: bool) {
    let Some((acker, _)) = items.last() else {
        return;
    };
    let r = match how {
        Settlement::Ack => acker.ack(BasicAckOptions { multiple }).await.map(|_| ()),
        _ => send_one(acker, how).await,
    };
    for (_, reply) in items {
        let _ = reply.send(r.clone());
    }
}

async fn send_one(acker: &Acker, how: Settlement) -> Result<(), lapin::Error> {
    match how {
        Settlement::Ack => acker.ack(BasicAckOptions::default()).await,
        Settlement::DeadLetter => acker.reject(BasicRejectOptions { requeue: false }).await,
        Settlement::HandBack => {
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

    /// The hazard: requeue 1 and reject 3 leave `open`, so 2 and 4 form a
    /// run whose `multiple` ack at 4 would also cover 1 and 3 if it reached
    /// the broker before their own frames.
    #[tokio::test]
    async fn rejects_are_written_before_an_ack_of_the_same_pass() {
        let (tx, rx) = mpsc::unbounded_channel();
        let msgs = (1..=4).map(Msg::Delivered).chain([
            Msg::Settle {
                tag: 1,
                how: Settlement::HandBack,
                done: 1,
            },
            Msg::Settle {
                tag: 2,
                how: Settlement::Ack,
                done: 2,
            },
            Msg::Settle {
                tag: 3,
                how: Settlement::DeadLetter,
                done: 3,
            },
            Msg::Settle {
                tag: 4,
                how: Settlement::Ack,
                done: 4,
            },
        ]);
        for m in msgs {
            assert!(tx.send(m).is_ok());
        }
        drop(tx);
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let wire = log.clone();
        run(rx, move |items: Vec<u64>, how, multiple| {
            let wire = wire.clone();
            async move {
                let frame = format!("{how:?} {items:?} multiple={multiple}");
                if let Ok(mut w) = wire.lock() {
                    w.push(format!("start {frame}"));
                }
                // A frame takes a moment to be written.
                tokio::task::yield_now().await;
                if let Ok(mut w) = wire.lock() {
                    w.push(format!("written {frame}"));
                }
            }
        })
        .await;
        let log = log.lock().map(|l| l.clone()).unwrap_or_default();
        let at = |line: &str| log.iter().position(|l| l == line);
        let ack = at("start Ack [2, 4] multiple=true");
        assert!(ack.is_some(), "{log:#?}");
        for reject in [
            "written HandBack [1] multiple=false",
            "written DeadLetter [3] multiple=false",
        ] {
            let written = at(reject);
            assert!(
                written.is_some() && written < ack,
                "{reject} not before the ack: {log:#?}"
            );
        }
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
                how: Settlement::HandBack,
                done: 2,
            },
            &mut now,
        );
        assert_eq!(now.last(), Some(&(2, Settlement::HandBack)));
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
