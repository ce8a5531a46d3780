//! What the hub tells a client it will not do, and why it closes one: one
//! typed `Refusal` per cause, with its code and its wire text in one place,
//! and the `QuitReason` a session leaves for. Never decides anything.

use super::MAX_ROOMS_PER_USER;
use crate::codec::CodecError;
use crate::proto::{Code, ProtoError, RoomName, ServerMsg, Username};
use crate::session::State;
use thiserror::Error;

/// A request refused with an error frame (`code()` and this text), or an
/// error frame that goes with a close. The texts are the wire texts.
#[derive(Debug, Error)]
pub enum Refusal {
    /// A line that did not parse into a request.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// A line the codec could not deliver.
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("code {} is not allowed in state {}", .code.number(), .state.name())]
    NotAllowed { code: Code, state: State },
    #[error("not allowed in BROADCAST")]
    NotAllowedInBroadcast,
    #[error("you are in no room; JOIN one or name one")]
    InNoRoom,
    #[error("you are not in room {0}")]
    NotInRoom(RoomName),
    #[error("no such room {0}")]
    NoSuchRoom(RoomName),
    #[error("no such user {0}")]
    NoSuchUser(Username),
    #[error("username {0} is taken")]
    NameTaken(Username),
    /// JSON: the name was taken while its password was checked.
    #[error("username {0} is taken; send USER again")]
    NameTakenSendUserAgain(Username),
    /// Text: the name was taken while its password was checked (closes).
    #[error(
        "username {0} was taken while your password was checked; connect again to choose another"
    )]
    NameTakenDuringCheck(Username),
    #[error("names are accounts on this server: log in as another account to use another name")]
    NamesAreAccounts,
    /// A reload switched to accounts (closes).
    #[error("names are accounts on this server now; log in again with your account")]
    NamesAreAccountsNow,
    /// A reload removed or changed the session's account (closes).
    #[error("your account {username} {change} on this server; closing")]
    AccountChanged {
        username: Username,
        change: AccountChange,
    },
    #[error("you are in {MAX_ROOMS_PER_USER} rooms already; PART one first")]
    TooManyRooms,
    #[error("this server takes passwords only over TLS; connect to its TLS port")]
    PasswordNeedsTls,
    #[error("a password check is already under way; wait for its answer")]
    CheckUnderWay,
    #[error("connection is gone")]
    ConnectionGone,
    #[error("too many failed logins; try again in {wait_secs} s")]
    Throttled { wait_secs: u64 },
    #[error(
        "too many logins are being checked for this address or name; try again in {wait_secs} s"
    )]
    TooManyChecks { wait_secs: u64 },
    #[error("wrong password; too many failures, closing")]
    WrongPasswordClosing,
    #[error("wrong password; type it again, or /quit")]
    WrongPasswordTypeAgain,
    #[error("wrong password; send USER again")]
    WrongPasswordSendUserAgain,
    #[error(
        "slow down: answers to HISTORY, WHO, ROOMS and PING may send you at most {bytes_per_sec} bytes a second; this request was dropped, try again in {wait_ms} ms"
    )]
    AnswerBudget { bytes_per_sec: u64, wait_ms: u64 },
    #[error("slow down: at most {rate} messages a second; this one was dropped")]
    Flooding { rate: f64 },
    #[error("excess flood; disconnecting")]
    ExcessFlood,
    #[error("not logged in in time; closing")]
    LoginTimeout,
    #[error("no answer to the ping; closing")]
    PingUnanswered,
    /// A password check got no verdict (503): the client is asked again,
    /// in its mode's words.
    #[error("{why}; {} again{}", .again.words(), .why.when())]
    NoVerdict { why: NoVerdict, again: AskAgain },
    #[error("message ids are exhausted on this server")]
    IdsExhausted,
    #[error("history is off on this server")]
    HistoryOff,
    #[error("the cluster did not answer; try again")]
    ClusterUnavailable,
    /// Between a 213 and its 214 (cluster mode): refused at once.
    #[error("chat is paused: this server lost the cluster; try again once it resumes (214)")]
    ClusterPaused,
    /// A long cluster outage let another node claim the name (closes).
    #[error("username {0} was claimed on another server while this one lost the cluster; closing")]
    NameLost(Username),
}

impl Refusal {
    /// The code of its error frame.
    pub fn code(&self) -> Code {
        match self {
            Refusal::Proto(error) => error.code(),
            Refusal::Codec(CodecError::TooLong { .. }) => Code::TooLong,
            Refusal::Codec(CodecError::InvalidUtf8) => Code::BadRequest,
            Refusal::NotAllowed { .. }
            | Refusal::NotAllowedInBroadcast
            | Refusal::InNoRoom
            | Refusal::NotInRoom(_)
            | Refusal::NamesAreAccounts
            | Refusal::NamesAreAccountsNow
            | Refusal::AccountChanged { .. }
            | Refusal::TooManyRooms
            | Refusal::PasswordNeedsTls
            | Refusal::ConnectionGone => Code::Forbidden,
            Refusal::NoSuchRoom(_) | Refusal::NoSuchUser(_) | Refusal::HistoryOff => Code::NotFound,
            Refusal::NameTaken(_)
            | Refusal::NameTakenSendUserAgain(_)
            | Refusal::NameTakenDuringCheck(_)
            | Refusal::NameLost(_) => Code::Conflict,
            Refusal::CheckUnderWay
            | Refusal::Throttled { .. }
            | Refusal::TooManyChecks { .. }
            | Refusal::AnswerBudget { .. }
            | Refusal::Flooding { .. }
            | Refusal::ExcessFlood => Code::TooMany,
            Refusal::WrongPasswordClosing
            | Refusal::WrongPasswordTypeAgain
            | Refusal::WrongPasswordSendUserAgain => Code::WrongPassword,
            Refusal::LoginTimeout | Refusal::PingUnanswered => Code::Timeout,
            Refusal::NoVerdict { .. }
            | Refusal::IdsExhausted
            | Refusal::ClusterUnavailable
            | Refusal::ClusterPaused => Code::Unavailable,
        }
    }

    /// Its error frame.
    pub fn to_msg(&self) -> ServerMsg {
        ServerMsg::error(self.code(), self.to_string())
    }
}

/// How a reload changed the account a session proved or is proving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChange {
    Removed,
    PasswordChanged,
    /// Checked against the dummy hash, it would fail.
    Created,
}

impl std::fmt::Display for AccountChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccountChange::Removed => "was removed",
            AccountChange::PasswordChanged => "had its password changed",
            AccountChange::Created => "was created",
        })
    }
}

/// Why a password check under way got no verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoVerdict {
    /// A reload away from accounts: the rules it was started by are gone.
    RulesChanged,
    /// A reload changed the account being checked.
    AccountChanged {
        username: Username,
        change: AccountChange,
    },
    /// The verifier's queue was full.
    VerifierBusy,
    /// The cluster did not answer the name claim after the password.
    ClusterUnavailable,
}

impl NoVerdict {
    /// When to try again: "shortly" only when the verifier was busy.
    fn when(&self) -> &'static str {
        match self {
            NoVerdict::VerifierBusy | NoVerdict::ClusterUnavailable => " shortly",
            NoVerdict::RulesChanged | NoVerdict::AccountChanged { .. } => "",
        }
    }
}

impl std::fmt::Display for NoVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoVerdict::RulesChanged => {
                f.write_str("the server's login rules changed while your password was checked")
            }
            NoVerdict::AccountChanged { username, change } => write!(
                f,
                "account {username} {change} while its password was checked"
            ),
            NoVerdict::VerifierBusy => f.write_str("too many logins at once"),
            NoVerdict::ClusterUnavailable => f.write_str("the cluster did not answer"),
        }
    }
}

/// How a client is asked for its password again: a person at the text
/// prompt types it, a JSON client sends PASS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskAgain {
    TypeThePassword,
    SendPass,
}

impl AskAgain {
    fn words(self) -> &'static str {
        match self {
            AskAgain::TypeThePassword => "type the password",
            AskAgain::SendPass => "send PASS",
        }
    }
}

/// Why a session leaves (for the log line `quit` writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuitReason {
    PeerClosed,
    Quit,
    SentHttp,
    LoginTimeout,
    IdleTimeout,
    ExcessFlood,
    TooManyWrongPasswords,
    NameTakenDuringCheck,
    AccountChanged,
    AuthChangedToAccounts,
    NameLost,
}

impl QuitReason {
    /// The ordinary ones, and those a peer causes for the price of a
    /// connect (an HTTP request line, silence until the login deadline):
    /// the shell already logs every disconnect, rate-limited.
    pub fn is_ordinary(self) -> bool {
        matches!(
            self,
            QuitReason::PeerClosed
                | QuitReason::Quit
                | QuitReason::SentHttp
                | QuitReason::LoginTimeout
        )
    }
}

impl std::fmt::Display for QuitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuitReason::PeerClosed => "peer closed",
            QuitReason::Quit => "quit",
            QuitReason::SentHttp => "sent HTTP",
            QuitReason::LoginTimeout => "login timeout",
            QuitReason::IdleTimeout => "idle timeout",
            QuitReason::ExcessFlood => "excess flood",
            QuitReason::TooManyWrongPasswords => "too many wrong passwords",
            QuitReason::NameTakenDuringCheck => "name taken during the password check",
            QuitReason::AccountChanged => "account removed or changed",
            QuitReason::AuthChangedToAccounts => "auth changed to accounts",
            QuitReason::NameLost => "name lost to another node",
        })
    }
}
