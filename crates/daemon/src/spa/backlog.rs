//! The SPA backlog: packets that passed the cheap checks and hold their crypto budget,
//! waiting for the capture loop's next crypto slice.
//!
//! Bounded, and fair between source prefixes: packets leave in round-robin order over
//! the prefixes that have any waiting (so a packet from a quiet prefix waits for at
//! most one packet of each other prefix, not for a flood's whole queue), and when the
//! backlog is full the newcomer displaces the oldest packet of the longest queue. A
//! prefix that already holds the longest queue loses its own newcomer instead. So one
//! flooding prefix (or many) can never keep a packet from another prefix out.

use std::collections::{HashMap, VecDeque};

use super::budget::Prefix;

/// Packets waiting at most (native crypto ~0.1 ms each: a full backlog is tens of ms).
pub const CAPACITY: usize = 256;

/// Waiting packets, by source prefix.
pub struct Backlog<T> {
    queues: HashMap<Prefix, VecDeque<T>>,
    /// Prefixes with packets waiting, in serving order (each appears once).
    order: VecDeque<Prefix>,
    len: usize,
    capacity: usize,
}

impl<T> Backlog<T> {
    /// An empty backlog holding at most `capacity` packets (at least one).
    pub fn new(capacity: usize) -> Backlog<T> {
        Backlog { queues: HashMap::new(), order: VecDeque::new(), len: 0, capacity: capacity.max(1) }
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue `item` from prefix `p`. Returns the packet that had to go to make room (the
    /// oldest of the longest queue, or `item` itself if `p` holds the longest queue).
    pub fn push(&mut self, p: Prefix, item: T) -> Option<T> {
        let mut dropped = None;
        if self.len >= self.capacity {
            let own = self.queues.get(&p).map_or(0, VecDeque::len);
            let longest = self.queues.iter().max_by_key(|(_, q)| q.len()).map(|(k, q)| (*k, q.len()));
            match longest {
                Some((victim, n)) if n > own => {
                    dropped = self.queues.get_mut(&victim).and_then(VecDeque::pop_front);
                    self.len -= usize::from(dropped.is_some());
                    if self.queues.get(&victim).is_some_and(VecDeque::is_empty) {
                        self.queues.remove(&victim);
                        self.order.retain(|k| *k != victim);
                    }
                }
                _ => return Some(item),
            }
        }
        let q = self.queues.entry(p).or_default();
        if q.is_empty() {
            self.order.push_back(p);
        }
        q.push_back(item);
        self.len += 1;
        dropped
    }

    /// The next packet: the oldest of the prefix whose turn it is.
    pub fn pop(&mut self) -> Option<T> {
        let p = self.order.pop_front()?;
        let q = self.queues.get_mut(&p)?;
        let item = q.pop_front();
        if q.is_empty() {
            self.queues.remove(&p);
        } else {
            self.order.push_back(p);
        }
        self.len -= usize::from(item.is_some());
        item
    }

    /// Take every waiting packet, in serving order.
    pub fn drain(&mut self) -> Vec<T> {
        std::iter::from_fn(|| self.pop()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::of(s.parse::<IpAddr>().unwrap(), 24, 56)
    }

    #[test]
    fn prefixes_take_turns() {
        let mut b = Backlog::new(16);
        for i in 0..5 {
            assert!(b.push(p("198.18.0.1"), ("flood", i)).is_none());
        }
        b.push(p("192.0.2.7"), ("legit", 0));
        b.push(p("198.51.100.1"), ("other", 0));
        let served: Vec<_> = b.drain();
        assert_eq!(served[..3], [("flood", 0), ("legit", 0), ("other", 0)]);
        assert_eq!(
            served[3..],
            [("flood", 1), ("flood", 2), ("flood", 3), ("flood", 4)],
            "FIFO within a prefix"
        );
        assert!(b.is_empty());
        assert_eq!(b.pop(), None);
    }

    #[test]
    fn a_full_backlog_drops_from_the_longest_queue() {
        let mut b = Backlog::new(4);
        for i in 0..4 {
            assert_eq!(b.push(p("198.18.0.1"), i), None);
        }
        // The flooding prefix's own newcomer is refused...
        assert_eq!(b.push(p("198.18.0.99"), 4), Some(4));
        // ...another prefix's displaces the flood's oldest.
        assert_eq!(b.push(p("192.0.2.7"), 100), Some(0));
        assert_eq!(b.len(), 4);
        assert_eq!(b.drain(), vec![1, 100, 2, 3]);
    }

    #[test]
    fn many_flooding_prefixes_cannot_keep_a_newcomer_out() {
        let mut b = Backlog::new(CAPACITY);
        let mut dropped = 0;
        for round in 0..10u32 {
            for i in 0..128u32 {
                let src = IpAddr::from([198, 18, i as u8, 1]);
                dropped += usize::from(b.push(Prefix::of(src, 24, 56), (i, round)).is_some());
            }
        }
        assert_eq!(b.len(), CAPACITY);
        assert_eq!(dropped, 128 * 10 - CAPACITY);
        // A newcomer gets in, and out again after at most one packet of each other prefix.
        assert!(b.push(p("192.0.2.7"), (999, 0)).is_some(), "room is made, not refused");
        let pos = b.drain().iter().position(|x| x.0 == 999).unwrap();
        assert!(pos <= 128, "{pos}");
    }

    #[test]
    fn a_single_slot_backlog_still_serves_newcomers() {
        let mut b = Backlog::new(0);
        assert_eq!(b.push(p("198.18.0.1"), 1), None);
        assert_eq!(b.push(p("198.18.0.2"), 2), Some(2));
        assert_eq!(b.push(p("192.0.2.1"), 3), Some(1));
        assert_eq!(b.drain(), vec![3]);
    }
}
