//! Identity work (links, merges, the placing of events that carry
//! identities) run in tasks of its own: a call cut short (its deadline, a
//! client gone) drops its own future between two awaits, and a link stopped
//! between its steps would leave an identity recorded on a profile with no
//! key leading to it. A task goes on to its end whatever happens to the
//! call. At most `capacity` run at once, whether their calls are still
//! there or not (a call gone frees its in-flight slot, not its task's), and
//! the server waits for them when it stops.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use crate::storage::StorageError;

#[derive(Clone)]
pub struct IdentityWork {
    slots: Arc<Semaphore>,
    capacity: u32,
}

impl IdentityWork {
    /// At most `capacity` tasks at once (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = u32::try_from(capacity.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Self {
            slots: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    /// Runs `work` in a task of its own once a slot is free, and answers
    /// what it ends with. Waiting for the slot ends with the call; the
    /// work, once started, does not.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopping())?;
        let task = tokio::spawn(async move {
            let done = work.await;
            drop(slot);
            done
        });
        match task.await {
            Ok(done) => Ok(done),
            // As if it had run in the call: the call's stream is reset.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(stopping()),
        }
    }

    /// Stops taking work and waits up to `grace` for the work under way;
    /// answers how many tasks were still running then.
    pub async fn drain(&self, grace: Duration) -> usize {
        let all = tokio::time::timeout(grace, self.slots.acquire_many(self.capacity)).await;
        let left = match all {
            Ok(_) => 0,
            Err(_) => self.capacity as usize - self.slots.available_permits(),
        };
        self.slots.close();
        left
    }
}

fn stopping() -> StorageError {
    StorageError::Unavailable("the server is shutting down".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::{oneshot, Notify};

    /// Work gated by `gate`, counting into `done` when it ends.
    fn gated(gate: &Arc<Notify>, done: &Arc<AtomicUsize>) -> impl Future<Output = ()> + Send {
        let (gate, done) = (gate.clone(), done.clone());
        async move {
            gate.notified().await;
            done.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn work_goes_on_when_its_call_is_dropped() {
        let work = IdentityWork::new(4);
        let (tx, rx) = oneshot::channel();
        let gate = Arc::new(Notify::new());
        let opened = gate.clone();
        let mut call = Box::pin(work.run(async move {
            opened.notified().await;
            let _ = tx.send(7);
        }));
        // Polled once: the task is spawned; then the call goes.
        assert!(futures::poll!(call.as_mut()).is_pending());
        drop(call);
        gate.notify_one();
        assert_eq!(rx.await, Ok(7));
        assert_eq!(work.run(async { 8 }).await.expect("run"), 8);
    }

    #[tokio::test]
    async fn at_most_capacity_tasks_run_and_drain_waits_for_them() {
        let work = IdentityWork::new(1);
        let (gate, done) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        let mut first = Box::pin(work.run(gated(&gate, &done)));
        assert!(futures::poll!(first.as_mut()).is_pending());
        drop(first); // its task holds the one slot
        let mut second = Box::pin(work.run(gated(&gate, &done)));
        assert!(futures::poll!(second.as_mut()).is_pending());
        assert_eq!(work.slots.available_permits(), 0);
        drop(second); // never started: waiting for the slot
                      // Still running: drain gives up after its grace and says so.
        assert_eq!(work.drain(Duration::from_millis(20)).await, 1);
        gate.notify_one();
        let work = IdentityWork::new(1);
        let mut third = Box::pin(work.run(gated(&gate, &done)));
        assert!(futures::poll!(third.as_mut()).is_pending());
        drop(third);
        gate.notify_one();
        assert_eq!(work.drain(Duration::from_secs(10)).await, 0);
        assert_eq!(done.load(Ordering::SeqCst), 2, "both started tasks ended");
        // Drained: no more work is taken.
        assert!(work.run(async {}).await.is_err());
    }
}
