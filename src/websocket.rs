//! WebSocket (RFC 6455) framing, sans IO: the handshake's accept key, the
//! server's frames (unmasked, never fragmented), and a streaming decoder of
//! the client's frames. It never reads a socket or keeps a message whole:
//! the decoder turns client frames into protocol lines as they arrive
//! (each text message's payload, then `\n`), so the line codec behind it
//! caps and cuts them exactly as it does for TCP. See `design/protocol.md`,
//! "WebSocket".
//!
//! One text message carries one protocol line: a line break inside a
//! message is read as a space (JSON whitespace), so a message is never
//! split into two lines. Binary messages are refused (close 1003).

use base64::Engine;
use sha1::{Digest, Sha1};

/// Appended to the client's key before hashing (RFC 6455, 1.3).
const HANDSHAKE_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const FIN: u8 = 0x80;
/// A control frame's payload is at most this long.
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Two bytes, eight of extended length, four of mask.
const MAX_HEADER: usize = 14;

/// Close status codes riftd sends (RFC 6455, 7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the session ended (QUIT, a deadline, a refusal that ends it).
    Normal,
    /// 1002: the client broke the framing rules (an unmasked frame, a
    /// reserved bit or opcode, a fragmented control frame…).
    Protocol,
    /// 1003: a binary message; riftd speaks text.
    Unsupported,
    /// 1007: a text message (or close reason) that is not UTF-8.
    InvalidData,
    /// What the client's close frame said, echoed back.
    Echo(u16),
}

impl CloseCode {
    pub fn number(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::Protocol => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidData => 1007,
            CloseCode::Echo(code) => code,
        }
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(HANDSHAKE_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// A valid `Sec-WebSocket-Key`: base64 of 16 bytes.
pub fn is_valid_key(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|bytes| bytes.len() == 16)
}

/// Appends the header of an unmasked, final frame of `len` payload bytes.
fn write_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(FIN | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// The header of a server text frame of `len` payload bytes: the bytes
/// and how many of them are used (2, 4 or 10).
pub fn text_header(len: usize) -> ([u8; 10], usize) {
    let mut header = Vec::with_capacity(10);
    write_header(&mut header, OP_TEXT, len);
    let mut bytes = [0; 10];
    bytes[..header.len()].copy_from_slice(&header);
    (bytes, header.len())
}

/// Appends one server text frame holding `payload`.
pub fn write_text(out: &mut Vec<u8>, payload: &[u8]) {
    write_header(out, OP_TEXT, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and no reason.
pub fn write_close(out: &mut Vec<u8>, code: CloseCode) {
    write_header(out, OP_CLOSE, 2);
    out.extend_from_slice(&code.number().to_be_bytes());
}

/// Appends a pong frame echoing a ping's payload.
fn write_pong(out: &mut Vec<u8>, payload: &[u8]) {
    write_header(out, OP_PONG, payload.len());
    out.extend_from_slice(payload);
}

/// Why the decoder stopped for good: the client closed (its close frame
/// is echoed with its code) or broke a rule (closed with ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent a close frame; echo this code.
    Closed(CloseCode),
    /// The client broke a rule; close with this code.
    Failed(CloseCode),
}

/// What one `Decoder::decode` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Line bytes written to the output.
    pub written: usize,
    /// Set once the stream of messages is over; input after the frame
    /// that ended it is ignored.
    pub end: Option<End>,
}

/// The frame whose payload is being read.
#[derive(Debug)]
struct Frame {
    opcode: u8,
    is_fin: bool,
    left: u64,
    mask: [u8; 4],
    /// Payload bytes seen so far, for the mask's phase.
    seen: u64,
}

/// The client-frame decoder of one connection (see the module header).
#[derive(Debug, Default)]
pub struct Decoder {
    header: [u8; MAX_HEADER],
    header_len: usize,
    frame: Option<Frame>,
    /// A text message has started and its final frame is still to come.
    is_in_message: bool,
    /// The start of a UTF-8 sequence split across frames or reads.
    utf8_carry: [u8; 4],
    utf8_carry_len: usize,
    /// The payload of the control frame being read (at most 125 bytes).
    control: Vec<u8>,
    end: Option<End>,
}

impl Decoder {
    /// Decodes `input` into protocol lines in `out`, which must hold at
    /// least `input.len() + 1` bytes (a line's `\n` may end a frame whose
    /// header came in an earlier call). Pong frames answering pings are
    /// appended to `replies`.
    pub fn decode(&mut self, input: &[u8], out: &mut [u8], replies: &mut Vec<u8>) -> Decoded {
        assert!(out.len() > input.len(), "the output must outgrow the input");
        let mut written = 0;
        let mut at = 0;
        while self.end.is_none() {
            if self.frame.is_none() {
                if at == input.len() {
                    break;
                }
                at += self.take_header(&input[at..]);
                if self.frame.is_none() {
                    continue;
                }
                if self.frame.as_ref().is_some_and(|frame| frame.left == 0) {
                    self.end_frame(out, &mut written, replies);
                }
                continue;
            }
            let Some(frame) = self.frame.as_mut() else {
                break;
            };
            let count = (input.len() - at).min(usize::try_from(frame.left).unwrap_or(usize::MAX));
            if count == 0 && frame.left > 0 {
                break;
            }
            let chunk = &input[at..at + count];
            at += count;
            let unmask = |index: usize, byte: u8, frame: &Frame| {
                byte ^ frame.mask[((frame.seen + index as u64) % 4) as usize]
            };
            if frame.opcode == OP_TEXT || frame.opcode == OP_CONTINUATION {
                let start = written;
                for (index, &byte) in chunk.iter().enumerate() {
                    let byte = match unmask(index, byte, frame) {
                        b'\n' | b'\r' => b' ',
                        byte => byte,
                    };
                    out[written] = byte;
                    written += 1;
                }
                frame.seen += count as u64;
                frame.left -= count as u64;
                if !self.check_utf8(&out[start..written]) {
                    written = start; // Nothing of a message that fails.
                    self.end = Some(End::Failed(CloseCode::InvalidData));
                    break;
                }
            } else {
                for (index, &byte) in chunk.iter().enumerate() {
                    let byte = unmask(index, byte, frame);
                    self.control.push(byte);
                }
                frame.seen += count as u64;
                frame.left -= count as u64;
            }
            if self.frame.as_ref().is_some_and(|frame| frame.left == 0) {
                self.end_frame(out, &mut written, replies);
            }
        }
        Decoded {
            written,
            end: self.end,
        }
    }

    /// Takes header bytes; once the header is whole, checks it and starts
    /// the frame (or ends the stream). Returns the bytes taken.
    fn take_header(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            let needed = self.header_needed();
            if self.header_len >= needed {
                break;
            }
            let Some(&byte) = input.get(taken) else {
                return taken;
            };
            self.header[self.header_len] = byte;
            self.header_len += 1;
            taken += 1;
            if self.header_len == 2
                && let Err(code) = self.check_first_two()
            {
                self.end = Some(End::Failed(code));
                return taken;
            }
        }
        let header = &self.header[..self.header_len];
        let (len, mask_at) = match header[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
            127 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&header[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            len => (u64::from(len), 2),
        };
        // The length must use the fewest bytes (RFC 6455, 5.2), and the
        // 64-bit form has its top bit clear.
        let is_minimal = match mask_at {
            4 => len >= 126,
            10 => len > u64::from(u16::MAX) && len >> 63 == 0,
            _ => true,
        };
        if !is_minimal {
            self.end = Some(End::Failed(CloseCode::Protocol));
            return taken;
        }
        let mut mask = [0; 4];
        mask.copy_from_slice(&header[mask_at..mask_at + 4]);
        self.frame = Some(Frame {
            opcode: header[0] & 0x0F,
            is_fin: header[0] & FIN != 0,
            left: len,
            mask,
            seen: 0,
        });
        self.header_len = 0;
        self.control.clear();
        taken
    }

    /// The header's length so far known (2 until the length byte is in).
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        match self.header[1] & 0x7F {
            126 => 2 + 2 + 4,
            127 => 2 + 8 + 4,
            _ => 2 + 4,
        }
    }

    /// The rules the first two header bytes must follow.
    fn check_first_two(&self) -> Result<(), CloseCode> {
        let (first, second) = (self.header[0], self.header[1]);
        let opcode = first & 0x0F;
        let is_fin = first & FIN != 0;
        if first & 0x70 != 0 {
            return Err(CloseCode::Protocol); // No extension was negotiated.
        }
        if second & 0x80 == 0 {
            return Err(CloseCode::Protocol); // Client frames must be masked.
        }
        match opcode {
            OP_TEXT if self.is_in_message => Err(CloseCode::Protocol),
            OP_CONTINUATION if !self.is_in_message => Err(CloseCode::Protocol),
            OP_TEXT | OP_CONTINUATION => Ok(()),
            OP_BINARY => Err(CloseCode::Unsupported),
            OP_CLOSE | OP_PING | OP_PONG
                if !is_fin || usize::from(second & 0x7F) > MAX_CONTROL_PAYLOAD =>
            {
                Err(CloseCode::Protocol)
            }
            OP_CLOSE | OP_PING | OP_PONG => Ok(()),
            _ => Err(CloseCode::Protocol),
        }
    }

    /// A frame's payload is all in: end the message, answer the ping, or
    /// take the close.
    fn end_frame(&mut self, out: &mut [u8], written: &mut usize, replies: &mut Vec<u8>) {
        let Some(frame) = self.frame.take() else {
            return;
        };
        match frame.opcode {
            OP_TEXT | OP_CONTINUATION if frame.is_fin => {
                self.is_in_message = false;
                if self.utf8_carry_len > 0 {
                    self.end = Some(End::Failed(CloseCode::InvalidData));
                    return;
                }
                out[*written] = b'\n';
                *written += 1;
            }
            OP_TEXT | OP_CONTINUATION => self.is_in_message = true,
            OP_PING => write_pong(replies, &self.control),
            OP_CLOSE => self.end = Some(self.close_of(&self.control)),
            _ => {} // A pong: nothing to do.
        }
    }

    /// What a client's close frame asks for.
    fn close_of(&self, payload: &[u8]) -> End {
        match payload {
            [] => End::Closed(CloseCode::Normal),
            [_] => End::Failed(CloseCode::Protocol),
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                let is_valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                if !is_valid {
                    End::Failed(CloseCode::Protocol)
                } else if std::str::from_utf8(reason).is_err() {
                    End::Failed(CloseCode::InvalidData)
                } else {
                    End::Closed(CloseCode::Echo(code))
                }
            }
        }
    }

    /// Checks a message's next bytes as UTF-8, keeping the start of a
    /// sequence that continues in the next bytes.
    fn check_utf8(&mut self, bytes: &[u8]) -> bool {
        let mut bytes = bytes;
        if self.utf8_carry_len > 0 {
            let width = match self.utf8_carry[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            while self.utf8_carry_len < width
                && let Some((&byte, rest)) = bytes.split_first()
            {
                self.utf8_carry[self.utf8_carry_len] = byte;
                self.utf8_carry_len += 1;
                bytes = rest;
            }
            match std::str::from_utf8(&self.utf8_carry[..self.utf8_carry_len]) {
                Ok(_) => self.utf8_carry_len = 0,
                Err(error) if error.error_len().is_some() => return false,
                Err(_) => return bytes.is_empty(), // Still incomplete.
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(error) if error.error_len().is_some() => false,
            Err(error) => {
                let tail = &bytes[error.valid_up_to()..];
                self.utf8_carry[..tail.len()].copy_from_slice(tail);
                self.utf8_carry_len = tail.len();
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

    /// A client frame: masked with `MASK`, `fin` and `opcode` as given.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { FIN | opcode } else { opcode }];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&MASK);
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(index, byte)| byte ^ MASK[index % 4]),
        );
        out
    }

    fn text(payload: &str) -> Vec<u8> {
        frame(true, OP_TEXT, payload.as_bytes())
    }

    /// Decodes `input` in pieces of `step` bytes: the lines, the replies
    /// and how it ended.
    fn decode_in_steps(input: &[u8], step: usize) -> (String, Vec<u8>, Option<End>) {
        let mut decoder = Decoder::default();
        let mut lines = Vec::new();
        let mut replies = Vec::new();
        let mut end = None;
        for piece in input.chunks(step.max(1)) {
            let mut out = vec![0; piece.len() + 1];
            let decoded = decoder.decode(piece, &mut out, &mut replies);
            lines.extend_from_slice(&out[..decoded.written]);
            end = decoded.end;
            if end.is_some() {
                break;
            }
        }
        (String::from_utf8_lossy(&lines).into_owned(), replies, end)
    }

    fn decode_all(input: &[u8]) -> (String, Vec<u8>, Option<End>) {
        let whole = decode_in_steps(input, input.len());
        for step in [1, 2, 3, 5, 7, 13] {
            let stepped = decode_in_steps(input, step);
            assert_eq!(stepped.2, whole.2, "end in steps of {step}");
            if !matches!(whole.2, Some(End::Failed(_))) {
                // A failing message may have streamed part of itself out
                // before its bad byte; the session ends anyway.
                assert_eq!(stepped, whole, "in steps of {step}");
            }
        }
        whole
    }

    #[test]
    fn the_accept_key_is_the_one_of_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(is_valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key("dGhlIHNhbXBsZQ=="));
        assert!(!is_valid_key("not base64!"));
    }

    #[test]
    fn server_frames_are_unmasked_and_use_the_shortest_length() {
        let mut out = Vec::new();
        write_text(&mut out, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        for (len, header) in [
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xFF, 0xFF]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let (bytes, used) = text_header(len);
            assert_eq!(&bytes[..used], &header[..], "length {len}");
        }
        let mut close = Vec::new();
        write_close(&mut close, CloseCode::InvalidData);
        assert_eq!(close, [0x88, 2, 0x03, 0xEF]);
    }

    #[test]
    fn text_messages_become_one_line_each_whatever_the_reads() {
        let mut input = text(r#"{"code":100,"username":"ann"}"#);
        input.extend(text("second"));
        input.extend(text(""));
        let (lines, replies, end) = decode_all(&input);
        assert_eq!(lines, "{\"code\":100,\"username\":\"ann\"}\nsecond\n\n");
        assert!(replies.is_empty());
        assert_eq!(end, None);
    }

    #[test]
    fn long_lengths_decode_in_their_16_and_64_bit_forms() {
        let medium = "m".repeat(300);
        let (lines, _, _) = decode_all(&text(&medium));
        assert_eq!(lines, format!("{medium}\n"));
        let long = "l".repeat(70_000);
        let (lines, _, _) = decode_in_steps(&text(&long), 4096);
        assert_eq!(lines, format!("{long}\n"));
    }

    #[test]
    fn fragments_are_reassembled_into_one_line_with_control_frames_between() {
        let mut input = frame(false, OP_TEXT, b"{\"code\":");
        input.extend(frame(true, OP_PING, b"p1"));
        input.extend(frame(false, OP_CONTINUATION, b"101,"));
        input.extend(frame(true, OP_PONG, b"ignored"));
        input.extend(frame(true, OP_CONTINUATION, b"\"text\":\"x\"}"));
        let (lines, replies, end) = decode_all(&input);
        assert_eq!(lines, "{\"code\":101,\"text\":\"x\"}\n");
        assert_eq!(replies, [0x8A, 2, b'p', b'1']);
        assert_eq!(end, None);
    }

    #[test]
    fn a_line_break_inside_a_message_is_a_space_not_a_second_line() {
        let (lines, _, _) = decode_all(&text("{\"code\":\r\n104}"));
        assert_eq!(lines, "{\"code\":  104}\n");
    }

    #[test]
    fn utf8_split_across_fragments_and_reads_is_accepted() {
        let word = "héllo → 😀".as_bytes();
        let mut input = frame(false, OP_TEXT, &word[..2]);
        input.extend(frame(false, OP_CONTINUATION, &word[2..9]));
        input.extend(frame(true, OP_CONTINUATION, &word[9..]));
        let (lines, _, end) = decode_all(&input);
        assert_eq!(lines, "héllo → 😀\n");
        assert_eq!(end, None);
    }

    #[test]
    fn invalid_utf8_fails_with_1007() {
        for bad in [&b"ab\xFFcd"[..], b"\xC3\x28", b"\xED\xA0\x80"] {
            let (_, _, end) = decode_all(&frame(true, OP_TEXT, bad));
            assert_eq!(end, Some(End::Failed(CloseCode::InvalidData)), "{bad:?}");
        }
        // A message ending inside a sequence is invalid too.
        let (_, _, end) = decode_all(&frame(true, OP_TEXT, b"ok\xE2\x82"));
        assert_eq!(end, Some(End::Failed(CloseCode::InvalidData)));
        // So is a close reason.
        let (_, _, end) = decode_all(&frame(true, OP_CLOSE, b"\x03\xE8\xFF"));
        assert_eq!(end, Some(End::Failed(CloseCode::InvalidData)));
    }

    #[test]
    fn unmasked_frames_fail_with_1002() {
        let input = [0x81, 2, b'h', b'i'];
        let (lines, _, end) = decode_all(&input);
        assert_eq!(lines, "");
        assert_eq!(end, Some(End::Failed(CloseCode::Protocol)));
    }

    #[test]
    fn rule_breaking_frames_fail_with_1002_and_binary_with_1003() {
        let cases: Vec<(Vec<u8>, CloseCode)> = vec![
            // A reserved bit.
            (
                {
                    let mut bytes = text("x");
                    bytes[0] |= 0x40;
                    bytes
                },
                CloseCode::Protocol,
            ),
            // A reserved opcode.
            (frame(true, 0x3, b"x"), CloseCode::Protocol),
            (frame(true, 0xB, b"x"), CloseCode::Protocol),
            // A fragmented control frame.
            (frame(false, OP_PING, b"x"), CloseCode::Protocol),
            // A control frame over 125 bytes.
            (frame(true, OP_PING, &[b'p'; 126]), CloseCode::Protocol),
            // A continuation with no message started.
            (frame(true, OP_CONTINUATION, b"x"), CloseCode::Protocol),
            // A new message before the last one ended.
            (
                {
                    let mut bytes = frame(false, OP_TEXT, b"a");
                    bytes.extend(text("b"));
                    bytes
                },
                CloseCode::Protocol,
            ),
            // A length not in its shortest form.
            (
                {
                    let mut bytes = vec![0x81, 0x80 | 126, 0, 5];
                    bytes.extend_from_slice(&MASK);
                    bytes.extend_from_slice(&[0; 5]);
                    bytes
                },
                CloseCode::Protocol,
            ),
            // A close frame with a one-byte payload or a code not to be sent.
            (frame(true, OP_CLOSE, b"\x03"), CloseCode::Protocol),
            (
                frame(true, OP_CLOSE, &1005u16.to_be_bytes()),
                CloseCode::Protocol,
            ),
            (
                frame(true, OP_CLOSE, &999u16.to_be_bytes()),
                CloseCode::Protocol,
            ),
            (frame(true, OP_BINARY, b"\x00\x01"), CloseCode::Unsupported),
        ];
        for (input, code) in cases {
            let (_, _, end) = decode_all(&input);
            assert_eq!(end, Some(End::Failed(code)), "{input:x?}");
        }
    }

    #[test]
    fn a_close_frame_ends_the_stream_and_is_echoed_and_what_follows_is_ignored() {
        let mut input = text("before");
        input.extend(frame(true, OP_CLOSE, &4000u16.to_be_bytes()));
        input.extend(text("after"));
        let (lines, _, end) = decode_all(&input);
        assert_eq!(lines, "before\n");
        assert_eq!(end, Some(End::Closed(CloseCode::Echo(4000))));
        let (_, _, end) = decode_all(&frame(true, OP_CLOSE, b""));
        assert_eq!(end, Some(End::Closed(CloseCode::Normal)));
        let (_, _, end) = decode_all(&frame(true, OP_CLOSE, b"\x03\xE9going"));
        assert_eq!(end, Some(End::Closed(CloseCode::Echo(1001))));
    }

    #[test]
    fn pings_are_answered_with_their_payload_even_empty() {
        let mut input = frame(true, OP_PING, b"");
        input.extend(frame(true, OP_PING, b"abc"));
        let (lines, replies, end) = decode_all(&input);
        assert_eq!(lines, "");
        assert_eq!(replies, [0x8A, 0, 0x8A, 3, b'a', b'b', b'c']);
        assert_eq!(end, None);
    }

    proptest::proptest! {
        /// Any messages, cut into any fragments with pings between them,
        /// fed in reads of any size: each message is one line, each ping
        /// one pong, and the decoder's output never outgrows its input.
        #[test]
        fn any_fragmentation_and_reads_give_the_same_lines(
            messages in proptest::collection::vec("[^\r\n]{0,40}", 1..8),
            cut in 1usize..17,
            read in 1usize..40,
        ) {
            let mut input = Vec::new();
            let mut pings = 0;
            for message in &messages {
                let bytes = message.as_bytes();
                let pieces: Vec<&[u8]> = if bytes.is_empty() {
                    vec![&[][..]]
                } else {
                    bytes.chunks(cut).collect()
                };
                for (index, piece) in pieces.iter().enumerate() {
                    let opcode = if index == 0 { OP_TEXT } else { OP_CONTINUATION };
                    input.extend(frame(index + 1 == pieces.len(), opcode, piece));
                    if index + 1 < pieces.len() {
                        input.extend(frame(true, OP_PING, b"p"));
                        pings += 1;
                    }
                }
            }
            let mut decoder = Decoder::default();
            let mut lines = Vec::new();
            let mut replies = Vec::new();
            for piece in input.chunks(read) {
                let mut out = vec![0; piece.len() + 1];
                let decoded = decoder.decode(piece, &mut out, &mut replies);
                proptest::prop_assert!(decoded.written <= piece.len() + 1);
                proptest::prop_assert_eq!(decoded.end, None);
                lines.extend_from_slice(&out[..decoded.written]);
            }
            let expected: String = messages.iter().map(|message| format!("{message}\n")).collect();
            proptest::prop_assert_eq!(String::from_utf8(lines).unwrap(), expected);
            proptest::prop_assert_eq!(replies, [0x8A, 1, b'p'].repeat(pings));
        }
    }

    #[test]
    fn output_never_outgrows_input_plus_one() {
        // Many small final frames, cut anywhere: the decoder's promise
        // the transport relies on (its output buffer is input + 1).
        let mut input = Vec::new();
        for index in 0..50 {
            input.extend(text(&"x".repeat(index % 4)));
        }
        for step in 1..20 {
            let mut decoder = Decoder::default();
            let mut replies = Vec::new();
            for piece in input.chunks(step) {
                let mut out = vec![0; piece.len() + 1];
                let decoded = decoder.decode(piece, &mut out, &mut replies);
                assert!(decoded.written <= piece.len() + 1);
            }
        }
    }
}
