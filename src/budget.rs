//! The bytes of chunks in flight, bounded.
//!
//! A chunk's memory lives from the read that made it until every output has encoded it: in the
//! queue to the outputs, in each output's queue, in the batch being built. A bound on how many
//! chunks may wait does not bound that memory, and it stalls the pipeline: stages whose labels
//! split each read into dozens of small chunks (one per stream) fill a queue of a few chunks
//! with a few kilobytes, and reading then waits for shipping at every step (measured: 22 % more
//! wall-clock time and 12 % more CPU on an nginx regex → labels → timestamp pipeline). So queues
//! are long in chunks, and the bytes are what is bounded: an input reserves a chunk's bytes
//! before it sends the chunk, and the chunk gives them back when its last holder drops it.
//!
//! A batch waits for more lines (up to `batchwait`) only while more can come: when an input
//! waits for bytes, the budget says so ([`Budget::starved`]) and outputs send what they have
//! batched at once. Bytes of memory and a batch's `batchsize` (bytes of lines) are not the
//! same measure: chunks whose buffers had grown to twice their lines (stages copying lines
//! into a growing text, short lines and their index) ran out of budget before any batch was
//! full, and then every batch waited out `batchwait` while reading waited for the budget
//! (measured on `multiline`: 10 requests a second with `batchwait: 100ms`, a tenth of the
//! throughput; with Promtail's default of 1 s, a hundredth).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// How often a waiting input looks whether it should give up (the outputs went away).
const RECHECK: Duration = Duration::from_millis(100);

/// Bytes of chunks in flight, and their limit.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<State>,
    freed: Condvar,
    /// True while an input waits for bytes.
    starved: watch::Sender<bool>,
}

#[derive(Debug)]
struct State {
    reserved: usize,
    limit: usize,
    /// Inputs waiting for bytes: a chunk given back wakes them only if there are any, since
    /// a wake-up is a system call and chunks are given back by the thousand per second.
    waiting: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            state: Mutex::new(State {
                reserved: 0,
                limit,
                waiting: 0,
            }),
            freed: Condvar::new(),
            starved: watch::Sender::new(false),
        })
    }

    /// A budget that never makes anyone wait (tests, tools).
    pub fn unlimited() -> Arc<Budget> {
        Budget::new(usize::MAX)
    }

    /// Changes the limit (a reload changed the outputs' batch sizes).
    pub fn set_limit(&self, limit: usize) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .limit = limit;
        self.freed.notify_all();
    }

    /// Turns true while an input waits for bytes: whatever an output holds back for a fuller
    /// batch should go now, since no more lines can come until something is given back.
    pub fn starved(&self) -> watch::Receiver<bool> {
        self.starved.subscribe()
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reserved
    }

    /// Waits until `bytes` fit under the limit, then reserves them. A reservation larger than
    /// the whole limit is granted when nothing else is reserved, so that it cannot wait
    /// forever. Returns None, without reserving, once `give_up` says so.
    pub fn reserve(
        self: &Arc<Self>,
        bytes: usize,
        give_up: impl Fn() -> bool,
    ) -> Option<Reservation> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if state.reserved == 0 || state.reserved.saturating_add(bytes) <= state.limit {
                state.reserved = state.reserved.saturating_add(bytes);
                return Some(Reservation {
                    budget: self.clone(),
                    bytes,
                });
            }
            if give_up() {
                return None;
            }
            state.waiting += 1;
            if state.waiting == 1 {
                self.starved.send_replace(true);
            }
            state = self
                .freed
                .wait_timeout(state, RECHECK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting -= 1;
            if state.waiting == 0 {
                self.starved.send_replace(false);
            }
        }
    }
}

/// Bytes held from a [`Budget`] until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self
            .budget
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.reserved = state.reserved.saturating_sub(self.bytes);
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.budget.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_reservation_waits_until_enough_is_given_back() {
        let budget = Budget::new(100);
        let first = budget.reserve(60, || false).unwrap();
        let waited = Arc::new(AtomicBool::new(false));
        let (b, w) = (budget.clone(), waited.clone());
        let second = std::thread::spawn(move || {
            let r = b.reserve(60, || false);
            w.store(true, Ordering::SeqCst);
            r.map(|r| r.bytes)
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !waited.load(Ordering::SeqCst),
            "60 + 60 bytes fit under 100"
        );
        drop(first);
        assert_eq!(second.join().unwrap(), Some(60));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn an_oversized_reservation_goes_alone_and_a_waiter_can_give_up() {
        let budget = Budget::new(100);
        let big = budget.reserve(1_000, || false).unwrap();
        assert_eq!(budget.in_use(), 1_000);
        assert!(budget.reserve(1, || true).is_none());
        drop(big);
        assert!(budget.reserve(1, || true).is_some());
    }

    #[test]
    fn a_waiting_input_is_seen_as_starved_until_it_gets_its_bytes() {
        let budget = Budget::new(100);
        let starved = budget.starved();
        let held = budget.reserve(100, || false).unwrap();
        assert!(!*starved.borrow());
        let b = budget.clone();
        let waiter = std::thread::spawn(move || b.reserve(50, || false).is_some());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !*starved.borrow() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(*starved.borrow(), "the waiting input was not reported");
        drop(held);
        assert!(waiter.join().unwrap());
        assert!(!*starved.borrow());
    }

    #[test]
    fn a_higher_limit_wakes_a_waiter() {
        let budget = Budget::new(100);
        let _held = budget.reserve(100, || false).unwrap();
        let b = budget.clone();
        let waiter = std::thread::spawn(move || b.reserve(50, || false).is_some());
        std::thread::sleep(Duration::from_millis(50));
        budget.set_limit(200);
        assert!(waiter.join().unwrap());
    }
}
