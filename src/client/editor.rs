//! The input line: text and cursor (a byte offset on a char boundary),
//! editing keys, the history of sent lines (Up/Down) and Tab completion
//! with cycling. It holds only what the user typed; nothing here sends,
//! draws or knows the chat. Control characters never enter the line.

use unicode_width::UnicodeWidthChar;

/// Most lines kept for Up/Down.
const HISTORY_LINES: usize = 200;

/// What Tab is completing, kept while Tab is pressed again and again.
#[derive(Debug, Clone)]
struct Completion {
    /// Byte offset where the completed word starts.
    start: usize,
    candidates: Vec<String>,
    index: usize,
}

/// Whether a line taken from the editor is remembered for Up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recall {
    Remember,
    /// A password (or a name at the prompt): never recalled.
    Forget,
}

#[derive(Debug, Default, Clone)]
pub struct Editor {
    text: String,
    cursor: usize,
    history: Vec<String>,
    /// Index into `history` while browsing it; `None` at the draft.
    browsing: Option<usize>,
    draft: String,
    completion: Option<Completion>,
}

/// Display width of a char in a terminal cell count (controls never enter).
pub fn char_width(ch: char) -> usize {
    ch.width().unwrap_or(0)
}

impl Editor {
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor as a byte offset into `text()`.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Terminal columns before the cursor (wide characters take two).
    pub fn cursor_column(&self) -> usize {
        self.text[..self.cursor].chars().map(char_width).sum()
    }

    fn edited(&mut self) {
        self.completion = None;
    }

    pub fn insert_char(&mut self, ch: char) {
        if ch.is_control() {
            return;
        }
        self.text.insert(self.cursor, ch);
        self.cursor += ch.len_utf8();
        self.edited();
    }

    /// Inserts pasted text: line breaks and tabs become spaces, other
    /// control characters are dropped.
    pub fn insert_str(&mut self, text: &str) {
        for ch in text.chars() {
            match ch {
                '\r' => {}
                '\n' | '\t' => self.insert_char(' '),
                ch => self.insert_char(ch),
            }
        }
    }

    fn prev_boundary(&self) -> usize {
        self.text[..self.cursor]
            .char_indices()
            .next_back()
            .map_or(0, |(at, _)| at)
    }

    fn next_boundary(&self) -> usize {
        self.text[self.cursor..]
            .chars()
            .next()
            .map_or(self.cursor, |ch| self.cursor + ch.len_utf8())
    }

    pub fn left(&mut self) {
        self.cursor = self.prev_boundary();
        self.edited();
    }

    pub fn right(&mut self) {
        self.cursor = self.next_boundary();
        self.edited();
    }

    pub fn home(&mut self) {
        self.cursor = 0;
        self.edited();
    }

    pub fn end(&mut self) {
        self.cursor = self.text.len();
        self.edited();
    }

    pub fn backspace(&mut self) {
        let from = self.prev_boundary();
        self.text.replace_range(from..self.cursor, "");
        self.cursor = from;
        self.edited();
    }

    pub fn delete(&mut self) {
        let to = self.next_boundary();
        self.text.replace_range(self.cursor..to, "");
        self.edited();
    }

    /// Ctrl-W: deletes the word before the cursor and the spaces after it.
    pub fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(' ');
        let from = trimmed.rfind(' ').map_or(0, |at| at + 1);
        self.text.replace_range(from..self.cursor, "");
        self.cursor = from;
        self.edited();
    }

    /// Ctrl-U: deletes everything before the cursor.
    pub fn delete_to_start(&mut self) {
        self.text.replace_range(..self.cursor, "");
        self.cursor = 0;
        self.edited();
    }

    /// Ctrl-K: deletes everything from the cursor on.
    pub fn delete_to_end(&mut self) {
        self.text.truncate(self.cursor);
        self.edited();
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.cursor = 0;
        self.browsing = None;
        self.edited();
    }

    /// Enter: the line, cleared from the editor, and remembered for Up
    /// unless `Recall::Forget`.
    pub fn take_line(&mut self, recall: Recall) -> String {
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        self.edited();
        if recall == Recall::Remember && !line.is_empty() && self.history.last() != Some(&line) {
            if self.history.len() == HISTORY_LINES {
                self.history.remove(0);
            }
            self.history.push(line.clone());
        }
        line
    }

    fn show(&mut self, text: String) {
        self.text = text;
        self.cursor = self.text.len();
        self.edited();
    }

    /// Up: the previous line sent (the draft is kept for Down).
    pub fn history_up(&mut self) {
        let index = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text.clone();
                self.history.len() - 1
            }
            Some(0) => return,
            Some(index) => index - 1,
        };
        self.browsing = Some(index);
        self.show(self.history[index].clone());
    }

    /// Down: the next line sent, then the draft.
    pub fn history_down(&mut self) {
        match self.browsing {
            None => {}
            Some(index) if index + 1 < self.history.len() => {
                self.browsing = Some(index + 1);
                self.show(self.history[index + 1].clone());
            }
            Some(_) => {
                self.browsing = None;
                let draft = std::mem::take(&mut self.draft);
                self.show(draft);
            }
        }
    }

    /// The word Tab would complete: its start and text.
    pub fn word_at_cursor(&self) -> (usize, &str) {
        let start = self.text[..self.cursor].rfind(' ').map_or(0, |at| at + 1);
        (start, &self.text[start..self.cursor])
    }

    /// Tab: replaces the word before the cursor with the first candidate
    /// that starts with it (ASCII case aside), or the next one when Tab is
    /// pressed again. `candidates` is called only for a fresh completion,
    /// with the word and whether it is the first word of the line.
    pub fn complete(&mut self, candidates: impl FnOnce(&str, bool) -> Vec<String>) {
        if let Some(mut completion) = self.completion.take() {
            completion.index = (completion.index + 1) % completion.candidates.len();
            let word = completion.candidates[completion.index].clone();
            self.text
                .replace_range(completion.start..self.cursor, &word);
            self.cursor = completion.start + word.len();
            self.completion = Some(completion);
            return;
        }
        let (start, word) = self.word_at_cursor();
        let prefix = word.to_ascii_lowercase();
        let mut found: Vec<String> = candidates(word, start == 0)
            .into_iter()
            .filter(|candidate| candidate.to_ascii_lowercase().starts_with(&prefix))
            .collect();
        found.dedup();
        let Some(first) = found.first().cloned() else {
            return;
        };
        self.text.replace_range(start..self.cursor, &first);
        self.cursor = start + first.len();
        self.completion = Some(Completion {
            start,
            candidates: found,
            index: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Editor {
        let mut editor = Editor::default();
        for ch in text.chars() {
            editor.insert_char(ch);
        }
        editor
    }

    #[test]
    fn wide_characters_move_the_cursor_by_their_width() {
        let mut editor = typed("a漢字b");
        assert_eq!(editor.cursor_column(), 6);
        editor.left();
        assert_eq!(editor.cursor_column(), 5);
        editor.left();
        assert_eq!(editor.cursor_column(), 3);
        editor.backspace();
        assert_eq!(editor.text(), "a字b");
        assert_eq!(editor.cursor_column(), 1);
        editor.delete();
        assert_eq!(editor.text(), "ab");
        editor.home();
        assert_eq!(editor.cursor(), 0);
        editor.end();
        assert_eq!(editor.cursor(), 2);
        editor.insert_char('é');
        assert_eq!(editor.cursor_column(), 3);
    }

    #[test]
    fn controls_never_enter_the_line_and_a_paste_is_one_line() {
        let mut editor = typed("a\u{1b}b");
        assert_eq!(editor.text(), "ab");
        editor.insert_str("c\r\nd\te\u{7}");
        assert_eq!(editor.text(), "abc d e");
    }

    #[test]
    fn ctrl_w_deletes_a_word_and_ctrl_u_and_ctrl_k_the_rest() {
        let mut editor = typed("hello big  world");
        editor.delete_word();
        assert_eq!(editor.text(), "hello big  ");
        editor.delete_word();
        assert_eq!(editor.text(), "hello ");
        editor.insert_str("x y");
        editor.left();
        editor.left();
        editor.delete_to_end();
        assert_eq!(editor.text(), "hello x");
        editor.delete_to_start();
        assert_eq!(editor.text(), "");
        editor.delete_word();
        editor.backspace();
        assert_eq!(editor.text(), "");
    }

    #[test]
    fn up_and_down_walk_the_history_and_keep_the_draft() {
        let mut editor = typed("one");
        assert_eq!(editor.take_line(Recall::Remember), "one");
        editor.insert_str("two");
        editor.take_line(Recall::Remember);
        editor.insert_str("secret");
        editor.take_line(Recall::Forget);
        editor.insert_str("draft");
        editor.history_up();
        assert_eq!(editor.text(), "two");
        editor.history_up();
        assert_eq!(editor.text(), "one");
        editor.history_up();
        assert_eq!(editor.text(), "one");
        editor.history_down();
        assert_eq!(editor.text(), "two");
        editor.history_down();
        assert_eq!(editor.text(), "draft");
        editor.history_down();
        assert_eq!(editor.text(), "draft");
    }

    #[test]
    fn tab_completes_and_cycles_case_insensitively() {
        let names =
            |_: &str, _: bool| vec!["Alice".to_owned(), "alfred".to_owned(), "bob".to_owned()];
        let mut editor = typed("hi al");
        editor.complete(names);
        assert_eq!(editor.text(), "hi Alice");
        editor.complete(|_, _| panic!("a second Tab cycles"));
        assert_eq!(editor.text(), "hi alfred");
        editor.complete(names);
        assert_eq!(editor.text(), "hi Alice");
        editor.insert_char(' ');
        editor.insert_str("zz");
        editor.complete(names);
        assert_eq!(editor.text(), "hi Alice zz");
        let mut editor = typed("/jo");
        editor.complete(|word, first| {
            assert_eq!((word, first), ("/jo", true));
            vec!["/join".to_owned()]
        });
        assert_eq!(editor.text(), "/join");
    }
}
