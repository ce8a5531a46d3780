//! Draws a `&Model` onto a ratatui `Frame`: the sidebar of buffers with
//! unread and mention counts, the message pane of the shown buffer (with
//! the first-unread marker), the member list (F2), the status line and the
//! input line with its cursor. Every peer text and name goes through
//! `lines::escape`, so nothing in it reaches the terminal as a control.
//! Nothing here changes the model.

use super::buffer::{Buffer, BufferId, Line as BufferLine, LineKind};
use super::editor::char_width;
use super::lines::{clock, escape, text_line};
use super::model::{Link, Login, Model};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::widgets::{Block, Borders};

const SIDEBAR_WIDTH: u16 = 18;
const MEMBERS_WIDTH: u16 = 16;
const NAME_COLOURS: [Color; 10] = [
    Color::Cyan,
    Color::Green,
    Color::Yellow,
    Color::Magenta,
    Color::Blue,
    Color::LightCyan,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightMagenta,
    Color::LightBlue,
];

/// A name's colour: the same for the same name (ASCII case aside), always.
pub fn name_colour(name: &str) -> Color {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0100_0193);
    }
    NAME_COLOURS[(hash % NAME_COLOURS.len() as u32) as usize]
}

pub fn draw(frame: &mut Frame, model: &Model) {
    let [main, status, input] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let buffer = model.current_buffer();
    let has_members = model.show_members && buffer.room().is_some();
    let members_width = if has_members { MEMBERS_WIDTH } else { 0 };
    let [sidebar, messages, members] = Layout::horizontal([
        Constraint::Length(SIDEBAR_WIDTH),
        Constraint::Min(1),
        Constraint::Length(members_width),
    ])
    .areas(main);
    draw_sidebar(frame, model, sidebar);
    draw_messages(frame, model, buffer, messages);
    if has_members {
        draw_members(frame, buffer, members);
    }
    draw_status(frame, model, status);
    draw_input(frame, model, input);
}

fn draw_sidebar(frame: &mut Frame, model: &Model, area: Rect) {
    let lines: Vec<Line> = model
        .buffers()
        .iter()
        .enumerate()
        .map(|(at, buffer)| {
            let mut text = format!("{} {}", at + 1, escape(&buffer.title));
            if buffer.unread > 0 {
                text.push_str(&format!(" {}", buffer.unread));
            }
            if buffer.mentions > 0 {
                text.push_str(&format!(" @{}", buffer.mentions));
            }
            let mut style = Style::default();
            if std::ptr::eq(buffer, model.current_buffer()) {
                style = style.add_modifier(Modifier::REVERSED);
            } else if buffer.mentions > 0 {
                style = style.fg(Color::Yellow).add_modifier(Modifier::BOLD);
            } else if buffer.unread > 0 {
                style = style.add_modifier(Modifier::BOLD);
            }
            Line::from(Span::styled(text, style))
        })
        .collect();
    // A rule on the right, then one blank column before the messages.
    let edge = Block::default()
        .borders(Borders::RIGHT)
        .border_style(Style::default().fg(Color::DarkGray));
    let area = Rect {
        width: area.width.saturating_sub(1),
        ..area
    };
    frame.render_widget(Paragraph::new(lines).block(edge), area);
}

/// One buffer line as styled pieces.
fn pieces(model: &Model, line: &BufferLine) -> Vec<(String, Style)> {
    let tz = model.settings.tz_offset_secs;
    let dim = Style::default().fg(Color::DarkGray);
    let time = (format!("{} ", clock(line.time_ms, tz)), dim);
    match &line.kind {
        LineKind::Chat {
            from,
            text,
            is_action,
            is_mention,
            ..
        } => {
            let is_own = model.name().is_some_and(|me| me.key() == from.key());
            let mut name_style = Style::default().fg(name_colour(from.as_str()));
            if is_own {
                name_style = name_style.add_modifier(Modifier::BOLD);
            }
            let text_style = if *is_mention {
                Style::default()
                    .fg(Color::Yellow)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            let from = escape(from.as_str());
            if *is_action {
                vec![
                    time,
                    ("* ".to_owned(), text_style),
                    (from, name_style),
                    (format!(" {}", escape(text)), text_style),
                ]
            } else {
                vec![
                    time,
                    (format!("<{from}>"), name_style),
                    (format!(" {}", escape(text)), text_style),
                ]
            }
        }
        LineKind::Error { .. } => {
            vec![time, (text_line(line, tz), Style::default().fg(Color::Red))]
        }
        LineKind::Gap { .. } => vec![
            time,
            (text_line(line, tz), Style::default().fg(Color::LightRed)),
        ],
        _ => vec![
            time,
            (text_line(line, tz), Style::default().fg(Color::Gray)),
        ],
    }
}

/// Breaks styled pieces into rows of at most `width` cells.
fn wrap(pieces: Vec<(String, Style)>, width: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let mut rows: Vec<Line<'static>> = Vec::new();
    let mut row: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for (text, style) in pieces {
        let mut chunk = String::new();
        for ch in text.chars() {
            let cells = char_width(ch);
            if used + cells > width && used > 0 {
                row.push(Span::styled(std::mem::take(&mut chunk), style));
                rows.push(Line::from(std::mem::take(&mut row)));
                used = 0;
            }
            chunk.push(ch);
            used += cells;
        }
        if !chunk.is_empty() {
            row.push(Span::styled(chunk, style));
        }
    }
    rows.push(Line::from(row));
    rows
}

fn draw_messages(frame: &mut Frame, model: &Model, buffer: &Buffer, area: Rect) {
    let width = usize::from(area.width);
    let height = usize::from(area.height);
    let end = buffer.lines.len().saturating_sub(buffer.scroll);
    let mut rows: Vec<Line<'static>> = Vec::new();
    for line in buffer.lines[..end].iter().rev() {
        let mut wrapped = wrap(pieces(model, line), width);
        if line.chat_id().is_some() && line.chat_id() == buffer.marker {
            let label = " new messages ";
            let side = width.saturating_sub(label.len()) / 2;
            let text = format!("{}{label}{}", "─".repeat(side), "─".repeat(side));
            wrapped.insert(
                0,
                Line::from(Span::styled(text, Style::default().fg(Color::Red))),
            );
        }
        for row in wrapped.into_iter().rev() {
            rows.push(row);
        }
        if rows.len() >= height {
            break;
        }
    }
    if rows.len() < height && matches!(buffer.id, BufferId::Room(_)) {
        let note = if buffer.is_loading_older {
            Some("(loading older messages…)")
        } else if buffer.at_history_start {
            Some("(start of history)")
        } else {
            None
        };
        if let Some(note) = note {
            rows.push(Line::from(Span::styled(
                note,
                Style::default().fg(Color::DarkGray),
            )));
        }
    }
    rows.truncate(height);
    // The newest line sits on the bottom row.
    while rows.len() < height {
        rows.push(Line::default());
    }
    rows.reverse();
    frame.render_widget(Paragraph::new(rows), area);
}

fn draw_members(frame: &mut Frame, buffer: &Buffer, area: Rect) {
    let mut lines = vec![Line::from(Span::styled(
        format!("│ {} here", buffer.members.len()),
        Style::default().add_modifier(Modifier::BOLD),
    ))];
    for member in &buffer.members {
        lines.push(Line::from(vec![
            Span::raw("│ "),
            Span::styled(
                escape(member.as_str()),
                Style::default().fg(name_colour(member.as_str())),
            ),
        ]));
    }
    while lines.len() < usize::from(area.height) {
        lines.push(Line::from("│"));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_status(frame: &mut Frame, model: &Model, area: Rect) {
    let state = match (model.link, &model.login) {
        (Link::Up, Login::Ready) => "connected".to_owned(),
        (Link::Up, Login::Stuck) => "login refused".to_owned(),
        (Link::Up, Login::WaitingName { .. }) => "waiting for your name to be released".to_owned(),
        (Link::Up, _) => "logging in".to_owned(),
        (Link::Down, _) => format!("disconnected, {}", model.link_note),
    };
    let lag = match model.lag_ms() {
        Some(lag) => format!(" | lag {lag} ms"),
        None => String::new(),
    };
    let name = model.name().map_or("-", |name| name.as_str());
    let scrolled = match model.current_buffer().scroll {
        0 => String::new(),
        lines => format!(" (scrolled up {lines})"),
    };
    let text = format!(
        " {} | {} | {}{} | {}{}",
        escape(model.server()),
        name,
        state,
        lag,
        escape(&model.current_buffer().title),
        scrolled,
    );
    let style = Style::default().bg(Color::Blue).fg(Color::White);
    frame.render_widget(Paragraph::new(Line::from(text)).style(style), area);
}

fn draw_input(frame: &mut Frame, model: &Model, area: Rect) {
    let prompt = if model.is_password_prompt() {
        "password: ".to_owned()
    } else if model.is_name_prompt() {
        "name: ".to_owned()
    } else {
        format!("[{}] ", escape(&model.current_buffer().title))
    };
    let editor = model.editor();
    let shown: String = if model.is_password_prompt() {
        editor.text().chars().map(|_| '*').collect()
    } else {
        editor.text().to_owned()
    };
    let before: String = if model.is_password_prompt() {
        editor.text()[..editor.cursor()]
            .chars()
            .map(|_| '*')
            .collect()
    } else {
        editor.text()[..editor.cursor()].to_owned()
    };
    let prompt_width: usize = prompt.chars().map(char_width).sum();
    let room = usize::from(area.width)
        .saturating_sub(prompt_width)
        .saturating_sub(1)
        .max(1);
    // Skip leading characters until the cursor fits.
    let mut column: usize = before.chars().map(char_width).sum();
    let mut skip = 0;
    let mut chars = shown.chars();
    while column > room {
        match chars.next() {
            Some(ch) => {
                column -= char_width(ch);
                skip += ch.len_utf8();
            }
            None => break,
        }
    }
    let line = Line::from(vec![
        Span::styled(prompt, Style::default().fg(Color::Cyan)),
        Span::raw(shown[skip..].to_owned()),
    ]);
    frame.render_widget(Paragraph::new(line), area);
    let x = area.x as usize + prompt_width + column;
    let x = u16::try_from(x)
        .unwrap_or(u16::MAX)
        .min(area.right().saturating_sub(1));
    frame.set_cursor_position((x, area.y));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::model::{Mode, SavedState, Settings};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn model() -> Model {
        let settings = Settings {
            servers: vec!["127.0.0.1:5050".into()],
            user: Some("alice".into()),
            room: None,
            password: None,
            mode: Mode::Ui,
            tz_offset_secs: 0,
        };
        let mut model = Model::new(settings, SavedState::default(), 0);
        model.handle_connected(0);
        for line in [
            r#"{"code":210,"server":"riftd","version":"0.1.0","auth":"open"}"#,
            r#"{"code":202,"new":"alice"}"#,
            r#"{"code":201,"new":"alice","room":"lobby"}"#,
            r#"{"code":208,"room":"lobby","messages":[{"id":1,"ts":3600000,"room":"lobby","from":"bob","text":"hello \u001b[2J\u202eevil"}]}"#,
            r#"{"code":206,"room":"lobby","users":["alice","bob"]}"#,
            r#"{"code":201,"new":"alice","room":"rust"}"#,
            r#"{"code":208,"room":"rust","messages":[]}"#,
        ] {
            model.handle_line(line, 1000);
        }
        model
    }

    fn screen(model: &Model, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, model)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| {
                let mut row = String::new();
                let mut x = 0;
                while x < width {
                    let cell = &buffer[(x, y)];
                    row.push_str(cell.symbol());
                    // A wide character's second cell is not a character.
                    let cells: usize = cell.symbol().chars().map(char_width).sum();
                    x += u16::try_from(cells.max(1)).unwrap_or(1);
                }
                row.trim_end().to_owned()
            })
            .collect()
    }

    fn key(
        code: crossterm::event::KeyCode,
        modifiers: crossterm::event::KeyModifiers,
    ) -> crossterm::event::KeyEvent {
        crossterm::event::KeyEvent::new(code, modifiers)
    }

    fn typed(model: &mut Model, text: &str) {
        for ch in text.chars() {
            model.handle_key(
                key(
                    crossterm::event::KeyCode::Char(ch),
                    crossterm::event::KeyModifiers::NONE,
                ),
                0,
            );
        }
    }

    #[test]
    fn the_screen_shows_sidebar_messages_members_status_and_input_with_hostile_text_escaped() {
        let mut model = model();
        typed(&mut model, "h");
        let rows = screen(&model, 80, 8);
        assert_eq!(
            rows,
            [
                "1 riftd         │                                               │ 2 here",
                "2 #lobby        │                                               │ alice",
                "3 #rust         │                                               │ bob",
                "                │                                               │",
                "                │ 00:00 * alice joined #lobby                   │",
                "                │ 01:00 <bob> hello ^[[2J<U+202E>evil           │",
                " 127.0.0.1:5050 | alice | connected | #lobby",
                "[#lobby] h",
            ]
        );
    }

    #[test]
    fn unread_and_mention_counts_show_in_the_sidebar_and_the_marker_above_the_first_unread() {
        let mut model = model();
        model.handle_line(
            r#"{"code":200,"message":{"id":5,"ts":7200000,"room":"rust","from":"bob","text":"hey alice"}}"#,
            2000,
        );
        model.handle_line(
            r#"{"code":200,"message":{"id":6,"ts":7260000,"room":"rust","from":"carol","text":"/me waves"}}"#,
            2000,
        );
        let rows = screen(&model, 60, 6);
        assert!(rows[2].starts_with("3 #rust 2 @1    │ 01:00"), "{rows:?}");
        model.handle_key(
            key(
                crossterm::event::KeyCode::F(2),
                crossterm::event::KeyModifiers::NONE,
            ),
            0,
        );
        model.handle_key(
            key(
                crossterm::event::KeyCode::Char('3'),
                crossterm::event::KeyModifiers::ALT,
            ),
            0,
        );
        let rows = screen(&model, 60, 6);
        assert_eq!(
            rows,
            [
                "1 riftd         │ 00:00 * alice joined #rust",
                "2 #lobby        │ ────────────── new messages ──────────────",
                "3 #rust         │ 02:00 <bob> hey alice",
                "                │ 02:01 * carol waves",
                " 127.0.0.1:5050 | alice | connected | #rust",
                "[#rust]",
            ]
        );
    }

    #[test]
    fn the_password_prompt_is_masked_and_the_cursor_counts_wide_characters() {
        let settings = Settings {
            servers: vec!["s".into()],
            user: Some("alice".into()),
            room: None,
            password: None,
            mode: Mode::Ui,
            tz_offset_secs: 0,
        };
        let mut model = Model::new(settings, SavedState::default(), 0);
        model.handle_connected(0);
        model.handle_line(r#"{"code":210,"auth":"password"}"#, 0);
        model.handle_line(r#"{"code":211}"#, 0);
        typed(&mut model, "s3cr");
        let rows = screen(&model, 40, 4);
        assert_eq!(rows[3], "password: ****");
        let mut model = self::model();
        typed(&mut model, "漢字x");
        model.handle_key(
            key(
                crossterm::event::KeyCode::Left,
                crossterm::event::KeyModifiers::NONE,
            ),
            0,
        );
        let mut terminal = Terminal::new(TestBackend::new(40, 4)).unwrap();
        terminal.draw(|frame| draw(frame, &model)).unwrap();
        // "[#lobby] " is 9 cells, then two wide characters.
        assert_eq!(terminal.get_cursor_position().unwrap(), (13, 3).into());
    }

    #[test]
    fn the_status_line_names_the_node_in_use_and_the_wait_for_our_name() {
        let settings = Settings {
            servers: vec!["node-a:5050".into(), "node-b:5051".into()],
            user: Some("alice".into()),
            room: None,
            password: None,
            mode: Mode::Ui,
            tz_offset_secs: 0,
        };
        let mut model = Model::new(settings, SavedState::default(), 0);
        model.handle_connected(0);
        model.handle_line(r#"{"code":210,"auth":"open"}"#, 0);
        model.handle_line(r#"{"code":202,"new":"alice"}"#, 0);
        assert_eq!(
            screen(&model, 60, 3)[1],
            " node-a:5050 | alice | connected | riftd"
        );
        model.handle_disconnected("reset", 0);
        assert_eq!(
            screen(&model, 70, 3)[1],
            " node-b:5051 | alice | disconnected, reconnecting in 1 s | riftd"
        );
        model.handle_connected(1_000);
        model.handle_line(r#"{"code":210,"auth":"open"}"#, 1_000);
        model.handle_line(r#"{"code":409,"error":"username alice is taken"}"#, 1_000);
        assert_eq!(
            screen(&model, 70, 3)[1],
            " node-b:5051 | alice | waiting for your name to be released | riftd"
        );
    }

    #[test]
    fn wide_characters_wrap_at_cell_boundaries() {
        let mut model = model();
        model.handle_key(
            key(
                crossterm::event::KeyCode::F(2),
                crossterm::event::KeyModifiers::NONE,
            ),
            0,
        );
        model.handle_line(
            r#"{"code":200,"message":{"id":9,"ts":0,"room":"lobby","from":"bob","text":"漢字漢字漢字漢字"}}"#,
            0,
        );
        let rows = screen(&model, 40, 5);
        assert_eq!(rows[1], "2 #lobby        │ 00:00 <bob> 漢字漢字漢");
        assert_eq!(rows[2], "3 #rust         │ 字漢字");
    }

    #[test]
    fn names_keep_their_colour() {
        assert_eq!(name_colour("alice"), name_colour("Alice"));
        let colours: std::collections::BTreeSet<String> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|name| format!("{:?}", name_colour(name)))
            .collect();
        assert!(colours.len() > 1);
    }
}
