//! Slash commands: one input line into a `Command`, names already parsed
//! into the server's types. Nothing here sends anything or knows buffers.

use crate::proto::{RoomName, Username};
use thiserror::Error;

/// Every command riftc knows, for `/help` and Tab completion.
pub const COMMANDS: [&str; 12] = [
    "/close", "/help", "/history", "/join", "/me", "/msg", "/nick", "/part", "/quit", "/rooms",
    "/who", "/connect",
];

pub const HELP: &[&str] = &[
    "commands:",
    "  /join ROOM         join (or create) a room and show it",
    "  /part [ROOM]       leave a room (default: the one shown)",
    "  /msg NAME [TEXT]   open a private conversation, and say TEXT in it",
    "  /me TEXT           an action (* you TEXT)",
    "  /nick NAME         change your name",
    "  /who [ROOM]        who is in a room",
    "  /rooms             list the server's rooms",
    "  /history [N]       load the last N messages of this room",
    "  /close             close this private conversation",
    "  /connect           reconnect now",
    "  /quit              leave",
    "  //TEXT             say a line that starts with /",
    "keys: Alt-1..9, Ctrl-N, Ctrl-P switch buffers; PgUp/PgDn scroll; F2 members;",
    "  Tab completes names, rooms and commands; Up/Down recall what you typed",
];

/// What one input line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Plain text for the buffer shown (`//x` says `/x`).
    Say(String),
    Me(String),
    Join(RoomName),
    Part(Option<RoomName>),
    Msg {
        to: Username,
        text: Option<String>,
    },
    Nick(Username),
    Who(Option<RoomName>),
    Rooms,
    History(Option<u64>),
    Close,
    Connect,
    Quit,
    Help,
}

/// Why a line is not a command; shown to the user, never sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    #[error("unknown command {0}; type /help")]
    Unknown(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("{0}")]
    Name(String),
}

fn room(arg: &str) -> Result<RoomName, CommandError> {
    RoomName::parse(arg).map_err(|error| CommandError::Name(error.to_string()))
}

fn user(arg: &str) -> Result<Username, CommandError> {
    Username::parse(arg).map_err(|error| CommandError::Name(error.to_string()))
}

/// Parses one input line. Commands are case-insensitive; extra arguments
/// are refused rather than guessed.
pub fn parse_command(line: &str) -> Result<Command, CommandError> {
    if let Some(text) = line.strip_prefix("//") {
        return Ok(Command::Say(format!("/{text}")));
    }
    let Some(body) = line.strip_prefix('/') else {
        return Ok(Command::Say(line.to_owned()));
    };
    let (name, rest) = match body.split_once(' ') {
        Some((name, rest)) => (name, rest),
        None => (body, ""),
    };
    let args: Vec<&str> = rest.split_whitespace().collect();
    let name = name.to_ascii_lowercase();
    let at_most_one = |usage| match args.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(CommandError::Usage(usage)),
    };
    Ok(match name.as_str() {
        "me" if !rest.trim().is_empty() => Command::Me(rest.to_owned()),
        "me" => return Err(CommandError::Usage("/me TEXT")),
        "join" | "j" => match args.as_slice() {
            [one] => Command::Join(room(one)?),
            _ => return Err(CommandError::Usage("/join ROOM")),
        },
        "part" | "leave" => Command::Part(at_most_one("/part [ROOM]")?.map(room).transpose()?),
        "msg" | "query" => {
            let rest = rest.trim_start();
            let (to, text) = match rest.split_once(' ') {
                Some((to, text)) => (to, Some(text.to_owned())),
                None => (rest, None),
            };
            if to.is_empty() {
                return Err(CommandError::Usage("/msg NAME [TEXT]"));
            }
            let text = text.filter(|text| !text.trim().is_empty());
            Command::Msg {
                to: user(to)?,
                text,
            }
        }
        "nick" => match args.as_slice() {
            [one] => Command::Nick(user(one)?),
            _ => return Err(CommandError::Usage("/nick NAME")),
        },
        "who" | "names" => Command::Who(at_most_one("/who [ROOM]")?.map(room).transpose()?),
        "rooms" | "list" if args.is_empty() => Command::Rooms,
        "history" => match at_most_one("/history [N]")? {
            None => Command::History(None),
            Some(count) => match count.parse::<u64>() {
                Ok(count) if count > 0 => Command::History(Some(count)),
                _ => return Err(CommandError::Usage("/history [N], N a positive number")),
            },
        },
        "close" if args.is_empty() => Command::Close,
        "connect" | "reconnect" if args.is_empty() => Command::Connect,
        "quit" | "exit" => Command::Quit,
        "help" => Command::Help,
        "rooms" | "list" | "close" | "connect" | "reconnect" => {
            return Err(CommandError::Usage("the command takes no argument"));
        }
        _ => return Err(CommandError::Unknown(format!("/{name}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(parse_command("hello"), Ok(Command::Say("hello".into())));
        assert_eq!(
            parse_command("//etc/passwd"),
            Ok(Command::Say("/etc/passwd".into()))
        );
        assert_eq!(
            parse_command("/me waves  hi"),
            Ok(Command::Me("waves  hi".into()))
        );
        assert_eq!(
            parse_command("/JOIN #Rust"),
            Ok(Command::Join(room_("rust")))
        );
        assert_eq!(parse_command("/part"), Ok(Command::Part(None)));
        assert_eq!(
            parse_command("/leave x"),
            Ok(Command::Part(Some(room_("x"))))
        );
        assert_eq!(
            parse_command("/msg bob hi  there"),
            Ok(Command::Msg {
                to: Username::parse("bob").unwrap(),
                text: Some("hi  there".into())
            })
        );
        assert_eq!(
            parse_command("/msg bob"),
            Ok(Command::Msg {
                to: Username::parse("bob").unwrap(),
                text: None
            })
        );
        assert_eq!(
            parse_command("/nick b2"),
            Ok(Command::Nick(Username::parse("b2").unwrap()))
        );
        assert_eq!(parse_command("/who"), Ok(Command::Who(None)));
        assert_eq!(
            parse_command("/names #x"),
            Ok(Command::Who(Some(room_("x"))))
        );
        assert_eq!(parse_command("/rooms"), Ok(Command::Rooms));
        assert_eq!(parse_command("/history"), Ok(Command::History(None)));
        assert_eq!(parse_command("/history 30"), Ok(Command::History(Some(30))));
        assert_eq!(parse_command("/quit bye"), Ok(Command::Quit));
        assert_eq!(parse_command("/help"), Ok(Command::Help));
        assert_eq!(parse_command("/close"), Ok(Command::Close));
    }

    #[test]
    fn bad_commands_are_refused_with_a_reason() {
        assert_eq!(
            parse_command("/frob"),
            Err(CommandError::Unknown("/frob".into()))
        );
        assert!(matches!(
            parse_command("/me   "),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            parse_command("/join"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            parse_command("/join a b"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            parse_command("/join a\u{1b}b"),
            Err(CommandError::Name(_))
        ));
        assert!(matches!(
            parse_command("/nick server"),
            Err(CommandError::Name(_))
        ));
        assert!(matches!(parse_command("/msg"), Err(CommandError::Usage(_))));
        assert!(matches!(
            parse_command("/history 0"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            parse_command("/history x"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            parse_command("/rooms x"),
            Err(CommandError::Usage(_))
        ));
    }

    #[test]
    fn every_listed_command_parses() {
        for command in COMMANDS {
            let line = match command {
                "/join" | "/nick" | "/msg" => format!("{command} x"),
                "/me" => "/me x".to_owned(),
                _ => command.to_owned(),
            };
            assert!(parse_command(&line).is_ok(), "{line}");
        }
    }
}
