//! Fair queueing between flows for the calls that wait for an agent: one flow is one module
//! source (an app pod's address; on a Unix socket, the peer process). A flood from one app must
//! not switch inspection off for the others, so waiting calls sit in 64 queues, served round
//! robin one call at a time (deficit round robin with equal costs: every call is one inspection),
//! and when there is no room the call shed is the newest of the longest queue. As in FQ-CoDel,
//! a queue that was empty goes ahead of the queues that stayed busy: a light flow's call waits
//! for one freed slot, not for a turn behind every flooding queue.
//!
//! A flow is hashed to a hand of two queues and joins the shorter (shuffle sharding, as in
//! Kubernetes API Priority and Fairness): two flows share both their queues only by a 1 in ~2,000
//! chance, and the number of queues, not of flows, bounds the work of a decision.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;

/// Queues a flow is spread over.
pub(crate) const SHARDS: usize = 64;

/// Where a module's calls come from, for fairness: never a metric label.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Flow {
    /// A TCP peer: its address (IPv4-mapped IPv6 folded to IPv4).
    Ip(IpAddr),
    /// A Unix socket peer: its process and user (`SO_PEERCRED`).
    Process { pid: i32, uid: u32 },
    /// A peer whose identity could not be read: one shared flow.
    Unknown,
}

impl Flow {
    /// The flow of a TCP peer address.
    pub(crate) fn ip(ip: IpAddr) -> Self {
        Self::Ip(ip.to_canonical())
    }

    /// The two queues this flow may join.
    pub(crate) fn hand(&self) -> (usize, usize) {
        // Fixed keys: the same flow lands in the same queues for the process's life, and an
        // attacker gains nothing from knowing them (the hand only spreads, it never favours).
        let h = hash_of(self);
        let first = (h % SHARDS as u64) as usize;
        let offset = ((h >> 32) % (SHARDS as u64 - 1)) as usize;
        (first, (first + 1 + offset) % SHARDS)
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flow::Ip(ip) => write!(f, "{ip}"),
            Flow::Process { pid, uid } => write!(f, "pid {pid} uid {uid}"),
            Flow::Unknown => f.write_str("unknown"),
        }
    }
}

fn hash_of(flow: &Flow) -> u64 {
    std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(flow)
}

/// The waiting calls, in [`SHARDS`] queues served round robin. `T` is what a waiter holds; each
/// entry has an id so a waiter that gives up can take itself out.
#[derive(Debug)]
pub(crate) struct FairQueue<T> {
    shards: Vec<VecDeque<(u64, T)>>,
    /// Queues that were empty when their entry came, served first.
    fresh: VecDeque<usize>,
    /// Queues that stayed busy, in serving order. A queue is in one ring at most once.
    ring: VecDeque<usize>,
    in_ring: [bool; SHARDS],
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| VecDeque::new()).collect(),
            fresh: VecDeque::new(),
            ring: VecDeque::new(),
            in_ring: [false; SHARDS],
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Entries waiting in all queues.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The queue a call of `flow` joins: the shorter of its hand.
    pub(crate) fn shard_for(&self, flow: &Flow) -> usize {
        let (a, b) = flow.hand();
        if self.shards[b].len() < self.shards[a].len() {
            b
        } else {
            a
        }
    }

    /// Entries in queue `shard`.
    pub(crate) fn shard_len(&self, shard: usize) -> usize {
        self.shards[shard].len()
    }

    /// The longest queue (the first of equals) outside `flow`'s hand, if any has entries.
    pub(crate) fn heaviest_but(&self, flow: &Flow) -> Option<usize> {
        let (a, b) = flow.hand();
        (0..SHARDS)
            .filter(|&i| i != a && i != b && !self.shards[i].is_empty())
            .max_by_key(|&i| (self.shards[i].len(), std::cmp::Reverse(i)))
    }

    /// Appends an entry to queue `shard`.
    pub(crate) fn push(&mut self, shard: usize, id: u64, item: T) {
        self.shards[shard].push_back((id, item));
        self.len += 1;
        if !self.in_ring[shard] {
            self.in_ring[shard] = true;
            self.fresh.push_back(shard);
        }
    }

    /// The next entry: the oldest of the next fresh queue, else of the next busy queue in
    /// round-robin order. A fresh queue served moves to the busy ones even when it is empty (as
    /// in FQ-CoDel): a flow that keeps refilling its queue the moment it empties is busy, not
    /// fresh, and cannot keep cutting in ahead of a light flow. An empty busy queue leaves.
    pub(crate) fn pop(&mut self) -> Option<(u64, T)> {
        loop {
            let (shard, fresh) = match self.fresh.pop_front() {
                Some(shard) => (shard, true),
                None => (self.ring.pop_front()?, false),
            };
            let Some(entry) = self.shards[shard].pop_front() else {
                if fresh {
                    self.ring.push_back(shard);
                } else {
                    self.in_ring[shard] = false;
                }
                continue;
            };
            self.len -= 1;
            self.ring.push_back(shard);
            return Some(entry);
        }
    }

    /// Takes out the newest entry of queue `shard` (to shed it in favour of a lighter flow).
    pub(crate) fn pop_newest(&mut self, shard: usize) -> Option<(u64, T)> {
        let entry = self.shards[shard].pop_back()?;
        self.len -= 1;
        Some(entry)
    }

    /// Takes out entry `id` of queue `shard`, if it is still there.
    pub(crate) fn remove(&mut self, shard: usize, id: u64) -> Option<T> {
        let q = &mut self.shards[shard];
        let at = q.iter().position(|(i, _)| *i == id)?;
        self.len -= 1;
        q.remove(at).map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(last: u8) -> Flow {
        Flow::ip(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_flow_has_two_distinct_queues_and_mapped_addresses_are_one_flow() {
        for i in 0..=255 {
            let (a, b) = flow(i).hand();
            assert!(a != b && a < SHARDS && b < SHARDS);
        }
        let mapped = Flow::ip("::ffff:10.0.0.7".parse().unwrap());
        assert_eq!(mapped, flow(7));
    }

    #[test]
    fn a_queue_that_was_empty_goes_before_the_busy_ones() {
        let mut q = FairQueue::default();
        for id in 0..100 {
            q.push(3, id, "flood");
            q.push(4, 1000 + id, "flood");
        }
        assert_eq!(q.pop().unwrap().0, 0);
        assert_eq!(q.pop().unwrap().0, 1000);
        q.push(9, 5000, "light");
        assert_eq!(
            q.pop().unwrap().1,
            "light",
            "the light queue's call is served next"
        );
        // The busy queues alternate.
        let next: Vec<_> = (0..4).map(|_| q.pop().unwrap().0).collect();
        assert_eq!(next, [1, 1001, 2, 1002]);
        assert_eq!(q.len(), 194);
    }

    #[test]
    fn a_queue_refilled_as_soon_as_it_empties_stays_busy() {
        let mut q = FairQueue::default();
        q.push(3, 1, "flood");
        assert_eq!(q.pop().unwrap().0, 1);
        // The flood's queue is empty for a moment, and refilled at once.
        q.push(3, 2, "flood");
        q.push(9, 100, "light");
        assert_eq!(
            q.pop().unwrap().1,
            "light",
            "the flood's refilled queue is not fresh"
        );
        assert_eq!(q.pop().unwrap().0, 2);
        assert!(q.pop().is_none() && q.len() == 0);
        // Both queues left the rings on their empty turn: the light one is fresh again.
        q.push(3, 3, "flood");
        q.push(9, 101, "light");
        q.pop();
        q.push(3, 4, "flood");
        assert_eq!(q.pop().unwrap().1, "light");
    }

    #[test]
    fn the_heaviest_queue_loses_its_newest_entry() {
        let mut q = FairQueue::default();
        q.push(1, 1, ());
        q.push(2, 2, ());
        q.push(2, 3, ());
        let f = flow(1);
        let (a, b) = f.hand();
        let other = (0..SHARDS).find(|i| ![a, b, 2].contains(i)).unwrap();
        assert_eq!(q.heaviest_but(&f), (a != 2 && b != 2).then_some(2));
        q.push(other, 9, ());
        q.push(other, 10, ());
        q.push(other, 11, ());
        assert_eq!(q.heaviest_but(&f), Some(other));
        assert_eq!(q.pop_newest(other).map(|e| e.0), Some(11));
        assert_eq!(q.pop_newest(other).map(|e| e.0), Some(10));
        assert_eq!(q.pop_newest(other).map(|e| e.0), Some(9));
        assert_eq!(q.pop_newest(2).map(|e| e.0), Some(3));
        assert_eq!(q.len(), 2);
        assert_eq!(q.remove(1, 1), Some(()));
        assert_eq!(q.remove(1, 1), None);
        assert_eq!(q.pop().map(|e| e.0), Some(2));
        assert!(q.pop().is_none() && q.len() == 0);
    }

    #[test]
    fn a_flow_joins_the_shorter_queue_of_its_hand() {
        let mut q = FairQueue::default();
        let f = flow(1);
        let (a, b) = f.hand();
        q.push(a, 1, ());
        assert_eq!(q.shard_for(&f), b);
        q.push(b, 2, ());
        q.push(b, 3, ());
        assert_eq!(q.shard_for(&f), a);
    }
}
