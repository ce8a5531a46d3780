//! Who may log in: open, one shared server password, or per-user accounts.
//! Decides what a password check needs; loading secrets is `config`'s job
//! and argon2 verification runs off the event loop (`server/verifier.rs`).

use crate::accounts::Users;
use crate::proto::{AuthKind, Username};
use crate::session::Login;
use std::fmt;
use std::sync::Arc;

/// The server's authentication policy.
#[derive(Clone)]
pub enum Auth {
    /// Any free username logs in at once.
    Open,
    /// Every user must send the shared password after USER.
    Password { secret: Vec<u8> },
    /// Every user has an account with an argon2id hash in the users file.
    Accounts { users: Arc<Users> },
}

/// Whether a password was the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Valid,
    Wrong,
}

impl Checked {
    pub fn from_match(is_match: bool) -> Checked {
        if is_match {
            Checked::Valid
        } else {
            Checked::Wrong
        }
    }
}

/// What checking a password takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Decided at once (cheap: open auth or the shared password).
    Decided(Checked),
    /// An argon2 verification against this hash, or against a dummy hash
    /// when the account does not exist (`None`), off the event loop.
    Hash(Option<String>),
}

impl PartialEq for Auth {
    fn eq(&self, other: &Auth) -> bool {
        match (self, other) {
            (Auth::Open, Auth::Open) => true,
            (Auth::Password { secret }, Auth::Password { secret: other }) => secret == other,
            (Auth::Accounts { users }, Auth::Accounts { users: other }) => users == other,
            _ => false,
        }
    }
}

impl Eq for Auth {}

impl fmt::Debug for Auth {
    /// Never prints the secret, whatever logs the config.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Open => f.write_str("Open"),
            Auth::Password { .. } => f.write_str("Password { secret: <hidden> }"),
            Auth::Accounts { users } => write!(f, "Accounts {{ {} users }}", users.len()),
        }
    }
}

impl Auth {
    pub fn kind(&self) -> AuthKind {
        match self {
            Auth::Open => AuthKind::Open,
            Auth::Password { .. } => AuthKind::Password,
            Auth::Accounts { .. } => AuthKind::Accounts,
        }
    }

    /// What a USER with a free name leads to under this policy.
    pub fn login(&self) -> Login {
        match self {
            Auth::Open => Login::Open,
            Auth::Password { .. } | Auth::Accounts { .. } => Login::Password,
        }
    }

    /// What it takes to check `password` for `username`.
    pub fn check(&self, username: &Username, password: &str) -> Check {
        match self {
            Auth::Open => Check::Decided(Checked::Valid),
            Auth::Password { .. } => Check::Decided(Checked::from_match(self.verify(password))),
            Auth::Accounts { users } => Check::Hash(users.hash_of(username).map(str::to_owned)),
        }
    }

    /// Checks the shared password in time that depends only on the lengths,
    /// not on where the first wrong byte is. Accounts never verify here.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            Auth::Open => true,
            Auth::Password { secret } => constant_time_eq(secret, password.as_bytes()),
            Auth::Accounts { .. } => false,
        }
    }
}

fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut difference = expected.len() ^ given.len();
    for (index, &byte) in given.iter().enumerate() {
        let wanted = expected
            .get(index % expected.len().max(1))
            .copied()
            .unwrap_or(0);
        difference |= usize::from(byte ^ wanted);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(secret: &str) -> Auth {
        Auth::Password {
            secret: secret.as_bytes().to_vec(),
        }
    }

    #[test]
    fn only_the_exact_password_verifies() {
        let auth = password("s3cret");
        assert!(auth.verify("s3cret"));
        for wrong in ["", "s3cre", "s3cret ", "S3cret", "s3cres", "s3crets3cret"] {
            assert!(!auth.verify(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn open_needs_no_password() {
        assert_eq!(Auth::Open.login(), Login::Open);
        assert!(Auth::Open.verify("anything"));
        assert_eq!(password("x").login(), Login::Password);
    }

    #[test]
    fn debug_output_hides_the_secret() {
        assert!(!format!("{:?}", password("hunter2")).contains("hunter2"));
    }
}
