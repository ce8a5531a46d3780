//! Bytes to lines: the framing layer of the wire protocol.
//!
//! The codec owns one connection's unparsed input. It strips telnet IAC
//! negotiation, splits on `\n` (dropping a `\r` just before it), skips empty
//! lines, enforces the line cap and checks UTF-8. It never does IO and never
//! interprets a line: that is `proto`'s job. See `design/protocol.md`, "Framing".

use thiserror::Error;

/// Telnet "interpret as command" byte; never valid in UTF-8, so stripping it is
/// safe for every kind of client.
const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;
/// A subnegotiation longer than this is treated as garbage and ends, so a
/// stray `IAC SB` cannot swallow the rest of a session.
const MAX_SUBNEGOTIATION: usize = 512;

/// A pending partial line's buffer is shrunk to fit it when its capacity
/// is above this and four times what it holds (`shrink_if_idle`).
const SHRINK_ABOVE: usize = 16 * 1024;

/// Lines one connection may have handed on per loop turn.
pub const LINES_PER_TURN: usize = 64;
/// Bytes one connection may have read per loop turn, whatever they turn
/// out to be: frames, empty lines, telnet commands, the discarded tail of an
/// over-long line, TLS records. One full read of the shell's 64 KiB buffer.
pub const BYTES_PER_TURN: usize = 64 * 1024;
/// Bytes all connections together may have read per loop turn, shared out
/// among those the turn reads (`TurnBudget::share`), so a turn's work does
/// not grow with the number of flooding connections.
pub const BYTES_PER_TURN_ALL: usize = 1024 * 1024;
/// Lines all connections together may have handed on per turn.
pub const LINES_PER_TURN_ALL: usize = 1024;
/// The least share of one connection, however many are read.
pub const MIN_BYTES_PER_TURN: usize = 4 * 1024;
pub const MIN_LINES_PER_TURN: usize = 4;

/// One connection's share of a loop turn. The shell charges every line it
/// hands on and every byte it reads, before the codec decides what they
/// are, and ends the connection's turn when either runs out: input the
/// codec skips or strips (empty lines, `\r\n`, `IAC NOP`, subnegotiation
/// garbage, discarded tails) costs its bytes like any other, so no input
/// of any shape can hold the loop. See `design/robustness.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnBudget {
    lines: usize,
    bytes: usize,
}

impl Default for TurnBudget {
    fn default() -> Self {
        TurnBudget {
            lines: LINES_PER_TURN,
            bytes: BYTES_PER_TURN,
        }
    }
}

impl TurnBudget {
    /// One connection's budget in a turn that reads `readers` connections:
    /// the turn's whole budget split evenly, within the per-connection
    /// bounds. With up to 16 readers each gets the full 64 KiB and 64 lines;
    /// with 60 flooders, 17 KiB and 17 lines each, so the turn (and a
    /// healthy client's PING round trip) costs about 1 MiB of input, not
    /// 60 × 64 KiB; past 256 readers each still gets 4 KiB and 4 lines.
    pub fn share(readers: usize) -> TurnBudget {
        let readers = readers.max(1);
        TurnBudget {
            lines: (LINES_PER_TURN_ALL / readers).clamp(MIN_LINES_PER_TURN, LINES_PER_TURN),
            bytes: (BYTES_PER_TURN_ALL / readers).clamp(MIN_BYTES_PER_TURN, BYTES_PER_TURN),
        }
    }

    /// True while another line may be handed on this turn.
    pub fn has_lines(&self) -> bool {
        self.lines > 0
    }

    /// Charges one line handed on (a frame or a codec error).
    pub fn charge_line(&mut self) {
        self.lines = self.lines.saturating_sub(1);
    }

    /// Charges bytes taken from the peer.
    pub fn charge_bytes(&mut self, count: usize) {
        self.bytes = self.bytes.saturating_sub(count);
    }

    /// True once the turn is used up: lines or bytes.
    pub fn is_spent(&self) -> bool {
        self.lines == 0 || self.bytes == 0
    }

    /// How much the next read may take from a buffer of `buffer` bytes, so
    /// a read never overshoots the budget.
    pub fn read_len(&self, buffer: usize) -> usize {
        buffer.min(self.bytes)
    }
}

/// Why a line could not be delivered; the session goes on after either.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The line was longer than the cap; it is discarded up to its newline.
    #[error("line longer than {max} bytes; it was discarded")]
    TooLong { max: usize },
    /// The line was not valid UTF-8; it is discarded.
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
}

/// Where the telnet stripper is inside an IAC sequence, kept across reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    Data,
    /// Just saw IAC.
    Command,
    /// Saw IAC WILL/WONT/DO/DONT: the next byte is the option.
    Option,
    /// Inside IAC SB … IAC SE; counts bytes to bound it.
    Sub(usize),
    /// Saw IAC inside a subnegotiation.
    SubCommand(usize),
}

/// One connection's line splitter. Between lines an idle connection holds
/// no input memory: the state below is allocated when bytes arrive and
/// freed (`shrink_if_idle`) once nothing is pending.
#[derive(Debug)]
pub struct LineCodec {
    /// Longest accepted line, without its terminator.
    max_line: usize,
    input: Option<Box<Input>>,
}

#[derive(Debug)]
struct Input {
    /// Bytes received and not yet returned as lines.
    buf: Vec<u8>,
    /// Start of the first unreturned byte in `buf`; earlier bytes are dropped
    /// lazily on the next `push`, so `next_line` can lend a slice.
    start: usize,
    /// How far past `start` we already know there is no `\n`, so a line that
    /// arrives one byte per read is scanned once, not once per byte.
    scanned: usize,
    /// True after an over-long line until its newline arrives.
    is_discarding: bool,
    telnet: Telnet,
    /// True once bytes held telnet negotiation (see `has_seen_iac`).
    has_seen_iac: bool,
}

impl LineCodec {
    pub fn new(max_line: usize) -> Self {
        LineCodec {
            max_line,
            input: None,
        }
    }

    /// Changes the cap for lines not yet started (used on config reload).
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line;
    }

    /// Bytes held for lines not yet complete or not yet taken.
    pub fn buffered(&self) -> usize {
        self.input.as_ref().map_or(0, |input| input.buffered())
    }

    /// True when no partial line is held, so the buffer's memory can go back.
    pub fn is_empty(&self) -> bool {
        self.buffered() == 0
    }

    /// Gives back the input memory when nothing is pending, so an idle
    /// connection holds no input allocation (telnet or discard state in
    /// progress is kept); and when a partial line is pending in a buffer
    /// a burst made far bigger than it, keeps only the partial line: a
    /// read of 56 KiB of empty lines and an 8 KB partial line otherwise
    /// held 64 KiB per connection for as long as the line stayed partial
    /// (500 such connections: 32 MiB instead of 4 MiB).
    pub fn shrink_if_idle(&mut self) {
        let Some(input) = &mut self.input else {
            return;
        };
        let buffered = input.buffered();
        if buffered > 0 {
            if input.buf.capacity() > SHRINK_ABOVE && input.buf.capacity() > 4 * buffered {
                input.buf.drain(..input.start);
                input.scanned -= input.start;
                input.start = 0;
                input.buf.shrink_to_fit();
            }
            return;
        }
        if input.telnet == Telnet::Data && !input.is_discarding {
            self.input = None;
        } else {
            input.buf = Vec::new();
            input.start = 0;
            input.scanned = 0;
        }
    }

    /// Appends bytes read from the peer, minus telnet negotiation. Lines
    /// already taken are dropped first, so the buffer holds at most one
    /// partial line plus this read.
    pub fn push(&mut self, bytes: &[u8]) {
        self.input
            .get_or_insert_with(|| {
                Box::new(Input {
                    buf: Vec::new(),
                    start: 0,
                    scanned: 0,
                    is_discarding: false,
                    telnet: Telnet::Data,
                    has_seen_iac: false,
                })
            })
            .push(bytes);
    }

    /// True if the bytes pushed since the input memory was last given back
    /// (`shrink_if_idle`) held telnet negotiation (IAC): the peer is a
    /// telnet client. The shell asks after each push and remembers it.
    pub fn has_seen_iac(&self) -> bool {
        self.input.as_ref().is_some_and(|input| input.has_seen_iac)
    }

    /// Takes the next complete line, without its terminator. `None` means
    /// more bytes are needed. Errors are per line; call again afterwards.
    pub fn next_line(&mut self) -> Option<Result<&str, CodecError>> {
        self.input.as_deref_mut()?.next_line(self.max_line)
    }
}

impl Input {
    fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        if self.telnet == Telnet::Data && !bytes.contains(&IAC) {
            self.buf.extend_from_slice(bytes);
        } else {
            // Here only with an IAC in these bytes or a sequence under way.
            self.has_seen_iac = true;
            for &byte in bytes {
                self.push_telnet(byte);
            }
        }
    }

    fn push_telnet(&mut self, byte: u8) {
        self.telnet = match (self.telnet, byte) {
            (Telnet::Data, IAC) => Telnet::Command,
            (Telnet::Data, _) => {
                self.buf.push(byte);
                Telnet::Data
            }
            // IAC IAC is an escaped 255, which is never valid UTF-8: drop it.
            (Telnet::Command, IAC) => Telnet::Data,
            (Telnet::Command, SB) => Telnet::Sub(0),
            (Telnet::Command, WILL..=DONT) => Telnet::Option,
            (Telnet::Command, _) => Telnet::Data,
            (Telnet::Option, _) => Telnet::Data,
            // IAC SE ends a subnegotiation; nothing else does but its cap.
            (Telnet::SubCommand(_), SE) => Telnet::Data,
            (Telnet::Sub(n), _) | (Telnet::SubCommand(n), _) if n >= MAX_SUBNEGOTIATION => {
                Telnet::Data
            }
            (Telnet::Sub(n), IAC) => Telnet::SubCommand(n + 1),
            // IAC IAC inside a subnegotiation is an escaped 255, part of its
            // data (RFC 855); so is any other byte after IAC there.
            (Telnet::Sub(n), _) | (Telnet::SubCommand(n), _) => Telnet::Sub(n + 1),
        };
    }

    fn next_line(&mut self, max_line: usize) -> Option<Result<&str, CodecError>> {
        loop {
            let newline = memchr::memchr(b'\n', &self.buf[self.scanned..])
                .map(|offset| self.scanned + offset);
            let Some(newline) = newline else {
                self.scanned = self.buf.len();
                // One byte of slack for a `\r` that may precede the newline.
                if !self.is_discarding && self.buffered() > max_line + 1 {
                    self.is_discarding = true;
                    self.start = self.buf.len();
                    self.scanned = self.start;
                    return Some(Err(CodecError::TooLong { max: max_line }));
                }
                if self.is_discarding {
                    self.start = self.buf.len();
                    self.scanned = self.start;
                }
                return None;
            };
            let line_start = self.start;
            self.start = newline + 1;
            self.scanned = self.start;
            if self.is_discarding {
                self.is_discarding = false;
                continue;
            }
            let mut line_end = newline;
            if line_end > line_start && self.buf[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            if line_end == line_start {
                continue;
            }
            if line_end - line_start > max_line {
                return Some(Err(CodecError::TooLong { max: max_line }));
            }
            return Some(
                std::str::from_utf8(&self.buf[line_start..line_end])
                    .map_err(|_| CodecError::InvalidUtf8),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drains every line currently available, as owned results.
    fn drain(codec: &mut LineCodec) -> Vec<Result<String, CodecError>> {
        let mut lines = Vec::new();
        while let Some(line) = codec.next_line() {
            lines.push(line.map(str::to_owned));
        }
        lines
    }

    fn ok(text: &str) -> Result<String, CodecError> {
        Ok(text.to_owned())
    }

    #[test]
    fn many_frames_in_one_read_come_out_in_order() {
        let mut codec = LineCodec::new(100);
        codec.push(b"one\ntwo\nthree\n");
        assert_eq!(drain(&mut codec), vec![ok("one"), ok("two"), ok("three")]);
    }

    #[test]
    fn a_frame_sent_one_byte_at_a_time_arrives_whole() {
        let mut codec = LineCodec::new(100);
        let mut lines = Vec::new();
        for byte in "{\"code\":108}\r\n".bytes() {
            codec.push(&[byte]);
            lines.extend(drain(&mut codec));
        }
        assert_eq!(lines, vec![ok("{\"code\":108}")]);
    }

    #[test]
    fn multibyte_utf8_split_across_reads_is_kept() {
        let mut codec = LineCodec::new(100);
        let text = "héllo ✓\n".as_bytes();
        codec.push(&text[..2]);
        assert_eq!(drain(&mut codec), vec![]);
        codec.push(&text[2..9]);
        assert_eq!(drain(&mut codec), vec![]);
        codec.push(&text[9..]);
        assert_eq!(drain(&mut codec), vec![ok("héllo ✓")]);
    }

    #[test]
    fn crlf_and_lf_are_both_terminators() {
        let mut codec = LineCodec::new(100);
        codec.push(b"a\r\nb\n");
        assert_eq!(drain(&mut codec), vec![ok("a"), ok("b")]);
    }

    #[test]
    fn a_lone_cr_is_data() {
        let mut codec = LineCodec::new(100);
        codec.push(b"a\rb\n");
        assert_eq!(drain(&mut codec), vec![ok("a\rb")]);
    }

    #[test]
    fn empty_lines_are_ignored() {
        let mut codec = LineCodec::new(100);
        codec.push(b"\n\r\n\nx\n\n");
        assert_eq!(drain(&mut codec), vec![ok("x")]);
    }

    #[test]
    fn a_line_of_exactly_the_cap_is_accepted_with_either_terminator() {
        let mut codec = LineCodec::new(8192);
        let line = "a".repeat(8192);
        codec.push(format!("{line}\n{line}\r\n").as_bytes());
        assert_eq!(drain(&mut codec), vec![ok(&line), ok(&line)]);
    }

    #[test]
    fn a_line_one_byte_over_the_cap_is_413_and_the_next_line_works() {
        let mut codec = LineCodec::new(8192);
        codec.push(format!("{}\nnext\n", "a".repeat(8193)).as_bytes());
        assert_eq!(
            drain(&mut codec),
            vec![Err(CodecError::TooLong { max: 8192 }), ok("next")]
        );
    }

    #[test]
    fn an_endless_line_is_reported_once_and_not_buffered() {
        let mut codec = LineCodec::new(16);
        let mut errors = 0;
        for _ in 0..1000 {
            codec.push(&[b'x'; 100]);
            errors += drain(&mut codec).len();
            assert!(codec.buffered() <= 100, "held {}", codec.buffered());
        }
        assert_eq!(errors, 1);
        codec.push(b"tail of the long line\nshort\n");
        assert_eq!(drain(&mut codec), vec![ok("short")]);
    }

    #[test]
    fn an_over_long_line_split_across_reads_is_discarded_to_its_newline() {
        let mut codec = LineCodec::new(4);
        codec.push(b"abcdefg");
        assert_eq!(drain(&mut codec), vec![Err(CodecError::TooLong { max: 4 })]);
        codec.push(b"hij\nok\n");
        assert_eq!(drain(&mut codec), vec![ok("ok")]);
    }

    #[test]
    fn invalid_utf8_is_an_error_for_that_line_only() {
        let mut codec = LineCodec::new(100);
        codec.push(b"bad \xC3\x28 line\ngood\n");
        assert_eq!(
            drain(&mut codec),
            vec![Err(CodecError::InvalidUtf8), ok("good")]
        );
    }

    #[test]
    fn telnet_negotiation_is_stripped_even_across_reads() {
        let mut codec = LineCodec::new(100);
        // IAC DO ECHO, IAC IP (what Ctrl-C sends), then a split IAC WILL NAWS.
        codec.push(b"\xff\xfd\x01al\xff\xf4ice");
        codec.push(b"\xff");
        codec.push(b"\xfb\x1f\n");
        assert_eq!(drain(&mut codec), vec![ok("alice")]);
    }

    #[test]
    fn issue_11_the_codec_tells_a_telnet_peer_from_one_that_never_sent_iac() {
        let mut plain = LineCodec::new(64);
        plain.push(b"alice\r\nhello\n");
        assert!(!plain.has_seen_iac());
        let mut telnet = LineCodec::new(64);
        telnet.push(b"alice");
        assert!(!telnet.has_seen_iac());
        telnet.push(&[IAC, WILL, 31, b'\r', b'\n']);
        assert!(telnet.has_seen_iac());
    }

    #[test]
    fn telnet_subnegotiation_is_stripped() {
        let mut codec = LineCodec::new(100);
        codec.push(b"\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0bob\n");
        assert_eq!(drain(&mut codec), vec![ok("bob")]);
    }

    #[test]
    fn an_escaped_255_inside_a_subnegotiation_is_its_data_not_its_end() {
        let mut codec = LineCodec::new(100);
        // IAC SB NAWS 0 255 255 0 24 IAC SE: a width of 255 is sent as
        // IAC IAC; nothing of the subnegotiation may leak into the line.
        codec.push(b"\xff\xfa\x1f\x00\xff\xff\x00\x18leak\xff\xf0bob\n");
        assert_eq!(drain(&mut codec), vec![ok("bob")]);
        // The same cut into single bytes, and an IAC IAC as the last data.
        for byte in b"\xff\xfaxx\xff\xff\xff\xf0carol\n" {
            codec.push(&[*byte]);
        }
        assert_eq!(drain(&mut codec), vec![ok("carol")]);
    }

    #[test]
    fn a_subnegotiation_of_escaped_255s_is_still_bounded_by_its_cap() {
        let mut codec = LineCodec::new(100);
        codec.push(b"\xff\xfa");
        // Escaped 255s count towards the cap like any byte: the cap's
        // byte ends the subnegotiation and the next line is whole.
        codec.push(&[IAC; MAX_SUBNEGOTIATION + 1]);
        codec.push(b"dave\n");
        assert_eq!(drain(&mut codec), vec![ok("dave")]);
    }

    #[test]
    fn an_unterminated_subnegotiation_ends_after_its_cap() {
        let mut codec = LineCodec::new(100);
        codec.push(b"\xff\xfa");
        codec.push(&[b'z'; MAX_SUBNEGOTIATION + 1]);
        codec.push(b"carol\n");
        assert_eq!(drain(&mut codec), vec![ok("carol")]);
    }

    #[test]
    fn shrink_if_idle_keeps_a_partial_line() {
        let mut codec = LineCodec::new(100);
        codec.push(b"par");
        codec.shrink_if_idle();
        codec.push(b"tial\n");
        assert_eq!(drain(&mut codec), vec![ok("partial")]);
        codec.shrink_if_idle();
        assert_eq!(codec.buffered(), 0);
        assert!(codec.input.is_none(), "an idle codec holds no memory");
    }

    #[test]
    fn shrink_if_idle_keeps_telnet_and_discard_state() {
        let mut codec = LineCodec::new(4);
        // Cut inside IAC WILL <option>: the option byte must still be eaten.
        codec.push(&[IAC, WILL]);
        codec.shrink_if_idle();
        codec.push(&[1, b'a', b'\n']);
        assert_eq!(drain(&mut codec), vec![ok("a")]);
        // Cut inside an over-long line: its tail must still be discarded.
        codec.push(b"toolong");
        assert_eq!(drain(&mut codec), vec![Err(CodecError::TooLong { max: 4 })]);
        codec.shrink_if_idle();
        codec.push(b"tail\nok\n");
        assert_eq!(drain(&mut codec), vec![ok("ok")]);
    }

    /// One connection's turn the way `Server::read` runs it, against an
    /// input that always has more: hand on buffered lines while the budget
    /// has lines, stop once it is spent, else read at most `read_len` of a
    /// 64 KiB buffer, charge it and push it. Returns (bytes read, lines).
    fn one_turn(codec: &mut LineCodec, input: &[u8], at: &mut usize) -> (usize, usize) {
        let mut budget = TurnBudget::default();
        let (mut read, mut lines) = (0, 0);
        loop {
            while budget.has_lines() {
                if codec.next_line().is_none() {
                    break;
                }
                budget.charge_line();
                lines += 1;
            }
            if budget.is_spent() {
                return (read, lines);
            }
            let len = budget.read_len(64 * 1024);
            let chunk = &input[*at % input.len()..][..len.min(input.len() - *at % input.len())];
            *at += chunk.len();
            budget.charge_bytes(chunk.len());
            read += chunk.len();
            codec.push(chunk);
        }
    }

    #[test]
    fn a_partial_line_left_by_a_burst_does_not_keep_the_bursts_memory() {
        let mut codec = LineCodec::new(8192);
        let mut burst = vec![b'\n'; 56 * 1024];
        burst.extend([b'a'; 8000]);
        codec.push(&burst);
        assert_eq!(drain(&mut codec), vec![]);
        codec.shrink_if_idle();
        let input = codec.input.as_ref().expect("a partial line is held");
        assert_eq!(input.buffered(), 8000);
        assert!(input.buf.capacity() < 16 * 1024, "{}", input.buf.capacity());
        // The line completes as if nothing happened.
        codec.push(b"bc\n");
        let mut line = "a".repeat(8000);
        line.push_str("bc");
        assert_eq!(drain(&mut codec), vec![Ok(line)]);
        // A buffer that is mostly the partial line is left alone.
        codec.push(&[b'x'; 6000]);
        let before = codec.input.as_ref().unwrap().buf.as_ptr();
        codec.shrink_if_idle();
        assert_eq!(codec.input.as_ref().unwrap().buf.as_ptr(), before);
    }

    #[test]
    fn a_turn_shares_its_budget_among_the_connections_it_reads() {
        assert_eq!(TurnBudget::share(0), TurnBudget::default());
        assert_eq!(TurnBudget::share(1), TurnBudget::default());
        assert_eq!(TurnBudget::share(16), TurnBudget::default());
        for readers in [17, 60, 64, 256, 257, 1024, 100_000] {
            let share = TurnBudget::share(readers);
            assert!(share.bytes <= BYTES_PER_TURN && share.lines <= LINES_PER_TURN);
            assert!(share.bytes >= MIN_BYTES_PER_TURN && share.lines >= MIN_LINES_PER_TURN);
            // The whole turn: the overall budget, or the least shares.
            let total = share.bytes * readers;
            assert!(
                total <= BYTES_PER_TURN_ALL.max(MIN_BYTES_PER_TURN * readers),
                "{readers}: {total}"
            );
            assert!(
                share.lines * readers <= LINES_PER_TURN_ALL.max(MIN_LINES_PER_TURN * readers),
                "{readers}"
            );
        }
        // Before: 60 flooders got 64 KiB each, 3.75 MiB a turn.
        assert!(TurnBudget::share(60).bytes * 60 <= BYTES_PER_TURN_ALL);
    }

    #[test]
    fn no_input_shape_gets_more_than_its_share_of_a_turn() {
        let mut sub_garbage = vec![IAC, SB];
        sub_garbage.extend([b'g'; 100]);
        let shapes: [(&str, Vec<u8>); 8] = [
            ("empty lines", b"\n".to_vec()),
            ("\\r\\n", b"\r\n".to_vec()),
            ("IAC NOP", vec![IAC, 241]),
            ("IAC IAC", vec![IAC, IAC]),
            ("IAC SB garbage", sub_garbage),
            ("an endless line", vec![b'x'; 4096]),
            ("long lines", [vec![b'y'; 9000], b"\n".to_vec()].concat()),
            ("valid frames", b"{\"code\":108}\n".to_vec()),
        ];
        for (name, unit) in shapes {
            // 4 MiB of the shape: far more than one turn's share.
            let input = unit.repeat((4 << 20) / unit.len());
            let mut codec = LineCodec::new(8192);
            let mut at = 0;
            let mut turns = 0;
            while at < input.len() {
                let (read, lines) = one_turn(&mut codec, &input, &mut at);
                assert!(read <= BYTES_PER_TURN, "{name}: {read} bytes in one turn");
                assert!(lines <= LINES_PER_TURN, "{name}: {lines} lines in one turn");
                assert!(read > 0 || lines > 0, "{name}: a turn made no progress");
                assert!(codec.buffered() <= 8192 + 1 + BYTES_PER_TURN, "{name}");
                turns += 1;
            }
            assert!(
                turns >= input.len() / BYTES_PER_TURN,
                "{name}: {} bytes in {turns} turns",
                input.len()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// However the input is cut into reads, the lines are the same as
        /// when it arrives in one read.
        #[test]
        fn splitting_never_changes_the_lines(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(0xC3u8), Just(0xA9u8), Just(0xFFu8), any::<u8>()],
                0..300),
            cuts in proptest::collection::vec(0usize..300, 0..20),
            max in 1usize..40,
        ) {
            let mut whole = LineCodec::new(max);
            whole.push(&input);
            let expected = drain(&mut whole);

            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= input.len()).collect();
            cuts.sort_unstable();
            let mut pieces = LineCodec::new(max);
            let mut got = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain(std::iter::once(input.len())) {
                pieces.push(&input[from..cut]);
                got.extend(drain(&mut pieces));
                from = cut;
            }
            // An over-long line may be reported early (before its newline) or
            // late; either way it is one TooLong, so compare the two views.
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn lines_never_exceed_the_cap_or_hold_newlines(
            input in proptest::collection::vec(any::<u8>(), 0..2000),
            max in 1usize..64,
        ) {
            let mut codec = LineCodec::new(max);
            codec.push(&input);
            while let Some(line) = codec.next_line() {
                if let Ok(line) = line {
                    prop_assert!(line.len() <= max);
                    prop_assert!(!line.contains('\n'));
                    prop_assert!(!line.is_empty());
                }
            }
            prop_assert!(codec.buffered() <= max + 1);
        }
    }
}
