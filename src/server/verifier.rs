//! The password verifier: one worker thread that runs argon2 so the event
//! loop never does. Jobs go in over a bounded channel; results come back
//! over another, and a `mio::Waker` makes the loop look at them.
//!
//! One thread is enough on a 2-core machine: logins queue behind each other
//! instead of stealing the event loop's core, and the queue bound turns a
//! login storm into 503s instead of unbounded memory.

use crate::accounts;
use crate::auth::Checked;
use crate::hub::{ConnId, VerifyJob};
use mio::Waker;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

/// Jobs waiting for the worker; more are refused (the client gets 503).
const QUEUE: usize = 256;

/// A finished check.
#[derive(Debug)]
pub struct Verdict {
    pub conn: ConnId,
    pub ticket: u64,
    pub checked: Checked,
}

pub struct Verifier {
    /// Set when the server stops: jobs still queued are dropped unchecked.
    stopping: Arc<AtomicBool>,
    /// Checks the worker has run (logged at the stop; read by tests).
    checked: Arc<AtomicUsize>,
    jobs: Option<SyncSender<VerifyJob>>,
    verdicts: Receiver<Verdict>,
    worker: Option<JoinHandle<()>>,
}

impl Verifier {
    /// Starts the worker. Call after any fork. The dummy hash for unknown
    /// users is built here, before the server listens, so the first
    /// unknown-user check costs what every other one costs.
    pub fn start(waker: Arc<Waker>) -> std::io::Result<Verifier> {
        let mut checker = accounts::Checker::new().map_err(std::io::Error::other)?;
        let (jobs, job_queue) = mpsc::sync_channel::<VerifyJob>(QUEUE);
        let (verdict_sender, verdicts) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let worker_stopping = Arc::clone(&stopping);
        let checked = Arc::new(AtomicUsize::new(0));
        let worker_checked = Arc::clone(&checked);
        let worker = std::thread::Builder::new()
            .name("riftd-verify".to_owned())
            .spawn(move || {
                for job in job_queue {
                    if worker_stopping.load(Ordering::Relaxed) {
                        // Nobody waits for these verdicts any more.
                        return;
                    }
                    let checked =
                        Checked::from_match(checker.verify(job.hash.as_deref(), &job.password));
                    worker_checked.fetch_add(1, Ordering::Relaxed);
                    let verdict = Verdict {
                        conn: job.conn,
                        ticket: job.ticket,
                        checked,
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
            stopping,
            checked,
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
    /// outlives the server; jobs still queued are dropped, not checked
    /// (before, the worker checked all of them first: 250 queued checks
    /// kept a stopping riftd alive 4 s after "shutdown complete", and
    /// costlier hashes past systemd's stop timeout).
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
            log::debug!(
                "password verifier stopped after {} check(s)",
                self.checked.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    /// Waits (bounded) for the worker's wake-up and its verdict.
    fn next_verdict(poll: &mut Poll, verifier: &Verifier) -> Verdict {
        let mut events = Events::with_capacity(4);
        for _ in 0..100 {
            if let Some(verdict) = verifier.verdicts().next() {
                return verdict;
            }
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll works");
        }
        panic!("no verdict within 10 s");
    }

    #[test]
    fn stopping_drops_the_queued_checks_instead_of_running_them() {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let verifier = Verifier::start(waker).unwrap();
        let checked = Arc::clone(&verifier.checked);
        for ticket in 0..64 {
            let job = VerifyJob {
                conn: ConnId(1),
                ticket,
                hash: None,
                password: "guess".to_owned(),
            };
            assert!(verifier.submit(job).is_ok());
        }
        // Before: drop ran all 64 (a second of argon2) before returning.
        drop(verifier);
        let run = checked.load(Ordering::Relaxed);
        assert!(run < 8, "{run} of 64 queued checks ran after the stop");
    }

    #[test]
    fn the_started_worker_checks_unknown_users_against_the_dummy_built_at_start() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        // `start` builds the dummy hash (`accounts::Checker::new`) before it
        // returns; the worker owns it and has no lazy path.
        let verifier = Verifier::start(waker).unwrap();
        let known = accounts::hash_password("right").unwrap();
        for (ticket, hash, password, expected) in [
            (1, None, "anything", false),
            (2, Some(known.clone()), "wrong", false),
            (3, Some(known), "right", true),
        ] {
            let job = VerifyJob {
                conn: ConnId(7),
                ticket,
                hash,
                password: password.to_owned(),
            };
            assert!(verifier.submit(job).is_ok());
            let verdict = next_verdict(&mut poll, &verifier);
            assert_eq!(
                (verdict.ticket, verdict.checked),
                (ticket, Checked::from_match(expected))
            );
        }
    }
}
