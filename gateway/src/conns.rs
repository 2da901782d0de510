//! The connection cap: at most `max` client connections (HTTP and WebSocket) at once, so file
//! descriptors never run out and `/healthz` is always answered.
//!
//! At the cap a new connection is still accepted, and the connection idle the longest is closed
//! to make room: an HTTP connection between requests (never sent one, or idle on keep-alive) or a
//! WebSocket that has not completed `connect`. Connections with a request in progress, and
//! authenticated WebSockets, are never closed for room; when nothing is idle a new connection is
//! refused at once unless the small overflow allowance (1/16 of the cap) has room. An attacker
//! holding idle sockets therefore only ever pushes out its own oldest ones, and a probe, which
//! sends its request at once, gets through.
//!
//! The default cap comes from the open-file limit, which `serve` first raises from its soft to its
//! hard value (systemd's `LimitNOFILE=`): [`default_max`] keeps an eighth of it (at least 64)
//! for the listener, the worker socket, logs and what the runtime opens.
//!
//! Idle order is a FIFO of (slot, generation) entries: becoming idle pushes one, becoming busy
//! makes it stale by bumping the generation, and eviction pops until it finds a live one; stale
//! entries are compacted away when they outnumber live slots, so each step is O(1) amortised.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

/// Fraction of the cap allowed above it when nothing idle can be closed.
const OVERFLOW_DIVISOR: usize = 16;

/// The cap for a soft open-file limit of `nofile`.
pub fn default_max(nofile: u64) -> usize {
    let reserve = (nofile / 8).max(64);
    usize::try_from(nofile.saturating_sub(reserve)).unwrap_or(usize::MAX).clamp(16, 1 << 20)
}

/// Raises the soft open-file limit to the hard one and returns the soft limit in force.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

#[derive(Debug)]
struct SlotState {
    generation: u64,
    /// Requests in progress (HTTP), or held busy for good (authenticated WebSocket).
    busy: usize,
    evict: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    slots: HashMap<u64, SlotState>,
    idle: VecDeque<(u64, u64)>,
    evicted_total: u64,
    refused_total: u64,
}

/// The registry of open connections.
#[derive(Debug)]
pub struct ConnLimit {
    max: usize,
    table: Mutex<Table>,
}

/// One admitted connection; cloned into whatever serves it (the HTTP task, then the WebSocket
/// task after an upgrade). The connection leaves the registry when the last clone drops.
#[derive(Debug, Clone)]
pub struct Slot(Arc<SlotInner>);

#[derive(Debug)]
struct SlotInner {
    id: u64,
    limit: Arc<ConnLimit>,
    evicted: watch::Receiver<bool>,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let mut table = self.limit.table.lock().expect("conns");
        table.slots.remove(&self.id);
    }
}

impl ConnLimit {
    pub fn new(max: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit { max: max.max(1), table: Mutex::new(Table::default()) })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Admits a new connection (idle until it starts a request), closing the longest-idle one
    /// when at the cap; `None`: refuse it.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut table = self.table.lock().expect("conns");
        if table.slots.len() >= self.max {
            let mut evicted = false;
            while let Some((id, generation)) = table.idle.pop_front() {
                let live = table.slots.get(&id).filter(|s| s.generation == generation && s.busy == 0);
                if let Some(slot) = live {
                    let _ = slot.evict.send(true);
                    // Out of the count now: its task is closing it.
                    table.slots.remove(&id);
                    table.evicted_total += 1;
                    evicted = true;
                    break;
                }
            }
            if !evicted && table.slots.len() >= self.max + self.max / OVERFLOW_DIVISOR {
                table.refused_total += 1;
                return None;
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let (evict, evicted) = watch::channel(false);
        table.slots.insert(id, SlotState { generation: 0, busy: 0, evict });
        table.idle.push_back((id, 0));
        Some(Slot(Arc::new(SlotInner { id, limit: Arc::clone(self), evicted })))
    }

    /// (open, evicted so far, refused so far).
    pub fn counts(&self) -> (usize, u64, u64) {
        let table = self.table.lock().expect("conns");
        (table.slots.len(), table.evicted_total, table.refused_total)
    }
}

impl Slot {
    /// A request started: not closable for room until [`Slot::idle`].
    pub fn busy(&self) {
        let mut table = self.0.limit.table.lock().expect("conns");
        if let Some(slot) = table.slots.get_mut(&self.0.id) {
            slot.busy += 1;
            slot.generation += 1;
        }
    }

    /// A request finished; at zero in progress the connection is closable again, newest last.
    pub fn idle(&self) {
        let limit = &self.0.limit;
        let mut table = limit.table.lock().expect("conns");
        let Some(slot) = table.slots.get_mut(&self.0.id) else { return };
        slot.busy = slot.busy.saturating_sub(1);
        if slot.busy > 0 {
            return;
        }
        slot.generation += 1;
        let entry = (self.0.id, slot.generation);
        table.idle.push_back(entry);
        if table.idle.len() > 2 * table.slots.len() + 64 {
            let Table { slots, idle, .. } = &mut *table;
            idle.retain(|(id, g)| slots.get(id).is_some_and(|s| s.generation == *g && s.busy == 0));
        }
    }

    /// Resolves when the connection was chosen to be closed for room.
    pub async fn evicted(&self) {
        let mut rx = self.0.evicted.clone();
        let _ = rx.wait_for(|v| *v).await;
        // A dropped sender (registry entry gone) also ends here; only a real eviction matters,
        // and a sender is only dropped by an eviction or by this slot's own drop.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_idle_connection_makes_room() {
        let limit = ConnLimit::new(3);
        let a = limit.admit().unwrap();
        let b = limit.admit().unwrap();
        let c = limit.admit().unwrap();
        a.busy();
        // At the cap: b (idle longest) goes, a (busy) stays.
        let d = limit.admit().unwrap();
        assert!(*b.0.evicted.borrow());
        assert!(!*a.0.evicted.borrow() && !*c.0.evicted.borrow());
        assert_eq!(limit.counts(), (3, 1, 0));
        // a finishes its request: it is now the newest idle one; c goes first.
        a.idle();
        let _e = limit.admit().unwrap();
        assert!(*c.0.evicted.borrow() && !*a.0.evicted.borrow());
        drop((b, c, d));
    }

    #[test]
    fn nothing_idle_means_a_small_overflow_then_refusal() {
        let limit = ConnLimit::new(16);
        let held: Vec<Slot> = (0..16)
            .map(|_| {
                let s = limit.admit().unwrap();
                s.busy();
                s
            })
            .collect();
        let over = limit.admit().expect("one over the cap (16/16)");
        over.busy();
        assert!(limit.admit().is_none());
        assert_eq!(limit.counts(), (17, 0, 1));
        drop(held);
        assert_eq!(limit.counts().0, 1);
    }

    #[test]
    fn stale_entries_are_compacted() {
        let limit = ConnLimit::new(4);
        let s = limit.admit().unwrap();
        for _ in 0..1000 {
            s.busy();
            s.idle();
        }
        assert!(limit.table.lock().unwrap().idle.len() <= 2 + 64 + 1);
    }

    #[test]
    fn defaults_keep_room() {
        assert_eq!(default_max(1024), 896);
        assert_eq!(default_max(65536), 57344);
        assert_eq!(default_max(100), 36);
        assert_eq!(default_max(10), 16);
    }
}
