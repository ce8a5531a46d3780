//! The per-connection state machine: LISTEN → USER AUTH → PASS AUTH →
//! BROADCAST → QUIT, which codes each state accepts, and the transitions.
//!
//! It is the one place that decides legality (`State::allows`) and the one
//! place that moves a session (`State::next`); it mirrors the table in
//! `design/protocol.md`. It knows nothing of other users, sockets or JSON.

use crate::proto::{Code, Username};
use thiserror::Error;

/// How the connection speaks, fixed by its first non-empty line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The first line started with `{`: every frame is one JSON object.
    Json,
    /// Anything else: readable lines for a person at `nc` or `telnet`.
    Text,
}

/// What a granted USER leads to: chatting at once, or a password first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// Open auth: the name is held and the session is logged in.
    Open,
    /// The password (shared or the account's) must be verified first.
    Password,
}

/// Where a connection is in its life. Each state carries what it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Accepted and greeted; the mode is not known yet.
    Listen,
    /// Waiting for a username (USER, or the first text line).
    UserAuth,
    /// The name to log in as once the password is verified. It is not
    /// held yet: others may take it meanwhile (then PASS gets 409).
    PassAuth { username: Username },
    /// Logged in and chatting.
    Broadcast { username: Username },
    /// Leaving: nothing more is read; owed output is flushed, then it closes.
    Quit,
}

/// What happened, as far as the state machine cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The first non-empty line arrived (its mode is recorded separately).
    FirstLine,
    /// A free, valid username was accepted (and, with `Login::Open`, held).
    UserAccepted {
        username: Username,
        login: Login,
    },
    PasswordAccepted,
    PasswordRejected,
    /// The password was right but the name was taken meanwhile.
    NameTaken,
    Renamed {
        username: Username,
    },
    /// QUIT, a closed socket, a fatal error or shutdown.
    Leave,
}

/// A transition the machine does not have: a bug in the caller, never peer
/// input (peer input is screened by `State::allows` first).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("no transition from {state} on {input:?}")]
pub struct SessionError {
    pub state: &'static str,
    pub input: Input,
}

impl State {
    /// The state's name as the protocol documents it (used in 403 errors).
    pub fn name(&self) -> &'static str {
        match self {
            State::Listen => "LISTEN",
            State::UserAuth => "USER AUTH",
            State::PassAuth { .. } => "PASS AUTH",
            State::Broadcast { .. } => "BROADCAST",
            State::Quit => "QUIT",
        }
    }

    /// Whether a client frame with `code` is legal here. Anything else gets
    /// 403 and leaves the state unchanged.
    pub fn allows(&self, code: Code) -> bool {
        use Code::*;
        match self {
            // A line in LISTEN first moves the session to USER AUTH; nothing
            // is handled in LISTEN itself.
            State::Listen | State::Quit => false,
            State::UserAuth => matches!(code, User | Ping | Quit),
            State::PassAuth { .. } => matches!(code, Pass | Ping | Quit),
            State::Broadcast { .. } => matches!(
                code,
                Say | Rename | Dm | Who | Join | Part | History | Rooms | Ping | Quit
            ),
        }
    }

    /// The logged-in user, if any.
    pub fn username(&self) -> Option<&Username> {
        match self {
            State::Broadcast { username } => Some(username),
            _ => None,
        }
    }

    /// The transition function.
    pub fn next(&self, input: Input) -> Result<State, SessionError> {
        let next = match (self, &input) {
            (State::Quit, _) => return self.no_transition(input),
            (_, Input::Leave) => State::Quit,
            (State::Listen, Input::FirstLine) => State::UserAuth,
            (
                State::UserAuth,
                Input::UserAccepted {
                    username,
                    login: Login::Password,
                },
            ) => State::PassAuth {
                username: username.clone(),
            },
            (
                State::UserAuth,
                Input::UserAccepted {
                    username,
                    login: Login::Open,
                },
            ) => State::Broadcast {
                username: username.clone(),
            },
            (State::PassAuth { username }, Input::PasswordAccepted) => State::Broadcast {
                username: username.clone(),
            },
            (State::PassAuth { .. }, Input::PasswordRejected | Input::NameTaken) => State::UserAuth,
            (State::Broadcast { .. }, Input::Renamed { username }) => State::Broadcast {
                username: username.clone(),
            },
            _ => return self.no_transition(input),
        };
        Ok(next)
    }

    fn no_transition(&self, input: Input) -> Result<State, SessionError> {
        Err(SessionError {
            state: self.name(),
            input,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn alice() -> Username {
        Username::parse("alice").unwrap()
    }

    fn bob() -> Username {
        Username::parse("bob").unwrap()
    }

    const ALL_CLIENT_CODES: [Code; 12] = [
        Code::Say,
        Code::History,
        Code::Rename,
        Code::Dm,
        Code::Who,
        Code::Join,
        Code::Part,
        Code::Rooms,
        Code::Ping,
        Code::Quit,
        Code::User,
        Code::Pass,
    ];

    fn allowed(state: &State) -> Vec<Code> {
        ALL_CLIENT_CODES
            .into_iter()
            .filter(|&code| state.allows(code))
            .collect()
    }

    #[test]
    fn listen_moves_to_user_auth_on_the_first_line_and_allows_nothing() {
        assert_eq!(allowed(&State::Listen), vec![]);
        assert_eq!(State::Listen.next(Input::FirstLine), Ok(State::UserAuth));
        assert!(State::Listen.next(Input::PasswordAccepted).is_err());
    }

    #[test]
    fn user_auth_allows_user_ping_quit() {
        assert_eq!(
            allowed(&State::UserAuth),
            vec![Code::Ping, Code::Quit, Code::User]
        );
    }

    #[test]
    fn user_auth_goes_to_broadcast_in_open_mode_and_pass_auth_otherwise() {
        assert_eq!(
            State::UserAuth.next(Input::UserAccepted {
                username: alice(),
                login: Login::Open
            }),
            Ok(State::Broadcast { username: alice() })
        );
        assert_eq!(
            State::UserAuth.next(Input::UserAccepted {
                username: alice(),
                login: Login::Password
            }),
            Ok(State::PassAuth { username: alice() })
        );
        assert!(State::UserAuth.next(Input::FirstLine).is_err());
        assert!(State::UserAuth.next(Input::PasswordAccepted).is_err());
    }

    #[test]
    fn pass_auth_allows_pass_ping_quit() {
        assert_eq!(
            allowed(&State::PassAuth { username: alice() }),
            vec![Code::Ping, Code::Quit, Code::Pass]
        );
    }

    #[test]
    fn pass_auth_goes_to_broadcast_on_success_and_back_to_user_auth_on_failure() {
        let state = State::PassAuth { username: alice() };
        assert_eq!(
            state.next(Input::PasswordAccepted),
            Ok(State::Broadcast { username: alice() })
        );
        assert_eq!(state.next(Input::PasswordRejected), Ok(State::UserAuth));
        assert_eq!(state.next(Input::NameTaken), Ok(State::UserAuth));
        assert!(state.next(Input::Renamed { username: bob() }).is_err());
        assert!(State::UserAuth.next(Input::NameTaken).is_err());
    }

    #[test]
    fn broadcast_allows_chat_codes_but_not_user_or_pass() {
        assert_eq!(
            allowed(&State::Broadcast { username: alice() }),
            vec![
                Code::Say,
                Code::History,
                Code::Rename,
                Code::Dm,
                Code::Who,
                Code::Join,
                Code::Part,
                Code::Rooms,
                Code::Ping,
                Code::Quit
            ]
        );
    }

    #[test]
    fn broadcast_renames_in_place() {
        let state = State::Broadcast { username: alice() };
        assert_eq!(
            state.next(Input::Renamed { username: bob() }),
            Ok(State::Broadcast { username: bob() })
        );
        assert_eq!(state.username(), Some(&alice()));
        assert!(state.next(Input::PasswordAccepted).is_err());
    }

    #[test]
    fn every_live_state_can_leave_and_quit_is_final() {
        for state in [
            State::Listen,
            State::UserAuth,
            State::PassAuth { username: alice() },
            State::Broadcast { username: alice() },
        ] {
            assert_eq!(state.next(Input::Leave), Ok(State::Quit), "{state:?}");
        }
        assert_eq!(allowed(&State::Quit), vec![]);
        assert!(State::Quit.next(Input::Leave).is_err());
        assert!(State::Quit.next(Input::FirstLine).is_err());
    }

    #[test]
    fn state_names_match_the_protocol_document() {
        assert_eq!(State::Listen.name(), "LISTEN");
        assert_eq!(State::UserAuth.name(), "USER AUTH");
        assert_eq!(State::PassAuth { username: alice() }.name(), "PASS AUTH");
        assert_eq!(State::Broadcast { username: alice() }.name(), "BROADCAST");
        assert_eq!(State::Quit.name(), "QUIT");
    }

    fn any_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            Just(Input::FirstLine),
            prop_oneof![Just(Login::Open), Just(Login::Password)].prop_map(|login| {
                Input::UserAccepted {
                    username: Username::parse("alice").unwrap(),
                    login,
                }
            }),
            Just(Input::PasswordAccepted),
            Just(Input::PasswordRejected),
            Just(Input::NameTaken),
            Just(Input::Renamed {
                username: Username::parse("bob").unwrap()
            }),
            Just(Input::Leave),
        ]
    }

    proptest! {
        /// Whatever inputs arrive, the machine never panics, never leaves
        /// QUIT, and a logged-in state always carries a username.
        #[test]
        fn random_inputs_keep_the_machine_consistent(inputs in proptest::collection::vec(any_input(), 0..50)) {
            let mut state = State::Listen;
            for input in inputs {
                let was_quit = state == State::Quit;
                if let Ok(next) = state.next(input) {
                    prop_assert!(!was_quit);
                    state = next;
                }
                if let State::Broadcast { .. } = &state {
                    prop_assert!(state.username().is_some());
                }
            }
        }
    }
}
