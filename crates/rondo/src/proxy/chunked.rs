//! Finding the end of a chunked body (RFC 9112 §7.1) without changing it, and finding its
//! data for a client that is not sent the framing.
//!
//! Between HTTP/1.1 ends rondo forwards chunked bodies byte for byte, in both directions:
//! re-chunking would cost a copy and gain nothing. It still has to know where the body ends,
//! to reuse the connection for the next message and to refuse malformed framing (a smuggling
//! vector), so it runs this decoder over the bytes as they pass ([`ChunkedDecoder::feed`]).
//! A response going to a client served by hyper (HTTP/2) is sent as its data and trailers
//! instead ([`ChunkedDecoder::next_data`], [`ChunkedDecoder::in_trailers`]).

/// Longest chunk-size line (size, extensions, CRLF) accepted. nginx and HAProxy accept a few
/// hundred bytes of extensions; nothing legitimate sends more.
const MAX_LINE: u32 = 4096;

/// Longest trailer section accepted.
const MAX_TRAILERS: u32 = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// After the size: extensions until CR.
    Extension,
    /// Expecting LF after the size line.
    SizeLf,
    /// Inside chunk data.
    Data(u64),
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// After the last chunk: at the start of a trailer line (an empty line ends the body).
    TrailerStart,
    /// Inside a trailer field's name.
    TrailerName,
    /// Inside a trailer field's value.
    TrailerValue,
    /// Expecting LF of the final empty line.
    EndLf,
    /// Expecting LF of a trailer line.
    TrailerLf,
    /// The body is complete.
    Done,
}

/// Malformed chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub(crate) struct ChunkedError;

/// A streaming chunked-framing tracker.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    size: u64,
    /// Bytes of the current size line or trailer section, for the limits.
    line: u32,
    /// Data bytes the chunks' size lines announced so far (`max_body_size`).
    announced: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            line: 0,
            announced: 0,
        }
    }
}

impl ChunkedDecoder {
    /// The data the size lines read so far announced (the body's length once it is done):
    /// a limit on it refuses a chunk before its data is forwarded.
    pub(crate) fn announced(&self) -> u64 {
        self.announced
    }

    /// True once the terminating chunk and trailers have been seen.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes from `input` up to the end of the body; returns how many belong to the
    /// body (all of them unless the body ends inside `input`).
    pub(crate) fn feed(&mut self, input: &[u8]) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data(remaining) => {
                    // Skip over data in one step.
                    let available = (input.len() - i) as u64;
                    let take = remaining.min(available);
                    i += take as usize;
                    self.state = if take == remaining {
                        State::DataCr
                    } else {
                        State::Data(remaining - take)
                    };
                    continue;
                }
                State::Size => {
                    let digit = match b {
                        b'0'..=b'9' => Some(b - b'0'),
                        b'a'..=b'f' => Some(b - b'a' + 10),
                        b'A'..=b'F' => Some(b - b'A' + 10),
                        _ => None,
                    };
                    match digit {
                        Some(d) => {
                            // 16 hex digits would overflow; no chunk is that large.
                            if self.size >> 56 != 0 {
                                return Err(ChunkedError);
                            }
                            self.size = (self.size << 4) | u64::from(d);
                        }
                        None if self.line == 0 => return Err(ChunkedError),
                        None if b == b'\r' => self.state = State::SizeLf,
                        None if b == b';' || b == b' ' || b == b'\t' => {
                            self.state = State::Extension
                        }
                        None => return Err(ChunkedError),
                    }
                    self.bump_line(MAX_LINE)?;
                }
                State::Extension => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if is_control(b) {
                        return Err(ChunkedError);
                    }
                    self.bump_line(MAX_LINE)?;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkedError);
                    }
                    self.line = 0;
                    self.announced = self.announced.saturating_add(self.size);
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data(self.size)
                    };
                    self.size = 0;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkedError);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkedError);
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    // A field name starts the line: not a space (obs-fold), not a bare LF.
                    self.state = match b {
                        b'\r' => State::EndLf,
                        _ if is_token(b) => State::TrailerName,
                        _ => return Err(ChunkedError),
                    };
                    self.bump_line(MAX_TRAILERS)?;
                }
                State::TrailerName => {
                    self.state = match b {
                        b':' => State::TrailerValue,
                        _ if is_token(b) => State::TrailerName,
                        _ => return Err(ChunkedError),
                    };
                    self.bump_line(MAX_TRAILERS)?;
                }
                State::TrailerValue => {
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    } else if is_control(b) {
                        return Err(ChunkedError);
                    }
                    self.bump_line(MAX_TRAILERS)?;
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkedError);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkedError);
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
            }
            i += 1;
        }
        Ok(i)
    }

    /// Consumes the framing at the start of `input` up to the next chunk data, and that data
    /// as far as `input` holds it. Returns `(framing, data)`: the data is
    /// `input[framing..framing + data]`. Stops before the trailer section (see
    /// [`ChunkedDecoder::in_trailers`]), which [`ChunkedDecoder::feed`] reads.
    pub(crate) fn next_data(&mut self, input: &[u8]) -> Result<(usize, usize), ChunkedError> {
        let mut i = 0;
        while i < input.len() && !self.in_trailers() && !self.is_done() {
            if let State::Data(remaining) = self.state {
                let take = remaining.min((input.len() - i) as u64);
                self.state = if take == remaining {
                    State::DataCr
                } else {
                    State::Data(remaining - take)
                };
                // `take` is at most what `input` holds.
                return Ok((i, take as usize));
            }
            i += self.feed(&input[i..=i])?;
        }
        Ok((i, 0))
    }

    /// True from the end of the last chunk's size line until the body is done: what follows
    /// is the trailer section.
    pub(crate) fn in_trailers(&self) -> bool {
        matches!(
            self.state,
            State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::EndLf
        )
    }

    fn bump_line(&mut self, limit: u32) -> Result<(), ChunkedError> {
        self.line += 1;
        if self.line > limit {
            Err(ChunkedError)
        } else {
            Ok(())
        }
    }
}

/// A control character other than HTAB: never valid in a field value or chunk extension
/// (RFC 9110 §5.5), and a bare CR or LF there would split the message differently for
/// another parser.
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A `tchar` of RFC 9110 §5.6.2, the characters of a field name.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Result<(usize, bool), ChunkedError> {
        let mut d = ChunkedDecoder::default();
        let mut total = 0;
        for c in chunks {
            total += d.feed(c)?;
        }
        Ok((total, d.is_done()))
    }

    /// The data of `body` fed in `step`-byte reads, and the trailer section's bytes.
    fn data_of(body: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkedError> {
        let (mut d, mut data, mut trailers) = (ChunkedDecoder::default(), Vec::new(), Vec::new());
        let mut pending: Vec<u8> = Vec::new();
        for piece in body.chunks(step) {
            pending.extend_from_slice(piece);
            while !pending.is_empty() && !d.is_done() {
                if d.in_trailers() {
                    let n = d.feed(&pending)?;
                    trailers.extend(pending.drain(..n));
                    continue;
                }
                let (framing, n) = d.next_data(&pending)?;
                data.extend_from_slice(&pending[framing..framing + n]);
                pending.drain(..framing + n);
                if framing + n == 0 {
                    break;
                }
            }
        }
        assert!(d.is_done(), "{body:?} in steps of {step}");
        Ok((data, trailers))
    }

    #[test]
    fn data_and_trailers_are_found_however_reads_split_the_body() {
        let body = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\n";
        for step in [1, 2, 3, 7, body.len()] {
            let (data, trailers) = data_of(body, step).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
            assert_eq!(trailers, b"grpc-status: 0\r\nx: y\r\n\r\n");
        }
        let (data, trailers) = data_of(b"0\r\n\r\n", 1).unwrap();
        assert!(data.is_empty());
        assert_eq!(trailers, b"\r\n");
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.next_data(b"3\r\nab"), Ok((3, 2)));
        assert_eq!(d.next_data(b"c\r\nZ"), Ok((0, 1)));
        assert_eq!(d.next_data(b"\r\nZ"), Err(ChunkedError));
    }

    #[test]
    fn finds_the_end_of_a_body_split_anywhere() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let (a, b) = body.split_at(split);
            let mut d = ChunkedDecoder::default();
            let n1 = d.feed(a).unwrap();
            let n2 = if d.is_done() { 0 } else { d.feed(b).unwrap() };
            assert!(d.is_done(), "split at {split}");
            assert_eq!(n1 + n2, end, "split at {split}");
        }
    }

    #[test]
    fn malformed_extensions_and_trailers_are_refused() {
        for bad in [
            &b"3;a\x01b\r\nabc\r\n0\r\n\r\n"[..], // control character in an extension
            b"3;a\nabc\r\n0\r\n\r\n",             // bare LF in an extension
            b"0\r\nX: y\nZ: 1\r\n\r\n",           // bare LF ending a trailer
            b"0\r\n y\r\n\r\n",                   // obs-fold in trailers
            b"0\r\nX y\r\n\r\n",                  // no colon
            b"0\r\nX: \x7f\r\n\r\n",              // DEL in a trailer value
        ] {
            assert_eq!(run(&[bad]), Err(ChunkedError), "{}", bad.escape_ascii());
        }
        assert_eq!(run(&[b"0\r\nX-A: b c\r\nY:\r\n\r\n"]), Ok((19, true)));
    }

    #[test]
    fn byte_by_byte_and_without_trailers() {
        let body = b"a\r\n0123456789\r\n0\r\n\r\n";
        let parts: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(&parts).unwrap(), (body.len(), true));
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"4\r\nWikiXX",
            b"4\nWiki",
            b"fffffffffffffffff\r\n",
            b"4\r\nWiki\r\n0\r\nbad\rX",
        ] {
            assert!(run(&[bad]).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn incomplete_body_is_not_done() {
        assert_eq!(run(&[b"4\r\nWi"]).unwrap(), (5, false));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("RONDO_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
        ))]

        /// Fuzzing: any bytes, split anywhere, give the same verdict as the whole input at
        /// once (where a body ends, or that it is malformed), and never panic. A decoder that
        /// depended on read boundaries would let a client smuggle a second request.
        #[test]
        fn the_verdict_does_not_depend_on_where_reads_split_the_input(
            input in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"0123456789abcdefABCDEF;=\r\n\t :xX-".to_vec()),
                    proptest::num::u8::ANY,
                ],
                0..200,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let whole = run(&[&input]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut from = 0;
            for c in cuts {
                parts.push(&input[from..c]);
                from = c;
            }
            parts.push(&input[from..]);
            let split = run(&parts);
            match (whole, split) {
                (Ok((n, true)), Ok((m, true))) => proptest::prop_assert_eq!(n, m),
                (Ok((_, false)), Ok((_, false))) | (Err(_), Err(_)) => {}
                // Splitting may stop a body earlier only by erroring earlier, never differently.
                (w, s) => proptest::prop_assert!(false, "whole {:?} split {:?}", w, s),
            }
        }

        /// Fuzzing with well-formed bodies: a valid chunked body of any chunk sizes is
        /// accepted whole, to its last byte, however it is split.
        #[test]
        fn valid_bodies_are_accepted_to_their_last_byte(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..40), 0..6),
            cut in 0usize..400,
        ) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\nNEXT");
            let cut = cut.min(body.len());
            let got = run(&[&body[..cut], &body[cut..]]);
            proptest::prop_assert_eq!(got, Ok((body.len() - 4, true)));
        }
    }
}
