//! One timer for every OAuth session's background refresh. Each session
//! had a task of its own that slept until its next refresh: ~500 bytes a
//! session, 25 MB at 50,000 OAuth installs. Now a session that changes (a
//! refresh published, a reload, a retirement) wakes the schedule, which
//! reads when it is next due and keeps one entry for it in a heap.
//!
//! - An entry is live while its number is the session's latest
//!   (`OAuthSession::scheduled`); a session woken again leaves its older
//!   entries to be skipped when they come up.
//! - A due session waits for a turn (at most `REFRESH_STEPS` background
//!   refreshes at once) and is then refreshed in a task of its own, as
//!   requests' refreshes are, so nothing here holds a refresh up.
//! - The schedule ends when the gateway stops; `Sessions::finish_all`
//!   finishes the refreshes in flight.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch, Semaphore};

use super::refresh::OAuthSession;

/// How a session tells the schedule it changed.
pub(super) type Wakes = mpsc::UnboundedSender<Arc<OAuthSession>>;

/// Starts the schedule (inside a tokio runtime); it ends when `stop` turns true.
pub(super) fn spawn(turns: Arc<Semaphore>, stop: watch::Receiver<bool>) -> Wakes {
    let (wakes, woken) = mpsc::unbounded_channel();
    tokio::spawn(run(woken, turns, stop));
    wakes
}

/// A session due at `at`, live while `seq` is its latest.
struct Due {
    at: Instant,
    seq: u64,
    session: Arc<OAuthSession>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

async fn run(
    mut woken: mpsc::UnboundedReceiver<Arc<OAuthSession>>,
    turns: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut due: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    loop {
        let next = due.peek().map(|d| d.0.at);
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            session = woken.recv() => {
                let Some(session) = session else { return };
                plan(&mut due, session);
                // A start wakes every session at once: take them in one go.
                while let Ok(session) = woken.try_recv() {
                    plan(&mut due, session);
                }
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now).into()), if next.is_some() => {
                let Some(Reverse(d)) = due.pop() else { continue };
                if !is_live(&d) {
                    continue;
                }
                // The state it was due in: if a request's refresh replaces
                // it while this waits for a turn, this one does nothing.
                let epoch = d.session.current().epoch;
                // Closed only if the semaphore is dropped, which it never is.
                let turn = tokio::select! {
                    turn = turns.clone().acquire_owned() => turn,
                    _ = stop.changed() => return,
                };
                let Ok(turn) = turn else { return };
                let session = d.session;
                tokio::spawn(async move {
                    session.refresh(epoch, None).await;
                    drop(turn);
                    // Nothing was published (another refresh came first, or
                    // the gateway is stopping): plan again from what is there.
                    if session.current().epoch == epoch && !session.is_stopping() {
                        session.changed();
                    }
                });
            }
        }
    }
}

/// Plans `session` from where it stands now: its next refresh, retry or
/// re-read, or nothing while it waits for an operator or is retired. Its
/// older entries are no longer live.
fn plan(due: &mut BinaryHeap<Reverse<Due>>, session: Arc<OAuthSession>) {
    let seq = session.scheduled.fetch_add(1, Ordering::AcqRel) + 1;
    if session.is_retired() {
        return;
    }
    let cur = session.current();
    if cur.background() {
        due.push(Reverse(Due { at: cur.next_at, seq, session }));
    }
}

fn is_live(d: &Due) -> bool {
    d.session.scheduled.load(Ordering::Acquire) == d.seq
}
