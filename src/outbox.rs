//! One connection's pending output, and the turn arena its frames live in.
//!
//! Every frame the hub encodes during one loop turn is appended once to one
//! buffer, the [`Arena`] — not once per recipient. An outbox holds ranges
//! of that arena, and a range that continues where the outbox's last one
//! ended is merged into it, so a receiver in a busy room is owed one
//! contiguous span per turn and the shell writes it as one iovec. At the
//! end of the turn, after the shell has written what the sockets took,
//! whatever is still owed is copied out of the arena into the outbox's own
//! buffer ([`Outbox::seal`]) and the arena is cleared for the next turn,
//! keeping its capacity. So the memory held for a client is what it is
//! owed, never a whole arena, and the hot path allocates nothing per frame;
//! per recipient and turn there is at most the outbox's small chunk queue,
//! which is freed once everything is written. Writing is generic over `io::Write` so the
//! partial-write logic is tested without sockets; the outbox never opens,
//! polls or closes anything.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::ops::Range;

/// How many chunks one `write_vectored` call offers the kernel.
const MAX_IOV: usize = 64;
/// An arena that grew past this in a burst gives its memory back when the
/// turn ends.
const ARENA_KEEP: usize = 4 << 20;

/// The frames encoded during the current loop turn, back to back.
#[derive(Debug, Default)]
pub struct Arena {
    bytes: Vec<u8>,
}

/// Where one encoded frame lies in the arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span(Range<usize>);

impl Span {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Arena {
    /// Appends what `encode` writes and returns where it lies.
    pub fn append(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Span {
        let start = self.bytes.len();
        encode(&mut self.bytes);
        Span(start..self.bytes.len())
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Gives the buffer's memory back if no frame is in it (between turns),
    /// so a burst's capacity is not held while the server is idle.
    pub fn release(&mut self) {
        if self.bytes.is_empty() {
            self.bytes = Vec::new();
        }
    }

    /// Forgets every frame. Only call once every outbox that was given a
    /// span of this turn has been sealed.
    pub fn clear(&mut self) {
        if self.bytes.capacity() > ARENA_KEEP {
            self.bytes = Vec::new();
        } else {
            self.bytes.clear();
        }
    }
}

#[derive(Debug)]
enum Chunk {
    /// Bytes of this turn's arena.
    Turn(Range<usize>),
    /// Bytes copied out of an earlier turn's arena.
    Owned(Box<[u8]>),
}

/// One connection's pending output. It holds no memory while nothing is
/// owed: the queue is allocated with the first frame and freed once all of
/// it is written.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: Option<Box<Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    /// Bytes of `chunks[0]` already written.
    head_written: usize,
    /// Bytes still owed, for the slow-consumer cap.
    pending: usize,
    /// Whether a `Turn` chunk is queued (the outbox must be sealed before
    /// the arena is cleared).
    holds_turn: bool,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything owed was written.
    All,
    /// The socket would block; bytes remain.
    Partly,
}

impl Outbox {
    /// Queues a span of this turn's arena; one that continues the last
    /// queued span is merged into it. Returns true if the outbox held no
    /// span of this turn before, so it must now be sealed at the turn's end.
    pub fn push(&mut self, span: Span) -> bool {
        self.queue.get_or_insert_with(Box::default).push(span)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_none()
    }

    /// Bytes still owed to the peer.
    pub fn pending_bytes(&self) -> usize {
        self.queue.as_ref().map_or(0, |queue| queue.pending)
    }

    /// Drops everything owed (the peer is gone or was cut off) and gives the
    /// memory back.
    pub fn clear(&mut self) {
        self.queue = None;
    }

    /// Writes as much as the writer takes. `Interrupted` is retried; other
    /// errors (including `WouldBlock`, reported as `Partly`) stop the flush.
    pub fn write_to<W: Write>(&mut self, arena: &Arena, writer: &mut W) -> io::Result<Flushed> {
        let Some(queue) = &mut self.queue else {
            return Ok(Flushed::All);
        };
        let flushed = queue.write_to(arena, writer)?;
        if flushed == Flushed::All {
            self.queue = None;
        }
        Ok(flushed)
    }

    /// Copies what is still owed from this turn's arena into the outbox's
    /// own buffer, so the arena can be cleared.
    pub fn seal(&mut self, arena: &Arena) {
        if let Some(queue) = &mut self.queue {
            queue.seal(arena);
        }
    }
}

impl Queue {
    /// Queues a span of this turn's arena; one that continues the last
    /// queued span is merged into it. Returns true if the outbox held no
    /// span of this turn before, so it must now be sealed at the turn's end.
    fn push(&mut self, span: Span) -> bool {
        let Span(range) = span;
        self.pending += range.len();
        if let Some(Chunk::Turn(last)) = self.chunks.back_mut()
            && last.end == range.start
        {
            last.end = range.end;
            return false;
        }
        self.chunks.push_back(Chunk::Turn(range));
        !std::mem::replace(&mut self.holds_turn, true)
    }

    /// Writes as much as the writer takes. `Interrupted` is retried; other
    /// errors (including `WouldBlock`, reported as `Partly`) stop the flush.
    fn write_to<W: Write>(&mut self, arena: &Arena, writer: &mut W) -> io::Result<Flushed> {
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (index, chunk) in self.chunks.iter().take(MAX_IOV).enumerate() {
                let bytes = match chunk {
                    Chunk::Turn(range) => &arena.bytes[range.clone()],
                    Chunk::Owned(bytes) => &bytes[..],
                };
                let skip = if index == 0 { self.head_written } else { 0 };
                slices[count] = IoSlice::new(&bytes[skip..]);
                count += 1;
            }
            let written = match writer.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => written,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Flushed::Partly);
                }
                Err(error) => return Err(error),
            };
            self.advance(written);
        }
        Ok(Flushed::All)
    }

    fn seal(&mut self, arena: &Arena) {
        if !std::mem::replace(&mut self.holds_turn, false) {
            return;
        }
        // Turn chunks come after every owned one: owned chunks only come
        // from earlier seals.
        let first_turn = self
            .chunks
            .iter()
            .position(|chunk| matches!(chunk, Chunk::Turn(_)))
            .unwrap_or(self.chunks.len());
        let skip_head = if first_turn == 0 {
            std::mem::take(&mut self.head_written)
        } else {
            0
        };
        // Every turn chunk is owed in full but the head's written part.
        let owed: usize = self
            .chunks
            .range(first_turn..)
            .map(|chunk| match chunk {
                Chunk::Turn(range) => range.len(),
                Chunk::Owned(bytes) => bytes.len(),
            })
            .sum::<usize>()
            - skip_head;
        let mut copied = Vec::with_capacity(owed);
        for (index, chunk) in self.chunks.drain(first_turn..).enumerate() {
            if let Chunk::Turn(range) = chunk {
                let skip = if index == 0 { skip_head } else { 0 };
                copied.extend_from_slice(&arena.bytes[range][skip..]);
            }
        }
        if !copied.is_empty() {
            self.chunks
                .push_back(Chunk::Owned(copied.into_boxed_slice()));
        }
    }

    fn advance(&mut self, mut written: usize) {
        self.pending -= written;
        while written > 0 {
            let head_len = match &self.chunks[0] {
                Chunk::Turn(range) => range.len(),
                Chunk::Owned(bytes) => bytes.len(),
            };
            let head_left = head_len - self.head_written;
            if written < head_left {
                self.head_written += written;
                return;
            }
            written -= head_left;
            self.chunks.pop_front();
            self.head_written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `budget` bytes per call, then would block
    /// once the total `capacity` is used.
    struct Trickle {
        taken: Vec<u8>,
        budget: usize,
        capacity: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.taken.len() >= self.capacity {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf
                .len()
                .min(self.budget)
                .min(self.capacity - self.taken.len());
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn chunks(outbox: &Outbox) -> usize {
        outbox.queue.as_ref().map_or(0, |queue| queue.chunks.len())
    }

    fn frame(arena: &mut Arena, text: &str) -> Span {
        arena.append(|bytes| bytes.extend_from_slice(text.as_bytes()))
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut arena = Arena::default();
        let mut outbox = Outbox::default();
        assert!(outbox.push(frame(&mut arena, "hello\n")));
        frame(&mut arena, "not for this outbox\n");
        assert!(!outbox.push(frame(&mut arena, "world\n")));
        let mut sink = Trickle {
            taken: Vec::new(),
            budget: 4,
            capacity: 7,
        };
        assert_eq!(outbox.write_to(&arena, &mut sink).unwrap(), Flushed::Partly);
        assert_eq!(outbox.pending_bytes(), 5);
        sink.capacity = 100;
        assert_eq!(outbox.write_to(&arena, &mut sink).unwrap(), Flushed::All);
        assert_eq!(sink.taken, b"hello\nworld\n");
        assert!(outbox.is_empty());
        assert_eq!(outbox.pending_bytes(), 0);
    }

    #[test]
    fn consecutive_spans_are_one_chunk() {
        let mut arena = Arena::default();
        let mut outbox = Outbox::default();
        for index in 0..100 {
            outbox.push(frame(&mut arena, &format!("frame {index}\n")));
        }
        assert_eq!(chunks(&outbox), 1);
        frame(&mut arena, "someone else's\n");
        outbox.push(frame(&mut arena, "mine\n"));
        assert_eq!(chunks(&outbox), 2);
        assert_eq!(
            outbox.pending_bytes(),
            arena.len() - "someone else's\n".len()
        );
    }

    #[test]
    fn a_sealed_outbox_keeps_what_is_owed_after_the_arena_is_reused() {
        let mut arena = Arena::default();
        let mut outbox = Outbox::default();
        outbox.push(frame(&mut arena, "first turn\n"));
        let mut sink = Trickle {
            taken: Vec::new(),
            budget: 100,
            capacity: 6,
        };
        assert_eq!(outbox.write_to(&arena, &mut sink).unwrap(), Flushed::Partly);
        outbox.seal(&arena);
        arena.clear();
        // The next turn overwrites the arena with other bytes.
        frame(&mut arena, "XXXXXXXXXXXXXXXXXXXX\n");
        assert!(outbox.push(frame(&mut arena, "second turn\n")));
        outbox.seal(&arena);
        arena.clear();
        frame(&mut arena, "YYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYY\n");
        assert_eq!(outbox.pending_bytes(), 5 + 12);
        sink.capacity = 1000;
        assert_eq!(outbox.write_to(&arena, &mut sink).unwrap(), Flushed::All);
        assert_eq!(sink.taken, b"first turn\nsecond turn\n");
        assert_eq!(outbox.pending_bytes(), 0);
    }

    #[test]
    fn sealing_an_outbox_without_this_turns_bytes_copies_nothing() {
        let mut arena = Arena::default();
        let mut outbox = Outbox::default();
        outbox.push(frame(&mut arena, "x\n"));
        outbox.write_to(&arena, &mut Vec::new()).unwrap();
        outbox.seal(&arena);
        assert!(outbox.is_empty());
        assert!(outbox.queue.is_none(), "an empty outbox holds no memory");
    }

    #[test]
    fn more_chunks_than_one_writev_holds_are_all_written() {
        let mut arena = Arena::default();
        let mut outbox = Outbox::default();
        for index in 0..(MAX_IOV * 3 + 5) {
            outbox.push(frame(&mut arena, &format!("{index}\n")));
            frame(&mut arena, "gap\n");
        }
        assert_eq!(chunks(&outbox), MAX_IOV * 3 + 5);
        let mut sink = Vec::new();
        assert_eq!(outbox.write_to(&arena, &mut sink).unwrap(), Flushed::All);
        let expected: String = (0..(MAX_IOV * 3 + 5)).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8(sink).unwrap(), expected);
    }

    #[test]
    fn a_broken_pipe_is_reported() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut arena = Arena::default();
        let mut outbox = Outbox::default();
        outbox.push(frame(&mut arena, "x\n"));
        assert_eq!(
            outbox.write_to(&arena, &mut Broken).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        outbox.clear();
        assert_eq!(outbox.pending_bytes(), 0);
    }
}
