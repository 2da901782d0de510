//! The calls a worker connection carries: usage jobs with the callers waiting on them, and
//! on-demand pings. One table under one lock, so a job's caller, its deadline bookkeeping and
//! its cancel state can never disagree (they were three maps and a counter).

use std::collections::HashMap;

use ipc_proto::{MemoryReport, RequestId, UsageReply};
use tokio::{sync::oneshot, time::Instant};

use crate::CallError;

/// Where a job's answer goes.
pub(crate) type Reply = oneshot::Sender<Result<UsageReply, CallError>>;

/// A job the worker has been sent and not yet answered.
#[derive(Debug)]
pub(crate) struct Job {
    /// Hash of the query: what poison tracking counts deaths by.
    pub(crate) query_key: u64,
    pub(crate) started: Instant,
    /// When the job was cancelled (caller gone, or past its deadline); `None` while wanted.
    pub(crate) cancel_sent: Option<Instant>,
    /// The caller, while one waits. A cancelled job keeps its entry without one until the
    /// worker answers, so a job that ignores its cancel is still seen.
    reply: Option<Reply>,
}

impl Job {
    pub(crate) fn new(query_key: u64, reply: Reply) -> Job {
        Job { query_key, started: Instant::now(), cancel_sent: None, reply: Some(reply) }
    }
}

/// Every call on one worker connection.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    pub(crate) jobs: HashMap<RequestId, Job>,
    /// On-demand pings (`status --deep`) by sequence number, apart from the heartbeat's.
    pub(crate) pings: HashMap<u64, oneshot::Sender<MemoryReport>>,
}

impl Calls {
    /// Jobs with a caller still waiting: the status's `jobs_in_flight`.
    pub(crate) fn waiting(&self) -> usize {
        self.jobs.values().filter(|job| job.reply.is_some()).count()
    }

    /// The worker answered `id`: hands the answer to its caller, if one still waits, and returns
    /// the job.
    pub(crate) fn answer(&mut self, id: RequestId, result: Result<UsageReply, CallError>) -> Option<Job> {
        let mut job = self.jobs.remove(&id)?;
        if let Some(reply) = job.reply.take() {
            let _ = reply.send(result);
        }
        Some(job)
    }

    /// The caller of `id` went away: drops its reply and marks the job cancelled. True when the
    /// job is still running, i.e. the worker should be told.
    pub(crate) fn cancel(&mut self, id: RequestId) -> bool {
        match self.jobs.get_mut(&id) {
            Some(job) => {
                job.reply = None;
                job.cancel_sent.get_or_insert_with(Instant::now);
                true
            }
            None => false,
        }
    }

    /// The connection ended: every waiting caller gets `WorkerDied` at once, and the jobs that
    /// were running are returned for blame.
    pub(crate) fn fail_all(&mut self) -> Vec<(RequestId, Job)> {
        self.pings.clear();
        let mut jobs: Vec<(RequestId, Job)> = self.jobs.drain().collect();
        for (_, job) in &mut jobs {
            if let Some(reply) = job.reply.take() {
                let _ = reply.send(Err(CallError::WorkerDied));
            }
        }
        jobs.sort_by_key(|(id, _)| *id);
        jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_job_stays_until_answered_and_counts_as_not_waiting() {
        let mut calls = Calls::default();
        let (tx, mut rx) = oneshot::channel();
        calls.jobs.insert(7, Job::new(1, tx));
        assert_eq!(calls.waiting(), 1);
        assert!(calls.cancel(7), "a running job is cancelled in the worker");
        assert_eq!(calls.waiting(), 0);
        assert!(calls.jobs[&7].cancel_sent.is_some(), "kept for the cancel-grace watch");
        assert!(rx.try_recv().is_err(), "the caller went away; nothing is sent");
        assert!(calls.answer(7, Err(CallError::WorkerDied)).is_some());
        assert!(!calls.cancel(7), "an answered job needs no cancel");
    }

    #[tokio::test]
    async fn failing_all_answers_every_waiting_caller() {
        let mut calls = Calls::default();
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        calls.jobs.insert(2, Job::new(20, tx2));
        calls.jobs.insert(1, Job::new(10, tx1));
        let (ping, pong) = oneshot::channel();
        calls.pings.insert(5, ping);
        let ended = calls.fail_all();
        assert_eq!(ended.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2], "oldest first");
        assert!(matches!(rx1.await, Ok(Err(CallError::WorkerDied))));
        assert!(matches!(rx2.await, Ok(Err(CallError::WorkerDied))));
        assert!(pong.await.is_err(), "a probe ping fails too");
        assert_eq!(calls.waiting(), 0);
    }
}
