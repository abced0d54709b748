//! Where an HTTP/1.1 message body ends (RFC 9112 §6), for the fast path
//! (`fast`): it copies bodies through as they came, so it must find their
//! ends itself to know when a connection is free for the next message.

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// So many bytes (`Content-Length`; 0 for no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`, up to the last chunk and its trailers.
    Chunked,
    /// Everything until the sender closes the connection.
    UntilClose,
}

/// Follows chunked framing across reads, byte-exact, without decoding.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: the size so far and its digit count.
    #[default]
    SizeStart,
    Size(u64, u8),
    /// Chunk extensions, up to the line's end.
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines, then an empty line.
    LineStart,
    Line,
    LineLf,
    EndLf,
    Done,
}

/// A chunked body that breaks the grammar.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid;

impl Chunked {
    /// Reads `bytes` on. Returns how many of them belong to the body: all,
    /// or fewer when the body ended within them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, Invalid> {
        self.feed_data(bytes, |_| {})
    }

    /// `feed`, and `on_data` sees the chunks' data (the body decoded) as
    /// it passes.
    pub fn feed_data(
        &mut self,
        bytes: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<usize, Invalid> {
        let mut i = 0;
        while i < bytes.len() && self.state != State::Done {
            if let State::Data(left) = self.state {
                let take = left.min((bytes.len() - i) as u64);
                on_data(&bytes[i..i + take as usize]);
                i += take as usize;
                self.state = match left - take {
                    0 => State::DataCr,
                    rest => State::Data(rest),
                };
                continue;
            }
            self.state = self.step(bytes[i])?;
            i += 1;
        }
        Ok(i)
    }

    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Between two chunks: a last chunk could be written here.
    pub fn between_chunks(&self) -> bool {
        self.state == State::SizeStart
    }

    fn step(&self, b: u8) -> Result<State, Invalid> {
        let hex = |b: u8| (b as char).to_digit(16).map(u64::from);
        Ok(match (self.state, b) {
            (State::SizeStart, _) => State::Size(hex(b).ok_or(Invalid)?, 1),
            (State::Size(_, 16), _) if hex(b).is_some() => return Err(Invalid),
            (State::Size(n, d), _) if hex(b).is_some() => {
                State::Size(n * 16 + hex(b).unwrap_or(0), d + 1)
            }
            (State::Size(n, _), b';' | b' ' | b'\t') => State::Extension(n),
            (State::Size(n, _) | State::Extension(n), b'\r') => State::SizeLf(n),
            (State::Extension(n), b) if b != b'\n' => State::Extension(n),
            (State::SizeLf(0), b'\n') => State::LineStart,
            (State::SizeLf(n), b'\n') => State::Data(n),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::SizeStart,
            (State::LineStart, b'\r') => State::EndLf,
            (State::LineStart | State::Line, b) if b != b'\n' && b != b'\r' => State::Line,
            (State::Line, b'\r') => State::LineLf,
            (State::LineLf, b'\n') => State::LineStart,
            (State::EndLf, b'\n') => State::Done,
            _ => return Err(Invalid),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers() {
        let body = b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nExpires: never\r\n\r\nNEXT";
        let end = body.len() - 4;
        let mut whole = Chunked::default();
        assert_eq!(whole.feed(body), Ok(end));
        assert!(whole.done());
        // The same, a byte at a time: the end is found at the same place.
        let mut bytewise = Chunked::default();
        let mut taken = 0;
        for b in body.chunks(1) {
            taken += bytewise.feed(b).unwrap();
        }
        assert_eq!(taken, end);
        assert!(bytewise.done());
        let mut open = Chunked::default();
        assert_eq!(open.feed(b"A\r\n0123"), Ok(7));
        assert!(!open.done(), "inside a chunk");
    }

    #[test]
    fn broken_chunked_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"4\r\nwikiX",
            b"4\nwiki",
            b"11111111111111111\r\n",
        ] {
            assert_eq!(Chunked::default().feed(bad), Err(Invalid), "{bad:?}");
        }
    }
}
