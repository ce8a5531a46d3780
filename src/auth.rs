//! Who may log in: open, or one shared server password. Verification only;
//! loading the secret from its file is `config`'s job.

use crate::proto::AuthKind;
use std::fmt;

/// The server's authentication policy.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// Any free username logs in at once.
    Open,
    /// Every user must send the shared password after USER.
    Password { secret: Vec<u8> },
}

impl fmt::Debug for Auth {
    /// Never prints the secret, whatever logs the config.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Open => f.write_str("Open"),
            Auth::Password { .. } => f.write_str("Password { secret: <hidden> }"),
        }
    }
}

impl Auth {
    pub fn kind(&self) -> AuthKind {
        match self {
            Auth::Open => AuthKind::Open,
            Auth::Password { .. } => AuthKind::Password,
        }
    }

    pub fn needs_password(&self) -> bool {
        matches!(self, Auth::Password { .. })
    }

    /// Checks a password in time that depends only on the lengths, not on
    /// where the first wrong byte is.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            Auth::Open => true,
            Auth::Password { secret } => constant_time_eq(secret, password.as_bytes()),
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
        assert!(!Auth::Open.needs_password());
        assert!(Auth::Open.verify("anything"));
        assert!(password("x").needs_password());
    }

    #[test]
    fn debug_output_hides_the_secret() {
        assert!(!format!("{:?}", password("hunter2")).contains("hunter2"));
    }
}
