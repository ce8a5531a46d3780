//! riftc's core: a sans-IO model of the chat as one person sees it, its
//! terminal view, and its line-mode output. The shell (`src/riftc/`) owns
//! the socket, the terminal, the clock and the state file; it feeds events
//! into the `Model` and drains what it wants done (see `model`'s header for
//! the order). Nothing here does IO or reads a clock.
//!
//! - `model`: `Model`, `Settings`, `SavedState`, `Want`: state and the
//!   contract with the shell; sending requests with refs;
//! - `link`: retries with backoff (round robin over several servers),
//!   login steps (waiting for our own name at a reconnect), rejoin after a login,
//!   line mode's end;
//! - `receive`: each server frame's effect;
//! - `catch_up`: history answers: the catch-up rule, older pages, /history;
//! - `show`: lines into buffers (and printed), the last shown ids;
//! - `input`: keys, pastes, stdin lines and the commands they run;
//! - `commands`: slash command parsing;
//! - `editor`: the input line (cursor, editing, history, completion);
//! - `buffer`: buffers and their lines, in id order, each id once;
//! - `lines`: line mode's readable and JSON lines, and shared rendering
//!   helpers (clock, escaping, mentions);
//! - `view`: draws a `&Model` with ratatui.

pub mod buffer;
mod catch_up;
pub mod commands;
pub mod editor;
mod input;
pub mod lines;
mod link;
pub mod model;
mod receive;
mod show;
pub mod view;

#[cfg(test)]
mod tests;

pub use model::{Mode, Model, SavedState, Settings, Want};
