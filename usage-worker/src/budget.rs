//! The worker's own memory layer: a watcher thread compares the counted heap with the budget
//! (80% of the cap) every few milliseconds while a job runs, and cancels a job that crosses it.
//! The job then ends with a typed over-budget refusal and the worker stays up, before the
//! supervisor's RSS watch or the kernel would have to kill it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::alloc;

/// How often the heap is compared with the budget during a job.
const POLL: Duration = Duration::from_millis(5);

/// The running job's cancel flag and its over-budget mark.
type Slot = Arc<Mutex<Option<(Arc<AtomicBool>, Arc<AtomicBool>)>>>;

/// Watches the heap against a budget; one per worker.
pub struct Watch {
    slot: Slot,
}

/// Marks one job as watched; unwatched again when dropped.
pub struct Guard<'a> {
    watch: &'a Watch,
    tripped: Arc<AtomicBool>,
}

impl Watch {
    /// Starts the watcher thread; a budget of 0 disables it.
    pub fn start(budget: u64) -> Watch {
        let slot: Slot = Arc::default();
        if budget > 0 {
            let slot = Arc::clone(&slot);
            std::thread::Builder::new()
                .name("memory-budget".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(POLL);
                        if alloc::heap_bytes() <= budget {
                            continue;
                        }
                        if let Some((cancel, tripped)) = slot.lock().expect("budget slot").as_ref() {
                            if !tripped.swap(true, Ordering::Relaxed) {
                                tracing::warn!(
                                    heap = alloc::heap_bytes(),
                                    budget,
                                    "Job crossed the memory budget; cancelling it."
                                );
                            }
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                })
                .expect("spawn the memory budget thread");
        }
        Watch { slot }
    }

    /// Watches the job whose cancel flag is `cancel` until the guard drops.
    pub fn guard(&self, cancel: &Arc<AtomicBool>) -> Guard<'_> {
        let tripped = Arc::new(AtomicBool::new(false));
        *self.slot.lock().expect("budget slot") = Some((Arc::clone(cancel), Arc::clone(&tripped)));
        Guard { watch: self, tripped }
    }
}

impl Guard<'_> {
    /// Whether the job crossed the budget.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        *self.watch.slot.lock().expect("budget slot") = None;
    }
}
