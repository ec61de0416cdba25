//! The per-file ledger of chunks in flight.

use crate::positions::AckedOffset;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy)]
struct InFlight {
    end: u64,
    unsettled: u32,
    /// Until the chunk is handed to the outputs, nobody knows how many must settle it.
    armed: bool,
}

/// The chunks of one file that were sent but not yet settled by every output, in read order.
///
/// The acknowledged offset is the end of the longest settled prefix: a chunk settled out of
/// order waits for every earlier one, so a restart never skips an unsettled line.
///
/// ```
/// use logferry::acknowledge::Ledger;
/// use logferry::positions::AckedOffset;
/// let mut ledger = Ledger::new(AckedOffset::START);
/// let a = ledger.dispatch(100, 2); // sent to two outputs
/// let b = ledger.dispatch(250, 2);
/// ledger.settle(b);
/// ledger.settle(b);
/// assert_eq!(ledger.acked().get(), 0); // `a` is still out
/// ledger.settle(a);
/// assert_eq!(ledger.acked().get(), 0); // one output still holds `a`
/// ledger.settle(a);
/// assert_eq!(ledger.acked().get(), 250);
/// ```
#[derive(Debug)]
pub struct Ledger {
    acked: AckedOffset,
    /// Sequence number of `in_flight[0]`.
    first_seq: u64,
    in_flight: VecDeque<InFlight>,
}

impl Ledger {
    /// A ledger for a file whose bytes before `start` are already settled.
    pub fn new(start: AckedOffset) -> Ledger {
        Ledger {
            acked: start,
            first_seq: 0,
            in_flight: VecDeque::new(),
        }
    }

    /// Records a chunk ending at file offset `end`, sent to `outputs` outputs, and returns its
    /// sequence number. A chunk sent to no output is settled at once.
    pub fn dispatch(&mut self, end: u64, outputs: u32) -> u64 {
        let seq = self.reserve(end);
        self.arm(seq, outputs);
        seq
    }

    /// Records a chunk ending at file offset `end` whose outputs are not known yet: it holds
    /// the position back until it is [armed](Self::arm) and settled.
    pub fn reserve(&mut self, end: u64) -> u64 {
        let seq = self.first_seq + self.in_flight.len() as u64;
        self.in_flight.push_back(InFlight {
            end,
            unsettled: 0,
            armed: false,
        });
        seq
    }

    /// The reserved chunk `seq` goes to `outputs` outputs (0: it is settled at once). Returns
    /// whether the acknowledged offset moved.
    pub fn arm(&mut self, seq: u64, outputs: u32) -> bool {
        let Some(index) = seq.checked_sub(self.first_seq) else {
            return false;
        };
        match self.in_flight.get_mut(index as usize) {
            Some(chunk) if !chunk.armed => {
                chunk.armed = true;
                chunk.unsettled = outputs;
            }
            _ => return false,
        }
        self.advance()
    }

    /// `more` outputs will settle chunk `seq` too (it went to outputs added meanwhile). Only
    /// a chunk still in flight can take more; returns whether it did.
    pub fn add_outputs(&mut self, seq: u64, more: u32) -> bool {
        let Some(index) = seq.checked_sub(self.first_seq) else {
            return false;
        };
        match self.in_flight.get_mut(index as usize) {
            Some(chunk) if chunk.armed && chunk.unsettled > 0 => {
                chunk.unsettled += more;
                true
            }
            _ => false,
        }
    }

    /// One output settled chunk `seq`. Settling an unknown or already settled chunk does
    /// nothing. Returns whether the acknowledged offset moved.
    pub fn settle(&mut self, seq: u64) -> bool {
        let Some(index) = seq.checked_sub(self.first_seq) else {
            return false;
        };
        match self.in_flight.get_mut(index as usize) {
            Some(chunk) if chunk.armed && chunk.unsettled > 0 => chunk.unsettled -= 1,
            _ => return false,
        }
        self.advance()
    }

    fn advance(&mut self) -> bool {
        let mut moved = false;
        while let Some(front) = self.in_flight.front() {
            if !front.armed || front.unsettled > 0 {
                break;
            }
            self.acked = AckedOffset::acknowledged(front.end);
            self.in_flight.pop_front();
            self.first_seq += 1;
            moved = true;
        }
        moved
    }

    /// The end of the settled prefix.
    pub fn acked(&self) -> AckedOffset {
        self.acked
    }

    /// How many chunks are still out.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_settles_move_the_offset() {
        let mut l = Ledger::new(AckedOffset::acknowledged(10));
        let a = l.dispatch(20, 1);
        let b = l.dispatch(30, 1);
        assert!(l.settle(a));
        assert_eq!(l.acked().get(), 20);
        assert!(l.settle(b));
        assert_eq!(l.acked().get(), 30);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn out_of_order_settles_wait_for_the_prefix() {
        let mut l = Ledger::new(AckedOffset::START);
        let seqs: Vec<u64> = (1..=5).map(|i| l.dispatch(i * 10, 1)).collect();
        for &s in seqs.iter().rev().take(4) {
            assert!(!l.settle(s));
            assert_eq!(l.acked().get(), 0);
        }
        assert!(l.settle(seqs[0]));
        assert_eq!(l.acked().get(), 50);
    }

    #[test]
    fn double_and_unknown_settles_are_ignored() {
        let mut l = Ledger::new(AckedOffset::START);
        let a = l.dispatch(5, 2);
        l.settle(a);
        l.settle(a);
        assert_eq!(l.acked().get(), 5);
        assert!(!l.settle(a));
        assert!(!l.settle(99));
        assert_eq!(l.acked().get(), 5);
    }

    #[test]
    fn reserved_chunks_hold_the_position_until_armed_and_settled() {
        let mut l = Ledger::new(AckedOffset::START);
        let a = l.reserve(10);
        let b = l.dispatch(20, 1);
        assert!(
            !l.settle(a),
            "a reserved chunk cannot be settled before it is armed"
        );
        l.settle(b);
        assert_eq!(l.acked().get(), 0);
        l.arm(a, 2);
        l.settle(a);
        assert_eq!(l.acked().get(), 0);
        assert!(l.settle(a));
        assert_eq!(l.acked().get(), 20);
    }

    #[test]
    fn chunks_for_no_output_settle_at_once() {
        let mut l = Ledger::new(AckedOffset::START);
        l.dispatch(7, 0);
        assert_eq!(l.acked().get(), 7);
    }

    /// Any order of settles by any number of outputs ends with the offset of the last chunk,
    /// and never shows an offset past an unsettled chunk on the way.
    #[test]
    fn model_random_orders() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let outputs = (rand() % 3 + 1) as u32;
            let chunks = (rand() % 20 + 1) as usize;
            let mut l = Ledger::new(AckedOffset::START);
            let seqs: Vec<u64> = (0..chunks)
                .map(|i| l.dispatch((i as u64 + 1) * 100, outputs))
                .collect();
            let mut pending: Vec<u64> = seqs
                .iter()
                .flat_map(|&s| std::iter::repeat_n(s, outputs as usize))
                .collect();
            let mut remaining = vec![outputs; chunks];
            while !pending.is_empty() {
                let i = (rand() % pending.len() as u64) as usize;
                let s = pending.swap_remove(i);
                remaining[s as usize] -= 1;
                l.settle(s);
                let settled_prefix = remaining.iter().take_while(|&&r| r == 0).count();
                assert_eq!(l.acked().get(), settled_prefix as u64 * 100);
            }
            assert_eq!(l.acked().get(), chunks as u64 * 100);
        }
    }
}
