//! One connection's pending output: a queue of shared, already-encoded frames
//! and how far into the first one the socket has got.
//!
//! A frame sent to N people is encoded once and queued N times by reference
//! (`Rc`), never copied per recipient. Writing is generic over `io::Write` so
//! the partial-write logic is tested without sockets; the outbox never opens,
//! polls or closes anything.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// An encoded frame, shared by every outbox that holds it.
pub type Frame = Rc<[u8]>;

/// How many frames one `write_vectored` call offers the kernel.
const MAX_IOV: usize = 64;

#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<Frame>,
    /// Bytes of `frames[0]` already written.
    head_written: usize,
    /// Bytes still owed, for the slow-consumer cap.
    pending: usize,
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
    pub fn push(&mut self, frame: Frame) {
        self.pending += frame.len();
        self.frames.push_back(frame);
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes still owed to the peer.
    pub fn pending_bytes(&self) -> usize {
        self.pending
    }

    /// Drops everything owed (the peer is gone or was cut off) and gives the
    /// queue's memory back.
    pub fn clear(&mut self) {
        self.frames = VecDeque::new();
        self.head_written = 0;
        self.pending = 0;
    }

    /// Writes as much as the writer takes. `Interrupted` is retried; other
    /// errors (including `WouldBlock`, reported as `Partly`) stop the flush.
    pub fn write_to<W: Write>(&mut self, writer: &mut W) -> io::Result<Flushed> {
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (index, frame) in self.frames.iter().take(MAX_IOV).enumerate() {
                let skip = if index == 0 { self.head_written } else { 0 };
                slices[count] = IoSlice::new(&frame[skip..]);
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
        // The queue is empty: let its buffer go if a burst made it large.
        if self.frames.capacity() > MAX_IOV {
            self.frames = VecDeque::new();
        }
        Ok(Flushed::All)
    }

    fn advance(&mut self, mut written: usize) {
        self.pending -= written;
        while written > 0 {
            let head_left = self.frames[0].len() - self.head_written;
            if written < head_left {
                self.head_written += written;
                return;
            }
            written -= head_left;
            self.frames.pop_front();
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

    fn frame(text: &str) -> Frame {
        Rc::from(text.as_bytes())
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut outbox = Outbox::default();
        outbox.push(frame("hello\n"));
        outbox.push(frame("world\n"));
        let mut sink = Trickle {
            taken: Vec::new(),
            budget: 4,
            capacity: 7,
        };
        assert_eq!(outbox.write_to(&mut sink).unwrap(), Flushed::Partly);
        assert_eq!(outbox.pending_bytes(), 5);
        sink.capacity = 100;
        assert_eq!(outbox.write_to(&mut sink).unwrap(), Flushed::All);
        assert_eq!(sink.taken, b"hello\nworld\n");
        assert!(outbox.is_empty());
        assert_eq!(outbox.pending_bytes(), 0);
    }

    #[test]
    fn a_shared_frame_is_not_copied_per_outbox() {
        let shared = frame("broadcast\n");
        let mut first = Outbox::default();
        let mut second = Outbox::default();
        first.push(Rc::clone(&shared));
        second.push(Rc::clone(&shared));
        assert_eq!(Rc::strong_count(&shared), 3);
        let mut sink = Vec::new();
        first.write_to(&mut sink).unwrap();
        assert_eq!(Rc::strong_count(&shared), 2);
    }

    #[test]
    fn more_frames_than_one_writev_holds_are_all_written() {
        let mut outbox = Outbox::default();
        for index in 0..(MAX_IOV * 3 + 5) {
            outbox.push(frame(&format!("{index}\n")));
        }
        let mut sink = Vec::new();
        assert_eq!(outbox.write_to(&mut sink).unwrap(), Flushed::All);
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
        let mut outbox = Outbox::default();
        outbox.push(frame("x\n"));
        assert_eq!(
            outbox.write_to(&mut Broken).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        outbox.clear();
        assert_eq!(outbox.pending_bytes(), 0);
    }
}
