//! A session's outbox: every write that must reach storage (the transcript, each workspace
//! path, the session record), kept until it lands.
//!
//! Writes to one target are ordered: a newer write replaces a pending older one and is never
//! sent while an older one to the same target is still in flight, so an old snapshot cannot
//! land after a newer one (a sync's save after the watcher's delete, two overlapping transcript
//! saves). Each write is tried with the retry policy; when that round fails the write stays
//! queued and is tried again with a growing pause, for as long as the session lives. Whether
//! everything is stored is observable ([`Outbox::is_clean`], [`Outbox::flush`]): unload and
//! shutdown wait on it instead of dropping what could not be saved.

use crate::sync::Locked as _;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;

use crate::events::{DomainEvent, EventBus};
use crate::persistence::retry::RetryPolicy;
use crate::persistence::{PResult, PersistenceAdapter, PersistenceError, SessionRecordUpdate, WorkspaceFile};

/// What a write replaces when it lands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Transcript,
    File(String),
    Record,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Transcript(String),
    SaveFile(WorkspaceFile),
    DeleteFile(String),
    Record(SessionRecordUpdate),
}

impl Write {
    fn target(&self) -> Target {
        match self {
            Write::Transcript(_) => Target::Transcript,
            Write::SaveFile(f) => Target::File(f.path.clone()),
            Write::DeleteFile(p) => Target::File(p.clone()),
            Write::Record(_) => Target::Record,
        }
    }

    /// `self` is pending and `newer` arrives for the same target: what should be sent.
    fn superseded_by(self, newer: Write) -> Write {
        match (self, newer) {
            // Record updates are partial: fields the newer one leaves out are still owed.
            (Write::Record(old), Write::Record(new)) => Write::Record(SessionRecordUpdate {
                session_options: new.session_options.or(old.session_options),
                last_activity: new.last_activity.or(old.last_activity),
                metadata: new.metadata.or(old.metadata),
            }),
            (_, newer) => newer,
        }
    }

    async fn send(&self, p: &dyn PersistenceAdapter, session_id: &str) -> PResult<()> {
        match self {
            Write::Transcript(raw) => p.save_transcript(session_id, raw).await,
            Write::SaveFile(f) => p.save_workspace_file(session_id, f).await,
            Write::DeleteFile(path) => p.delete_session_file(session_id, path).await,
            Write::Record(u) => p.update_session_record(session_id, u).await,
        }
    }
}

/// How the outbox is doing, as watchers see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Writes queued or in flight.
    pub owed: usize,
    /// Bumped every time a round of attempts for some write failed.
    pub failures: u64,
    /// The last failure, while writes are still owed.
    pub last_error: Option<PersistenceError>,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Write>,
    in_flight: HashSet<Target>,
    writer_running: bool,
    /// Writes wait until [`Outbox::release`]: the session has no record yet (a warm one).
    held: bool,
}

impl Queue {
    /// Queue `w`, merged with a pending write to the same target: `w` is either newer than it
    /// (a push: it goes to the back of the line) or older (a failed write coming back: it goes
    /// to the front, and what was pushed meanwhile supersedes it).
    fn enqueue(&mut self, w: Write, newer: bool) {
        let t = w.target();
        let merged = match self.pending.iter().position(|p| p.target() == t) {
            Some(i) => {
                let pending = self.pending.remove(i).expect("index in range");
                if newer {
                    pending.superseded_by(w)
                } else {
                    w.superseded_by(pending)
                }
            }
            None => w,
        };
        if newer {
            self.pending.push_back(merged);
        } else {
            self.pending.push_front(merged);
        }
    }
}

/// Writes sent at once (to different targets).
const PARALLEL: usize = 8;
/// Pause after a failed round grows from this to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(60);

pub struct Outbox {
    session_id: String,
    persistence: Arc<dyn PersistenceAdapter>,
    retry: RetryPolicy,
    events: EventBus,
    queue: Mutex<Queue>,
    status: watch::Sender<Status>,
    /// Where the writer runs: pushes may come from threads outside the async runtime (napi's
    /// synchronous calls).
    runtime: tokio::runtime::Handle,
}

impl Outbox {
    /// Must be called within the async runtime (sessions are created and loaded there).
    pub fn new(
        session_id: String,
        persistence: Arc<dyn PersistenceAdapter>,
        retry: RetryPolicy,
        events: EventBus,
    ) -> Arc<Self> {
        Arc::new(Self {
            session_id,
            persistence,
            retry,
            events,
            queue: Mutex::default(),
            status: watch::Sender::new(Status::default()),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Queue writes; they are sent in the background.
    pub fn push(self: &Arc<Self>, writes: impl IntoIterator<Item = Write>) {
        let start = {
            let mut q = self.queue.locked();
            for w in writes {
                q.enqueue(w, true);
            }
            self.publish(&q);
            !q.held && !std::mem::replace(&mut q.writer_running, true)
        };
        if start {
            self.runtime.spawn(writer(Arc::downgrade(self)));
        }
    }

    /// Keep what is pushed from now on until [`release`](Self::release).
    pub fn hold(&self) {
        self.queue.locked().held = true;
    }

    /// Send what was held, and everything after it as usual.
    pub fn release(self: &Arc<Self>) {
        let start = {
            let mut q = self.queue.locked();
            q.held = false;
            !q.pending.is_empty() && !std::mem::replace(&mut q.writer_running, true)
        };
        if start {
            self.runtime.spawn(writer(Arc::downgrade(self)));
        }
    }

    fn publish(&self, q: &Queue) {
        let owed = q.pending.len() + q.in_flight.len();
        self.status.send_modify(|s| {
            s.owed = owed;
            if owed == 0 {
                s.last_error = None;
            }
        });
    }

    /// Nothing is owed to storage.
    pub fn is_clean(&self) -> bool {
        self.status.borrow().owed == 0
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Wait until everything queued so far has landed (`Ok`), or until a round of attempts
    /// fails (`Err` with that failure; the writes stay queued and keep being retried).
    pub async fn flush(&self) -> PResult<()> {
        let mut rx = self.status.subscribe();
        let failures_before = rx.borrow().failures;
        let status = rx
            .wait_for(|s| s.owed == 0 || s.failures > failures_before)
            .await
            .expect("the sender lives in self")
            .clone();
        match status.last_error {
            Some(e) if status.owed > 0 => Err(e),
            _ => Ok(()),
        }
    }

    /// The next writes to send: oldest first, at most one per target, none to a target in flight.
    fn take_batch(&self) -> Vec<Write> {
        let mut q = self.queue.locked();
        let mut batch = Vec::new();
        let mut i = 0;
        while i < q.pending.len() && q.in_flight.len() < PARALLEL {
            let t = q.pending[i].target();
            if q.in_flight.contains(&t) {
                i += 1;
                continue;
            }
            q.in_flight.insert(t);
            batch.push(q.pending.remove(i).expect("index in range"));
        }
        batch
    }

    /// With nothing owed, mark the writer stopped (the next push starts one).
    fn stop_if_idle(&self) -> bool {
        let mut q = self.queue.locked();
        let idle = q.pending.is_empty() && q.in_flight.is_empty();
        if idle {
            q.writer_running = false;
        }
        idle
    }

    /// A write finished; a failed one goes back in line unless a newer write replaced it.
    fn settle(&self, write: Write, result: PResult<()>) -> Option<PersistenceError> {
        let mut q = self.queue.locked();
        let t = write.target();
        q.in_flight.remove(&t);
        let failed = result.err();
        if failed.is_some() {
            q.enqueue(write, false);
        }
        self.publish(&q);
        failed
    }
}

/// Sends queued writes until none are owed; exits when the outbox is dropped.
async fn writer(outbox: Weak<Outbox>) {
    let mut pause = FIRST_PAUSE;
    loop {
        let Some(ob) = outbox.upgrade() else { return };
        let batch = ob.take_batch();
        if batch.is_empty() {
            if ob.stop_if_idle() {
                return;
            }
            // Everything left targets something in flight elsewhere: cannot happen with one
            // writer, but never spin.
            drop(ob);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let mut running: FuturesUnordered<_> = batch
            .into_iter()
            .map(|w| {
                let ob = ob.clone();
                async move {
                    let r = ob.retry.run(|| w.send(&*ob.persistence, &ob.session_id)).await;
                    (w, r)
                }
            })
            .collect();
        let mut failure = None;
        while let Some((w, r)) = running.next().await {
            if let Some(e) = ob.settle(w, r) {
                failure = Some(e);
            }
        }
        drop(running);
        match failure {
            None => pause = FIRST_PAUSE,
            Some(e) => {
                let first = ob.status.borrow().last_error.is_none();
                ob.status.send_modify(|s| {
                    s.failures += 1;
                    s.last_error = Some(e.clone());
                });
                if first {
                    tracing::error!(session_id = %ob.session_id, error = %e, "could not store session data; retrying until it lands");
                    let message = format!("Session data could not be stored yet (retrying): {e}");
                    ob.events.emit(DomainEvent::error(&ob.session_id, &message, Some("PERSISTENCE_FAILED")));
                }
                drop(ob);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::memory::MemoryAdapter;
    use crate::persistence::{SessionRecord, StoredSession};
    use std::sync::atomic::Ordering;

    fn setup() -> (Arc<MemoryAdapter>, Arc<Outbox>) {
        let a = Arc::new(MemoryAdapter::default());
        a.sessions.locked().insert(
            "s".into(),
            StoredSession {
                record: SessionRecord {
                    session_id: "s".into(),
                    architecture: crate::agent::Architecture::ClaudeAgentSdk,
                    session_options: None,
                    agent_profile_reference: "p".into(),
                    name: None,
                    last_activity: None,
                    created_at: None,
                    metadata: None,
                },
                raw_transcript: None,
                workspace_files: vec![],
            },
        );
        let ob = Outbox::new("s".into(), a.clone(), RetryPolicy::default(), EventBus::new());
        (a, ob)
    }

    fn file(path: &str, content: &str) -> Write {
        Write::SaveFile(WorkspaceFile { path: path.into(), content: Some(content.into()) })
    }

    fn stored_files(a: &MemoryAdapter) -> Vec<(String, Option<String>)> {
        let s = a.sessions.locked();
        let mut v: Vec<_> = s["s"].workspace_files.iter().map(|f| (f.path.clone(), f.content.clone())).collect();
        v.sort();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn a_delete_after_a_save_of_the_same_path_wins() {
        let (a, ob) = setup();
        ob.push([file("a.txt", "1"), file("b.txt", "2"), Write::DeleteFile("a.txt".into())]);
        ob.flush().await.unwrap();
        assert_eq!(stored_files(&a), [("b.txt".to_string(), Some("2".to_string()))]);
        assert!(ob.is_clean());
    }

    #[tokio::test(start_paused = true)]
    async fn writes_failing_for_longer_than_the_retry_policy_still_land() {
        let (a, ob) = setup();
        let mut events = Vec::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        ob.events.subscribe(move |e| s2.locked().push((e.name, e.payload["error"]["code"].clone())));
        a.fail_writes.store(10, Ordering::SeqCst);
        ob.push([Write::DeleteFile("gone.txt".into()), Write::Transcript("t".into())]);
        // The first round fails: flush says so, the writes stay owed.
        let e = ob.flush().await.unwrap_err();
        assert_eq!(e.code(), "PERSISTENCE_FAILED");
        assert!(!ob.is_clean());
        events.extend(seen.locked().drain(..));
        assert_eq!(events, [("session:error", serde_json::json!("PERSISTENCE_FAILED"))]);
        // Later rounds succeed once the adapter recovers; nothing was dropped.
        let mut rx = ob.status.subscribe();
        rx.wait_for(|s| s.owed == 0).await.unwrap();
        assert_eq!(a.sessions.locked()["s"].raw_transcript.as_deref(), Some("t"));
        assert!(a.calls().iter().filter(|c| *c == "deleteSessionFile").count() > 4, "{:?}", a.calls());
        assert_eq!(ob.status().last_error, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_write_is_not_sent_while_an_older_one_to_the_same_target_is_in_flight() {
        let (a, ob) = setup();
        a.write_delay_ms.store(50, Ordering::SeqCst);
        ob.push([Write::Transcript("old".into())]);
        tokio::task::yield_now().await;
        ob.push([Write::Transcript("new".into())]);
        ob.flush().await.unwrap();
        assert_eq!(a.sessions.locked()["s"].raw_transcript.as_deref(), Some("new"));
        assert_eq!(a.calls().iter().filter(|c| *c == "saveTranscript").count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn partial_record_updates_merge() {
        let (a, ob) = setup();
        a.write_delay_ms.store(50, Ordering::SeqCst);
        ob.push([Write::Record(SessionRecordUpdate { last_activity: Some(5), ..Default::default() })]);
        ob.push([Write::Record(SessionRecordUpdate { last_activity: Some(6), ..Default::default() })]);
        let meta: serde_json::Map<_, _> = [("k".to_string(), serde_json::json!(1))].into_iter().collect();
        ob.push([Write::Record(SessionRecordUpdate { metadata: Some(meta.clone()), ..Default::default() })]);
        ob.flush().await.unwrap();
        let s = a.sessions.locked();
        assert_eq!(s["s"].record.last_activity, Some(6));
        assert_eq!(s["s"].record.metadata, Some(meta));
    }
}
