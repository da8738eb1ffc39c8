//! A worker's clients, each in exactly one place: waiting (in order),
//! in flight (being loaded, loaded and ready, or being pushed) or delayed
//! until a retry is due. A client that changes while in flight is marked
//! and queued again when it returns, so the newest revision always goes out
//! and a client is never pushed twice at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue;

/// A worker's clients.
#[derive(Default)]
pub(super) struct ClientQueue {
    waiting: VecDeque<String>,
    queued: HashSet<String>,
    in_flight: HashSet<String>,
    /// Clients that changed while in flight.
    again: HashSet<String>,
    /// Clients a reload found owed while in flight: looked at again when
    /// delivered or undelivered, but a refusal's backoff stands.
    reloaded: HashSet<String>,
    delayed: DelayQueue<String>,
    delayed_keys: HashMap<String, delay_queue::Key>,
}

impl ClientQueue {
    /// The client is owed a push: queued at the back (at once if it was
    /// delayed), or marked if it is in flight.
    pub(super) fn enqueue(&mut self, client: String) {
        if self.in_flight.contains(&client) {
            self.again.insert(client);
            return;
        }
        if let Some(key) = self.delayed_keys.remove(&client) {
            self.delayed.remove(&key);
        }
        if self.queued.insert(client.clone()) {
            self.waiting.push_back(client);
        }
    }

    /// The store says the client is owed, with no change known (a reload
    /// of what a depot is owed): queued unless it waits out a refusal's
    /// backoff — a reload every 30 s must not turn a refused client's
    /// backoff into a push every 30 s. One on its way is looked at again
    /// when it is back: a reload follows announcements that may have been
    /// lost, and a change made meanwhile (on another replica) may be one of
    /// them — else it would wait for the next reload. (Looked at: loaded
    /// again; a revision delivered meanwhile is owed no more.)
    pub(super) fn reload(&mut self, client: String) {
        if self.in_flight.contains(&client) {
            self.reloaded.insert(client);
            return;
        }
        if self.delayed_keys.contains_key(&client) {
            return;
        }
        if self.queued.insert(client.clone()) {
            self.waiting.push_back(client);
        }
    }

    /// Whether the client changed since it was taken: a bundle loaded
    /// before is not to be sent. (A reload that found it owed meanwhile is
    /// no change known — it marks every client on its way, and reloads can
    /// come back to back — so its bundle goes, and the client is looked at
    /// again once back.)
    pub(super) fn changed(&self, client: &str) -> bool {
        self.again.contains(client)
    }

    /// Whether clients wait to be loaded.
    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Up to `max` waiting clients, in order, now in flight.
    pub(super) fn take(&mut self, max: usize) -> Vec<String> {
        let batch: Vec<String> = self.waiting.drain(..max.min(self.waiting.len())).collect();
        for c in &batch {
            self.queued.remove(c);
            self.in_flight.insert(c.clone());
        }
        batch
    }

    /// The client is back and done with (delivered, or no longer owed):
    /// queued again if it changed meanwhile.
    pub(super) fn settle(&mut self, client: String) {
        self.in_flight.remove(&client);
        let reloaded = self.reloaded.remove(&client);
        if self.again.remove(&client) || reloaded {
            self.enqueue(client);
        }
    }

    /// The client is back undelivered and goes first once the depot can
    /// take calls again.
    pub(super) fn retry_first(&mut self, client: String) {
        self.in_flight.remove(&client);
        self.again.remove(&client);
        self.reloaded.remove(&client);
        if self.queued.insert(client.clone()) {
            self.waiting.push_front(client);
        }
    }

    /// The client is back refused: tried again after `wait`, or at once if
    /// it changed meanwhile (the change may be the fix).
    pub(super) fn retry_after(&mut self, client: String, wait: Duration) {
        self.in_flight.remove(&client);
        // A reload is no change: the refusal's backoff stands.
        self.reloaded.remove(&client);
        if self.again.remove(&client) {
            self.enqueue(client);
        } else {
            self.delay(client, wait);
        }
    }

    /// The client could not be loaded: tried again after `wait` whatever
    /// changed (the store is the trouble).
    pub(super) fn retry_load(&mut self, client: String, wait: Duration) {
        self.in_flight.remove(&client);
        self.again.remove(&client);
        self.reloaded.remove(&client);
        self.delay(client, wait);
    }

    fn delay(&mut self, client: String, wait: Duration) {
        let key = self.delayed.insert(client.clone(), wait);
        self.delayed_keys.insert(client, key);
    }

    /// Every delayed client is queued now (the depot changed).
    pub(super) fn wake_delayed(&mut self) {
        let waiting: Vec<String> = self.delayed_keys.keys().cloned().collect();
        waiting.into_iter().for_each(|c| self.enqueue(c));
    }

    /// Whether clients wait for a retry.
    pub(super) fn has_delayed(&self) -> bool {
        !self.delayed.is_empty()
    }

    /// The next client whose retry is due (pending while none is delayed).
    pub(super) async fn next_due(&mut self) -> Option<String> {
        let client = self.delayed.next().await?.into_inner();
        self.delayed_keys.remove(&client);
        Some(client)
    }

    /// Clients waiting, in flight or delayed.
    pub(super) fn len(&self) -> usize {
        self.waiting.len() + self.in_flight.len() + self.delayed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_client_is_in_one_place_and_changes_in_flight_come_back() {
        let mut q = ClientQueue::default();
        for c in ["a", "b", "a", "c"] {
            q.enqueue(c.into());
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.take(2), names(&["a", "b"]));
        // a changes while in flight: not queued twice, but again when back.
        q.enqueue("a".into());
        assert_eq!(q.take(10), names(&["c"]));
        q.settle("a".into());
        assert_eq!(q.take(10), names(&["a"]));
        // Undelivered goes first.
        q.enqueue("d".into());
        q.retry_first("b".into());
        assert_eq!(q.take(10), names(&["b", "d"]));
        assert_eq!(q.len(), 4, "a, b, c and d are in flight");
    }

    #[tokio::test]
    async fn refused_clients_wait_unless_they_changed() {
        let mut q = ClientQueue::default();
        for c in ["a", "b", "c"] {
            q.enqueue(c.into());
        }
        q.take(3);
        q.enqueue("b".into());
        q.retry_after("a".into(), Duration::from_secs(30));
        q.retry_after("b".into(), Duration::from_secs(30));
        q.retry_load("c".into(), Duration::from_millis(5));
        assert_eq!(q.take(10), names(&["b"]), "b changed: at once");
        assert!(q.has_delayed());
        assert_eq!(q.next_due().await.as_deref(), Some("c"));
        // A change of a delayed client queues it at once.
        q.enqueue("a".into());
        assert!(!q.has_delayed());
        assert_eq!(q.take(10), names(&["a"]));
        // A changed depot wakes every delayed client.
        q.retry_after("a".into(), Duration::from_secs(30));
        q.wake_delayed();
        assert_eq!(q.take(10), names(&["a"]));
    }

    #[tokio::test]
    async fn a_reload_leaves_refused_clients_alone_and_looks_at_travelling_ones_again() {
        let mut q = ClientQueue::default();
        for c in ["a", "b"] {
            q.enqueue(c.into());
        }
        q.take(2);
        q.retry_after("a".into(), Duration::from_secs(30));
        for c in ["a", "b", "c", "c"] {
            q.reload(c.into());
        }
        // a waits out its backoff, b is on its way, c was not known.
        assert_eq!(q.take(10), names(&["c"]));
        // b changed meanwhile, perhaps (the reload follows announcements
        // that may be lost): looked at again once back.
        q.settle("b".into());
        assert_eq!(q.take(10), names(&["b"]));
        q.settle("b".into());
        assert_eq!(q.take(10), Vec::<String>::new());
        assert!(q.has_delayed());
        // One on its way that comes back refused waits out its backoff: a
        // reload is no change.
        q.enqueue("b".into());
        q.take(10);
        q.reload("b".into());
        q.retry_after("b".into(), Duration::from_secs(30));
        assert_eq!(q.take(10), Vec::<String>::new());
        // A change still ends the wait.
        q.enqueue("a".into());
        assert_eq!(q.take(10), names(&["a"]));
    }
}
