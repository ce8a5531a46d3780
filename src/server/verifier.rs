//! The password verifier: one worker thread that runs argon2 so the event
//! loop never does. Jobs go in over a bounded channel; results come back
//! over another, and a `mio::Waker` makes the loop look at them.
//!
//! One thread is enough on a 2-core machine: logins queue behind each other
//! instead of stealing the event loop's core, and the queue bound turns a
//! login storm into 503s instead of unbounded memory.

use crate::accounts;
use crate::hub::{ConnId, VerifyJob};
use mio::Waker;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

/// Jobs waiting for the worker; more are refused (the client gets 503).
const QUEUE: usize = 256;

/// A finished check.
#[derive(Debug)]
pub struct Verdict {
    pub conn: ConnId,
    pub ticket: u64,
    pub is_valid: bool,
}

pub struct Verifier {
    jobs: Option<SyncSender<VerifyJob>>,
    verdicts: Receiver<Verdict>,
    worker: Option<JoinHandle<()>>,
}

impl Verifier {
    /// Starts the worker. Call after any fork.
    pub fn start(waker: Arc<Waker>) -> std::io::Result<Verifier> {
        let (jobs, job_queue) = mpsc::sync_channel::<VerifyJob>(QUEUE);
        let (verdict_sender, verdicts) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("riftd-verify".to_owned())
            .spawn(move || {
                for job in job_queue {
                    let is_valid = accounts::verify(job.hash.as_deref(), &job.password);
                    let verdict = Verdict {
                        conn: job.conn,
                        ticket: job.ticket,
                        is_valid,
                    };
                    if verdict_sender.send(verdict).is_err() {
                        return;
                    }
                    if let Err(error) = waker.wake() {
                        log::error!("verifier cannot wake the event loop: {error}");
                    }
                }
            })?;
        Ok(Verifier {
            jobs: Some(jobs),
            verdicts,
            worker: Some(worker),
        })
    }

    /// Queues a job; gives it back when the queue is full.
    pub fn submit(&self, job: VerifyJob) -> Result<(), VerifyJob> {
        match self.jobs.as_ref().map(|jobs| jobs.try_send(job)) {
            Some(Ok(())) => Ok(()),
            Some(Err(TrySendError::Full(job) | TrySendError::Disconnected(job))) => Err(job),
            None => Ok(()),
        }
    }

    /// Verdicts that arrived since the last call.
    pub fn verdicts(&self) -> impl Iterator<Item = Verdict> + '_ {
        self.verdicts.try_iter()
    }
}

impl Drop for Verifier {
    /// Closes the queue and waits for the job in hand, so no thread
    /// outlives the server.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
