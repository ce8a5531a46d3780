//! Logging in: USER and PASS, password checks that leave the loop as jobs
//! and come back as verdicts, names claimed from the ledger, the login
//! throttle and orphaned checks, telnet echo around the text password
//! prompt, and what a reload does to sessions and checks under way.

use super::ledger::{Claim, Taken};
use super::refusal::{AccountChange, AskAgain, NoVerdict, QuitReason, Refusal};
use super::{ConnId, Hub, Now};
use crate::accounts::Users;
use crate::auth::{Check, Checked};
use crate::proto::{Ref, ServerMsg, Username};
use crate::session::{Input, Login, Mode, State};
use crate::throttle::Wait;
use std::num::NonZeroU64;

/// Failed passwords one connection may try before it is closed.
pub const MAX_PASSWORD_FAILURES: u8 = 3;

/// Telnet: the server will echo (so the client stops its local echo), and
/// the end of that.
pub(super) const WILL_ECHO: &[u8] = &[255, 251, 1];
pub(super) const WONT_ECHO: &[u8] = &[255, 252, 1];
/// What the server echoes of a line typed with echo off: its end only.
pub(super) const ECHOED_LINE_END: &[u8] = b"\r\n";

/// A password to check against an argon2 hash, off the event loop. The
/// shell runs it and answers with `Hub::handle_verified`.
pub struct VerifyJob {
    pub conn: ConnId,
    /// Matches the answer to the attempt; a stale answer is ignored.
    pub ticket: u64,
    /// The account's PHC hash, or `None` for an unknown user (the worker
    /// then spends the same time on a dummy hash).
    pub hash: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for VerifyJob {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VerifyJob {{ conn: {}, ticket: {} }}",
            self.conn, self.ticket
        )
    }
}

/// The 429 for a throttled login attempt.
pub(super) fn throttle_refusal(wait: Wait) -> Refusal {
    let wait_secs = wait.ms().div_ceil(1000);
    match wait {
        Wait::Blocked { .. } => Refusal::Throttled { wait_secs },
        Wait::InFlight => Refusal::TooManyChecks { wait_secs },
    }
}

impl Hub {
    /// The rules a password check under way was started by are gone (a
    /// reload away from accounts): its verdict is an orphan's (counted,
    /// logs nobody in), and the client is asked for the password again,
    /// checked by the new rules. Before, the old account's verdict logged
    /// in after a switch to a shared password the client never sent.
    pub(super) fn void_pending_checks(&mut self) {
        for index in 0..self.clients.slots.len() {
            let conn = ConnId(index);
            let is_checking = self
                .clients
                .get(conn)
                .is_some_and(|client| client.pending_check.is_some());
            if is_checking {
                let reference = self.orphan_pending_check(conn);
                self.answering_late(conn, reference, |hub| {
                    hub.ask_password_again(conn, NoVerdict::RulesChanged);
                });
            }
        }
    }

    /// A reload changed the users file: a session logged in to an account
    /// that was removed, or whose password was changed, proved a
    /// credential that no longer holds, so it is told (403) and closed; a
    /// password check under way for such an account is void (503, send
    /// PASS again: it is checked against the new file). Before, a removed
    /// account kept chatting under its name, and kept it from a new owner.
    pub(super) fn revoke_changed_accounts(&mut self, old: &Users, new: &Users) {
        for index in 0..self.clients.slots.len() {
            let conn = ConnId(index);
            let Some(client) = self.clients.get(conn) else {
                continue;
            };
            let (username, is_logged_in) = match &client.state {
                State::Broadcast { username } => (username.clone(), true),
                State::PassAuth { username } if client.pending_check.is_some() => {
                    (username.clone(), false)
                }
                _ => continue,
            };
            let change = match (old.hash_of(&username), new.hash_of(&username)) {
                (Some(_), None) => AccountChange::Removed,
                (Some(old), Some(new)) if old != new => AccountChange::PasswordChanged,
                // Checked against the dummy hash, it would fail.
                (None, Some(_)) => AccountChange::Created,
                _ => continue,
            };
            if is_logged_in {
                self.clients
                    .send(conn, &Refusal::AccountChanged { username, change }.to_msg());
                self.quit(conn, QuitReason::AccountChanged);
            } else {
                // The worker still runs the old check: its verdict is an
                // orphan's (counted, logs nobody in).
                let reference = self.orphan_pending_check(conn);
                self.answering_late(conn, reference, |hub| {
                    hub.ask_password_again(conn, NoVerdict::AccountChanged { username, change });
                });
            }
        }
    }

    /// Names have just become accounts (a reload to `auth = "accounts"`): a
    /// session logged in under open or password auth never proved it owns
    /// its name's account, so it is told (403) and closed, as a RENAME into
    /// that name would be refused (issue 11).
    pub(super) fn close_unaccounted_sessions(&mut self) {
        for index in 0..self.clients.slots.len() {
            let conn = ConnId(index);
            let is_logged_in = self
                .clients
                .get(conn)
                .is_some_and(|client| client.state.username().is_some());
            if is_logged_in {
                self.clients
                    .send(conn, &Refusal::NamesAreAccountsNow.to_msg());
                self.quit(conn, QuitReason::AuthChangedToAccounts);
            }
        }
    }

    /// The peer has shown itself to be a telnet client (the codec saw IAC):
    /// its password prompt will turn the client's local echo off.
    /// Idempotent; the shell may say it after every read.
    pub fn handle_telnet(&mut self, conn: ConnId) {
        if let Some(client) = self.clients.get_mut(conn) {
            client.is_telnet = true;
        }
    }

    /// Password checks to run off the loop, oldest first.
    pub fn drain_verify_jobs(&mut self) -> std::vec::Drain<'_, VerifyJob> {
        self.verify_jobs.drain(..)
    }

    /// The answer to a `VerifyJob`. Ignored if the connection is gone or
    /// has moved on (the ticket no longer matches).
    pub fn handle_verified(&mut self, conn: ConnId, ticket: u64, checked: Checked, now: Now) {
        if let Some((address, name)) = self.orphan_checks.remove(&ticket) {
            // Its client left: nobody logs in, but a wrong password was
            // still a guess the worker paid for (issue 11 sweep: checks
            // abandoned by a disconnect were free, so one address could
            // keep the verifier's queue full without a single failure).
            if checked == Checked::Valid {
                self.throttle.abandon(address, name.as_str());
            } else {
                self.throttle
                    .record_failure(address, name.as_str(), now.mono_ms);
                self.cluster_count_failure(address, &name, None);
            }
            return;
        }
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.pending_check.map(NonZeroU64::get) != Some(ticket) {
            return;
        }
        client.pending_check = None;
        self.resumed.push(conn);
        let reference = self.check_refs.remove(&ticket);
        if let State::PassAuth { username } = client.state.clone() {
            self.answering_late(conn, reference, |hub| {
                hub.finish_pass(conn, username, checked, now);
            });
        }
    }

    /// The verifier's queue is full: the check is refused, not lost.
    pub fn handle_verify_busy(&mut self, conn: ConnId, ticket: u64) {
        if let Some((address, name)) = self.orphan_checks.remove(&ticket) {
            // Never run: nothing to count.
            self.throttle.abandon(address, name.as_str());
            return;
        }
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.pending_check.map(NonZeroU64::get) == Some(ticket) {
            let reference = self.end_pending_check(conn);
            self.answering_late(conn, reference, |hub| {
                hub.ask_password_again(conn, NoVerdict::VerifierBusy);
            });
        }
    }

    /// 429 while the client's address or the name is throttled.
    pub(super) fn check_throttle(
        &self,
        conn: ConnId,
        username: &Username,
        now: Now,
    ) -> Result<(), Refusal> {
        let Some(client) = self.clients.get(conn) else {
            return Ok(());
        };
        self.throttle
            .check(client.peer.ip(), username.key().as_str(), now.mono_ms)
            .map_err(throttle_refusal)
    }

    /// Passwords travel only over TLS, or over loopback, when so configured.
    pub(super) fn check_password_transport(&self, conn: ConnId) -> Result<(), Refusal> {
        let Some(client) = self.clients.get(conn) else {
            return Ok(());
        };
        if self.config.require_tls_for_password
            && !client.is_tls
            && !client.peer.ip().is_loopback()
            && !client.peer.ip().to_canonical().is_loopback()
        {
            return Err(Refusal::PasswordNeedsTls);
        }
        Ok(())
    }

    /// USER, the asking half. Open auth claims the name from the ledger,
    /// and `user_claimed` logs in. Behind a password the name is only
    /// checked: it is claimed once the password is verified (`finish_pass`),
    /// so an unauthenticated USER holds nothing and nobody can squat an
    /// account's name (issue 11).
    pub(super) fn user(
        &mut self,
        conn: ConnId,
        username: Username,
        now: Now,
    ) -> Result<(), Refusal> {
        match self.config.auth.login() {
            Login::Open => {
                if self.cluster.is_some() {
                    // Claimed cluster-wide; `handle_cluster` applies it.
                    return self.cluster_claim(conn, username, None, false);
                }
                let claim = self.ledger.claim_name(conn, username)?;
                self.user_claimed(conn, claim);
            }
            Login::Password => {
                self.ledger.check_name(conn, &username)?;
                self.check_password_transport(conn)?;
                if self.cluster.is_some() {
                    // The throttle's counts are the cluster's:
                    // `handle_cluster` checks them and goes on.
                    return self.cluster_read_throttle(conn, username, None);
                }
                self.check_throttle(conn, &username, now)?;
                self.password_user_accepted(conn, username);
            }
        }
        Ok(())
    }

    /// USER behind a password, admitted by the throttle: the password is
    /// asked for.
    pub(super) fn password_user_accepted(&mut self, conn: ConnId, username: Username) {
        self.transition(
            conn,
            Input::UserAccepted {
                username,
                login: Login::Password,
            },
        );
        self.prompt_password(conn);
    }

    /// USER under open auth, the applying half: the session logs in under
    /// the granted name.
    pub(super) fn user_claimed(&mut self, conn: ConnId, claim: Claim) {
        self.transition(
            conn,
            Input::UserAccepted {
                username: claim.username().clone(),
                login: Login::Open,
            },
        );
        self.logged_in(conn, claim);
    }

    pub(super) fn pass(
        &mut self,
        conn: ConnId,
        username: Username,
        password: String,
        now: Now,
    ) -> Result<(), Refusal> {
        self.check_password_transport(conn)?;
        if self
            .clients
            .get(conn)
            .is_some_and(|client| client.pending_check.is_some())
            || self.is_claiming(conn)
        {
            return Err(Refusal::CheckUnderWay);
        }
        // Counted from now, not from the verdict: checks in flight count
        // against the throttle, so parallel guesses are no cheaper than
        // sequential ones (issue 11). `finish_pass`, `end_pending_check`
        // or, once its client has left, the orphan's verdict ends the count.
        let address = self
            .clients
            .get(conn)
            .map(|client| client.peer.ip())
            .ok_or(Refusal::ConnectionGone)?;
        if self.cluster.is_some() {
            // The throttle's counts are the cluster's: `handle_cluster`
            // begins the check with them (`begin_shared`) and goes on.
            return self.cluster_read_throttle(conn, username, Some(password));
        }
        self.throttle
            .begin(address, username.key().as_str(), now.mono_ms)
            .map_err(throttle_refusal)?;
        self.start_check(conn, username, password, now);
        Ok(())
    }

    /// A PASS admitted by the throttle (and counted in flight): the
    /// password is checked, at once or by the verifier.
    pub(super) fn start_check(
        &mut self,
        conn: ConnId,
        username: Username,
        password: String,
        now: Now,
    ) {
        match self.config.auth.check(&username, &password) {
            Check::Decided(checked) => self.finish_pass(conn, username, checked, now),
            Check::Hash(hash) => {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                if let Some(client) = self.clients.get_mut(conn) {
                    client.pending_check = NonZeroU64::new(ticket);
                }
                // The verdict answers this PASS: keep its ref till then.
                if let Some(answering) = self.answering.as_ref().filter(|a| a.conn == conn) {
                    self.check_refs.insert(ticket, answering.reference.clone());
                }
                self.verify_jobs.push(VerifyJob {
                    conn,
                    ticket,
                    hash,
                    password,
                });
            }
        }
    }

    /// A password verdict. A right password asks the ledger for the name
    /// (`pass_claimed` applies its answer); a wrong one is counted.
    pub(super) fn finish_pass(
        &mut self,
        conn: ConnId,
        username: Username,
        checked: Checked,
        now: Now,
    ) {
        let Some(address) = self.clients.get(conn).map(|client| client.peer.ip()) else {
            return;
        };
        if checked == Checked::Valid {
            self.throttle
                .record_success(address, username.key().as_str(), now.mono_ms);
            self.cluster_clear_failures(address, &username.key());
            if self.cluster.is_some() {
                // Claimed cluster-wide; `handle_cluster` applies it.
                match self.cluster_claim(conn, username, None, true) {
                    Ok(()) => {}
                    Err(Refusal::NameTaken(username)) => {
                        self.pass_claimed(conn, Err(Taken(username)))
                    }
                    Err(refusal) => self.refuse(conn, refusal),
                }
                return;
            }
            let claim = self.ledger.claim_name(conn, username);
            self.pass_claimed(conn, claim);
            return;
        }
        self.throttle
            .record_failure(address, username.key().as_str(), now.mono_ms);
        if self.cluster.is_some() {
            // Counted cluster-wide before the client hears of it, so the
            // next attempt, on any node, meets the count.
            self.cluster_count_failure(address, &username.key(), Some((conn, username)));
            return;
        }
        self.wrong_password(conn, username);
    }

    /// A wrong password, counted: 401, and the connection closed after
    /// `MAX_PASSWORD_FAILURES`.
    pub(super) fn wrong_password(&mut self, conn: ConnId, username: Username) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        client.failures += 1;
        let failures = client.failures;
        let is_text = client.mode == Some(Mode::Text);
        log::info!(
            "{} wrong password for {username} ({failures} of {MAX_PASSWORD_FAILURES})",
            client.tag(conn)
        );
        if failures >= MAX_PASSWORD_FAILURES {
            self.answer(conn, &Refusal::WrongPasswordClosing.to_msg());
            self.quit(conn, QuitReason::TooManyWrongPasswords);
        } else if is_text {
            // A person retypes what they typed: keep reading passwords, so
            // a retyped password is never taken for a username and
            // announced (issue 11). `/quit` leaves.
            self.answer(conn, &Refusal::WrongPasswordTypeAgain.to_msg());
            self.prompt_password(conn);
        } else {
            self.transition(conn, Input::PasswordRejected);
            self.answer(conn, &Refusal::WrongPasswordSendUserAgain.to_msg());
        }
    }

    /// A verified password's claim, the applying half: logged in under
    /// the granted name, or, if someone took it while the password was
    /// checked, asked again (JSON) or closed (text).
    pub(super) fn pass_claimed(&mut self, conn: ConnId, claim: Result<Claim, Taken>) {
        let claim = match claim {
            Ok(claim) => claim,
            Err(Taken(username)) => {
                self.transition(conn, Input::NameTaken);
                let is_text = self
                    .clients
                    .get(conn)
                    .is_some_and(|client| client.mode == Some(Mode::Text));
                if is_text {
                    // A person may already be typing at what was the
                    // password prompt; read as a username, that line could
                    // be announced. Close instead (issue 11).
                    self.clients
                        .send(conn, &Refusal::NameTakenDuringCheck(username).to_msg());
                    self.quit(conn, QuitReason::NameTakenDuringCheck);
                } else {
                    self.refuse(conn, Refusal::NameTakenSendUserAgain(username));
                }
                return;
            }
        };
        self.transition(conn, Input::PasswordAccepted);
        self.logged_in(conn, claim);
    }

    /// Logged in under a name the ledger granted: 201, then the default
    /// room.
    pub(super) fn logged_in(&mut self, conn: ConnId, claim: Claim) {
        let username = claim.into_username();
        if let Some(client) = self.clients.get(conn) {
            log::info!("{} login {username}", client.tag(conn));
        }
        self.answer(
            conn,
            &ServerMsg::YourName {
                username: username.clone(),
            },
        );
        let room = self.config.default_room.clone();
        self.enter_room(conn, username, room);
    }

    /// A check that got no verdict (503): JSON clients are told to send
    /// PASS again; a person at the text prompt is asked for the password
    /// again, in text mode's words, and prompted.
    pub(super) fn ask_password_again(&mut self, conn: ConnId, why: NoVerdict) {
        let is_text = self
            .clients
            .get(conn)
            .is_some_and(|client| client.mode == Some(Mode::Text));
        let again = if is_text {
            AskAgain::TypeThePassword
        } else {
            AskAgain::SendPass
        };
        self.answer(conn, &Refusal::NoVerdict { why, again }.to_msg());
        if is_text {
            self.prompt_password(conn);
        }
    }

    /// Asks for the password (211 / `* password:`). A telnet client in text
    /// mode is first told `IAC WILL ECHO`, so it stops echoing what is
    /// typed; `transition` turns echo back on when PASS AUTH ends.
    pub(super) fn prompt_password(&mut self, conn: ConnId) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.is_telnet && client.mode == Some(Mode::Text) && !client.is_echo_off {
            client.is_echo_off = true;
            self.clients.enqueue_with(conn, |_, arena| {
                arena.append(|out| out.extend_from_slice(WILL_ECHO))
            });
        }
        self.answer(conn, &ServerMsg::PassNeeded);
    }

    /// Gives a telnet client its local echo back (`IAC WONT ECHO`) if the
    /// password prompt took it.
    pub(super) fn restore_echo(&mut self, conn: ConnId) {
        let Some(client) = self.clients.get_mut(conn) else {
            return;
        };
        if client.is_echo_off {
            client.is_echo_off = false;
            self.clients.enqueue_with(conn, |_, arena| {
                arena.append(|out| out.extend_from_slice(WONT_ECHO))
            });
        }
    }

    /// Forgets the password check under way, if any, without a verdict:
    /// the throttle stops counting it in flight. Returns the ref of the
    /// PASS it was checking, if that carried one, for what answers it.
    pub(super) fn end_pending_check(&mut self, conn: ConnId) -> Option<Ref> {
        let client = self.clients.get_mut(conn)?;
        let ticket = client.pending_check.take()?;
        if let State::PassAuth { username } = &client.state {
            self.throttle
                .abandon(client.peer.ip(), username.key().as_str());
        }
        self.resume(conn);
        self.check_refs.remove(&ticket.get())
    }

    /// The client leaves while its password check runs: the worker runs it
    /// anyway, so it stays in flight for the throttle until its verdict
    /// (`handle_verified` counts a wrong one), as if the client had waited.
    /// Returns the ref of the PASS it was checking, if that carried one
    /// (the orphan's verdict answers nobody).
    pub(super) fn orphan_pending_check(&mut self, conn: ConnId) -> Option<Ref> {
        let client = self.clients.get_mut(conn)?;
        let ticket = client.pending_check.take()?;
        if let State::PassAuth { username } = &client.state {
            self.orphan_checks
                .insert(ticket.get(), (client.peer.ip(), username.key()));
        }
        self.check_refs.remove(&ticket.get())
    }
}
