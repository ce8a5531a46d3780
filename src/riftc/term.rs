//! The terminal: raw mode on the alternate screen while riftc draws, and
//! restored whatever happens — on return, on Ctrl-C (raw mode makes it a
//! key, handled by the loop), on SIGTERM/SIGHUP (the loop), and on panic
//! (a hook restores it before the panic message is printed). Key presses,
//! pastes and resizes come from a thread, as events.

use crate::Event;
use crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, KeyEventKind};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use std::io::{self, Stdout};
use std::sync::mpsc::Sender;

pub type Screen = Terminal<CrosstermBackend<Stdout>>;

/// Puts the terminal back as it was. Safe to call more than once.
pub fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        LeaveAlternateScreen,
        cursor::Show
    );
}

/// Owns the full-screen terminal; dropping it restores the terminal.
pub struct Guard {
    pub screen: Screen,
}

impl Guard {
    pub fn enter() -> io::Result<Guard> {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            default_hook(info);
        }));
        terminal::enable_raw_mode()?;
        let entered = execute!(io::stdout(), EnterAlternateScreen, EnableBracketedPaste);
        if let Err(error) = entered {
            restore();
            return Err(error);
        }
        match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(screen) => Ok(Guard { screen }),
            Err(error) => {
                restore();
                Err(error)
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Forwards key presses, pastes and resizes to the loop until it is gone.
pub fn spawn_input(events: Sender<Event>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("riftc-keys".to_owned())
        .spawn(move || {
            loop {
                let event = match event::read() {
                    Ok(event) => event,
                    Err(_) => return,
                };
                let forwarded = match event {
                    event::Event::Key(key)
                        if matches!(key.kind, KeyEventKind::Press | KeyEventKind::Repeat) =>
                    {
                        Event::Key(key)
                    }
                    event::Event::Paste(text) => Event::Paste(text),
                    event::Event::Resize(width, height) => Event::Resize(width, height),
                    _ => continue,
                };
                if events.send(forwarded).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
