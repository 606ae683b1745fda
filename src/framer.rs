//! Splitting a byte stream into newline-delimited lines, with a hard bound on what it holds.
//!
//! The event loop reads every socket into one shared scratch buffer and hands the bytes to the
//! connection's [`LineFramer`]. Complete lines are returned as slices of that input, with no copy;
//! only the unfinished tail of a line is kept, in the framer's own buffer, which is released as
//! soon as it is empty (an idle connection holds no framing memory at all).
//!
//! The contract, after mini-redis's `Connection::read_frame`: asking for the next frame when none
//! is complete is `None`, not an error. A line longer than the limit yields [`Frame::TooLong`] as
//! soon as the limit is crossed; the rest of that line is skipped as it arrives, never buffered, so
//! a client that never sends a newline cannot make the server hold more than `max_line + 1` bytes.
//!
//! Complete lines that the connection could not process yet (flood control stopped it) can be put
//! back with [`LineFramer::stash`]; they are returned first on the next call.

/// One item cut from the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A line without its `\n` and without one trailing `\r`.
    Line(&'a [u8]),
    /// A line went over the limit; the rest of it is being discarded.
    TooLong,
}

/// Per-connection framing state.
#[derive(Debug, Default)]
pub struct LineFramer {
    /// Bytes not returned yet: the start of an unfinished line, or stashed input that still holds
    /// complete lines. Empty (and unallocated) most of the time.
    buf: Vec<u8>,
    /// Offset in `buf` of the first byte not returned yet; the bytes before it belong to the frame
    /// returned last and are dropped on the next call. (`u32`, like `scanned`: `buf` never holds
    /// more than a line plus one read, and every connection keeps a framer.)
    start: u32,
    /// Set while skipping the remainder of an over-long line up to its newline.
    discarding: bool,
    /// Bytes after `start` already known to hold no newline. An unfinished line that grows a
    /// byte at a time is then scanned once in all, not once per read (which would be O(n²) up to
    /// `--max-line`).
    scanned: u32,
}

impl LineFramer {
    /// Returns the next frame, taking bytes from the front of `input` (and from what is buffered
    /// first). `None` means `input` is used up and no complete line is buffered; an unfinished
    /// line has been kept for the next call.
    pub fn next_frame<'s, 'i: 's>(
        &'s mut self,
        input: &mut &'i [u8],
        max_line: usize,
    ) -> Option<Frame<'s>> {
        self.release_returned();
        if self.discarding {
            match find_newline(input) {
                Some(i) => {
                    *input = &input[i + 1..];
                    self.discarding = false;
                }
                None => {
                    *input = &[];
                    return None;
                }
            }
        }
        if (self.start as usize) < self.buf.len() {
            return self.next_buffered(input, max_line);
        }
        // Nothing buffered: frame straight from the caller's bytes, without copying.
        match find_newline(input) {
            Some(i) => {
                let line = &input[..i];
                *input = &input[i + 1..];
                Some(finish(line, max_line))
            }
            None if input.is_empty() => None,
            None if input.len() > max_line + 1 => {
                *input = &[];
                self.discarding = true;
                Some(Frame::TooLong)
            }
            None => {
                self.buf.extend_from_slice(input);
                self.scanned = self.buf.len() as u32;
                *input = &[];
                None
            }
        }
    }

    /// The frame when bytes are buffered: a stashed complete line, or a partial line finished by
    /// `input`.
    fn next_buffered<'s, 'i: 's>(
        &'s mut self,
        input: &mut &'i [u8],
        max_line: usize,
    ) -> Option<Frame<'s>> {
        let pending = self.buf.len() - (self.start as usize);
        if let Some(i) = self.buffered_newline() {
            let from = self.start as usize;
            self.start += (i + 1) as u32;
            self.scanned = 0;
            return Some(finish(&self.buf[from..from + i], max_line));
        }
        // Everything buffered is one unfinished line.
        self.scanned = pending as u32;
        match find_newline(input) {
            Some(i) if pending + i > max_line + 1 => {
                *input = &input[i + 1..];
                self.clear();
                Some(Frame::TooLong)
            }
            Some(i) => {
                self.buf.extend_from_slice(&input[..i]);
                *input = &input[i + 1..];
                let from = self.start as usize;
                self.start = self.buf.len() as u32;
                self.scanned = 0;
                Some(finish(&self.buf[from..], max_line))
            }
            None if pending + input.len() > max_line + 1 => {
                *input = &[];
                self.clear();
                self.discarding = true;
                Some(Frame::TooLong)
            }
            None => {
                self.buf.drain(..(self.start as usize));
                self.start = 0;
                self.buf.extend_from_slice(input);
                self.scanned = self.buf.len() as u32;
                *input = &[];
                None
            }
        }
    }

    /// Where the first newline after `start` is, scanning only bytes not scanned before.
    fn buffered_newline(&self) -> Option<usize> {
        let known = (self.scanned as usize).min(self.buf.len() - (self.start as usize));
        find_newline(&self.buf[(self.start as usize) + known..]).map(|i| known + i)
    }

    /// Keeps `input`, unprocessed, to be framed before anything read later.
    pub fn stash(&mut self, mut input: &[u8]) {
        if self.discarding {
            // The rest of an over-long line is dropped here too, never kept.
            match find_newline(input) {
                Some(i) => {
                    input = &input[i + 1..];
                    self.discarding = false;
                }
                None => return,
            }
        }
        if input.is_empty() {
            return;
        }
        self.release_returned();
        self.buf.drain(..(self.start as usize));
        self.start = 0;
        self.buf.extend_from_slice(input);
    }

    /// True when stashed bytes may hold a complete line, so the owner has work left without
    /// reading the socket.
    pub fn has_backlog(&self) -> bool {
        self.buffered_newline().is_some()
    }

    /// Bytes held for this connection.
    pub fn buffered(&self) -> usize {
        self.buf.len() - (self.start as usize)
    }

    /// At end of stream: the unfinished last line, if any (a client may send its last line
    /// without a newline before closing).
    pub fn take_partial(&mut self, max_line: usize) -> Option<Vec<u8>> {
        self.release_returned();
        let rest = self.buf[(self.start as usize)..].to_vec();
        self.clear();
        match finish(&rest, max_line) {
            Frame::Line(l) if !l.is_empty() && !self.discarding => Some(l.to_vec()),
            _ => None,
        }
    }

    /// Takes the unfinished line held (if any) as complete, as if its newline had arrived: it is
    /// then returned by the next [`LineFramer::next_frame`]. False when there is no such line
    /// (nothing held, a complete line still waiting, or an over-long line being skipped).
    pub fn end_partial(&mut self) -> bool {
        self.release_returned();
        if self.discarding || self.buffered() == 0 || self.has_backlog() {
            return false;
        }
        self.buf.push(b'\n');
        true
    }

    fn release_returned(&mut self) {
        if (self.start as usize) > 0 && (self.start as usize) >= self.buf.len() {
            self.clear();
        }
    }

    /// Drops the buffer's memory too: most connections hold no partial line most of the time.
    fn clear(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
        self.scanned = 0;
    }
}

fn find_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

fn finish(line: &[u8], max_line: usize) -> Frame<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max_line {
        Frame::TooLong
    } else {
        Frame::Line(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one after another and collects what comes out, as strings.
    fn frames(framer: &mut LineFramer, chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while let Some(f) = framer.next_frame(&mut input, max) {
                out.push(match f {
                    Frame::Line(l) => String::from_utf8(l.to_vec()).unwrap(),
                    Frame::TooLong => "<too long>".to_string(),
                });
            }
            assert!(input.is_empty(), "None must mean the input was used up");
        }
        out
    }

    #[test]
    fn splits_lines_and_strips_one_cr() {
        let mut f = LineFramer::default();
        assert_eq!(
            frames(&mut f, &[b"a\nbb\r\n\nc\r\r\n"], 100),
            ["a", "bb", "", "c\r"]
        );
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn an_unfinished_line_can_be_taken_as_complete() {
        let mut f = LineFramer::default();
        assert!(!f.end_partial(), "nothing held");
        assert_eq!(frames(&mut f, &[b"hel", b"lo"], 100), Vec::<String>::new());
        assert!(f.end_partial());
        assert!(!f.end_partial(), "already complete");
        assert_eq!(frames(&mut f, &[b"", b"next"], 100), ["hello"]);
        assert_eq!(f.buffered(), 4);
        // An over-long line being skipped is never completed.
        let mut f = LineFramer::default();
        assert_eq!(frames(&mut f, &[b"0123456789"], 4), ["<too long>"]);
        assert!(!f.end_partial());
    }

    #[test]
    fn joins_a_line_split_across_reads() {
        let mut f = LineFramer::default();
        assert_eq!(
            frames(&mut f, &[b"hel", b"lo wo", b"rld\nnext", b"\n"], 100),
            ["hello world", "next"]
        );
        assert_eq!(f.buffered(), 0);
        assert_eq!(f.buf.capacity(), 0, "an empty framer gives its memory back");
    }

    #[test]
    fn a_line_of_exactly_max_passes_with_crlf() {
        let mut f = LineFramer::default();
        assert_eq!(frames(&mut f, &[b"abcd\r\n"], 4), ["abcd"]);
        assert_eq!(frames(&mut f, &[b"ab", b"cd\r", b"\n"], 4), ["abcd"]);
        assert_eq!(frames(&mut f, &[b"abcde\n"], 4), ["<too long>"]);
    }

    #[test]
    fn too_long_line_is_reported_once_and_skipped_without_buffering() {
        let mut f = LineFramer::default();
        // No newline yet: reported as soon as the limit is crossed.
        assert_eq!(frames(&mut f, &[b"0123456789"], 4), ["<too long>"]);
        assert_eq!(f.buffered(), 0);
        // The rest of that line is dropped as it arrives, then framing resumes.
        assert_eq!(frames(&mut f, &[b"xxxxxxxx", b"yyyy\nok\n"], 4), ["ok"]);
    }

    #[test]
    fn too_long_across_reads_is_caught_in_the_partial_buffer() {
        let mut f = LineFramer::default();
        assert_eq!(frames(&mut f, &[b"abc", b"def"], 4), ["<too long>"]);
        assert_eq!(f.buffered(), 0);
        assert_eq!(frames(&mut f, &[b"ghi\nfine\n"], 4), ["fine"]);
        assert_eq!(
            frames(&mut f, &[b"abc", b"defg\nz\n"], 4),
            ["<too long>", "z"]
        );
    }

    #[test]
    fn never_holds_more_than_max_plus_one() {
        let mut f = LineFramer::default();
        for _ in 0..1000 {
            let mut input: &[u8] = b"no newline here";
            while f.next_frame(&mut input, 64).is_some() {}
            assert!(f.buffered() <= 65);
        }
    }

    #[test]
    fn stashed_lines_come_first() {
        let mut f = LineFramer::default();
        let mut input: &[u8] = b"one\ntwo\nthr";
        assert_eq!(f.next_frame(&mut input, 100), Some(Frame::Line(b"one")));
        // The caller stops here (out of tokens) and keeps the rest.
        f.stash(input);
        assert!(f.has_backlog());
        assert_eq!(
            frames(&mut f, &[b"", b"ee\nfour\n"], 100),
            ["two", "three", "four"]
        );
        assert!(!f.has_backlog());
    }

    #[test]
    fn stashing_while_discarding_drops_the_rest_of_the_long_line() {
        let mut f = LineFramer::default();
        assert_eq!(frames(&mut f, &[b"AAAAAAAAAAAA"], 4), ["<too long>"]);
        // Throttled before anything more is framed: the input is stashed.
        f.stash(b"TAIL\nok\n");
        assert!(f.has_backlog());
        assert_eq!(frames(&mut f, &[b""], 4), ["ok"]);
        assert_eq!(frames(&mut f, &[b"x\n"], 4), ["x"]);
        // A stash with no newline at all is dropped whole.
        assert_eq!(frames(&mut f, &[b"BBBBBBBBBB"], 4), ["<too long>"]);
        f.stash(b"BBBB");
        assert_eq!(f.buffered(), 0);
        assert_eq!(frames(&mut f, &[b"BB\ny\n"], 4), ["y"]);
    }

    #[test]
    fn take_partial_returns_an_unterminated_last_line() {
        let mut f = LineFramer::default();
        assert!(frames(&mut f, &[b"bye"], 100).is_empty());
        assert_eq!(f.take_partial(100), Some(b"bye".to_vec()));
        assert_eq!(f.take_partial(100), None);
    }

    /// What framing `data` must give, whatever the chunks it arrives in: the lines before each
    /// newline (one trailing CR dropped), over-long ones as `TooLong`, and the unfinished tail
    /// held (or reported `TooLong` once it cannot fit).
    fn model(data: &[u8], max: usize) -> (Vec<String>, usize) {
        let mut segments: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        let last = segments.pop().unwrap_or(&[]);
        let mut out: Vec<String> = segments
            .iter()
            .map(|l| match finish(l, max) {
                Frame::Line(l) => String::from_utf8(l.to_vec()).unwrap(),
                Frame::TooLong => "<too long>".to_string(),
            })
            .collect();
        let held = if last.len() > max + 1 {
            out.push("<too long>".to_string());
            0
        } else {
            last.len()
        };
        (out, held)
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_frames_like_the_whole(
            data in proptest::collection::vec(proptest::sample::select(b"ab\r\n".to_vec()), 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..40),
            max in 1usize..24,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= data.len()).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                chunks.push(&data[from..c.max(from)]);
                from = c.max(from);
            }
            let mut f = LineFramer::default();
            let got = frames(&mut f, &chunks, max);
            let (want, held) = model(&data, max);
            proptest::prop_assert_eq!(got, want);
            // An over-long tail is being skipped, not held.
            proptest::prop_assert_eq!(f.buffered(), if f.discarding { 0 } else { held });
        }
    }
}
