//! A reader that bounds the size of one CSV record, so that a single huge field (or a file that
//! is one 1 GB line) is quarantined instead of read into memory whole.
//!
//! ```text
//! decoded file ──▶ RecordLimit ──▶ Tee ──▶ csv crate ──▶ records
//!                      │ a record longer than `limit` bytes: its first `limit` bytes pass,
//!                      │ the rest is skipped up to the record's end, and a closing quote (if
//!                      │ one is open) ends it for the csv crate
//!                      └─▶ Cut { start, bytes, lines }: the reader quarantines that record
//! ```
//!
//! Record ends are found with the csv crate's own rules (`csv-core`'s state machine for the
//! options Sluice uses): a quote opens a quoted field only at the start of a field; inside
//! one, a doubled quote is a literal quote and a lone one closes it; outside quotes, `\n` or
//! `\r` ends the record. Offsets in [`Cut`] are in the stream this reader produces (what the
//! csv crate counts), so the reader can match a cut to the record it cut.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

/// Default `max_record_bytes`: 16 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;

/// The project's `max_record_bytes`, carried in the DataFusion session config (an extension)
/// to where sources are scanned.
#[derive(Debug, Clone, Copy)]
pub struct MaxRecordBytes(pub usize);

impl MaxRecordBytes {
    /// The value set in `ctx`'s session, or the default.
    pub fn of(ctx: &datafusion::prelude::SessionContext) -> usize {
        ctx.state()
            .config()
            .get_extension::<MaxRecordBytes>()
            .map_or(DEFAULT_MAX_RECORD_BYTES, |m| m.0)
    }
}

/// Bytes read from the file at a time.
const CHUNK: usize = 64 * 1024;

/// One record cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Offset in the produced stream where the record starts.
    pub start: u64,
    /// The record's size in the file, in bytes (without its line end).
    pub bytes: u64,
    /// Line feeds skipped inside it (quoted line breaks), which the csv crate did not count.
    pub lines: u64,
}

/// What the reader cut so far, shared with whoever parses its output.
#[derive(Debug, Default)]
pub struct Cuts {
    pending: Vec<Cut>,
}

impl Cuts {
    /// Removes and returns the cut whose record starts in `[start, end)` of the produced
    /// stream, if any.
    pub fn take_within(&mut self, start: u64, end: u64) -> Option<Cut> {
        let i = self
            .pending
            .iter()
            .position(|c| c.start >= start && c.start < end)?;
        Some(self.pending.remove(i))
    }
}

/// Where the scan is within a record (the csv crate's states for RFC 4180 text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field.
    FieldStart,
    /// In an unquoted field.
    Unquoted,
    /// In a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: a second quote is a literal one.
    QuoteInQuoted,
}

/// See the module docs.
pub struct RecordLimit<R> {
    inner: R,
    limit: u64,
    quote: u8,
    delimiter: u8,
    cuts: Rc<RefCell<Cuts>>,
    state: State,
    /// Bytes produced so far.
    produced: u64,
    /// Where the current record starts in the produced stream.
    record_start: u64,
    /// Read from `inner`, not yet produced: `buf[at..]`.
    buf: Vec<u8>,
    at: usize,
    /// A synthetic closing quote to produce before `buf`.
    close_quote: bool,
}

impl<R: Read> RecordLimit<R> {
    /// Wraps `inner`; records longer than `limit` bytes are cut and reported in `cuts`.
    pub fn new(
        inner: R,
        limit: usize,
        delimiter: u8,
        quote: u8,
        cuts: Rc<RefCell<Cuts>>,
    ) -> RecordLimit<R> {
        RecordLimit {
            inner,
            limit: u64::try_from(limit).unwrap_or(u64::MAX).max(1),
            quote,
            delimiter,
            cuts,
            state: State::FieldStart,
            produced: 0,
            record_start: 0,
            buf: Vec::new(),
            at: 0,
            close_quote: false,
        }
    }

    /// Moves the state over one byte; true at a record end.
    fn step(&mut self, b: u8) -> bool {
        let end = b == b'\n' || b == b'\r';
        self.state = match self.state {
            State::Quoted if b == self.quote => State::QuoteInQuoted,
            State::Quoted => State::Quoted,
            State::QuoteInQuoted if b == self.quote => State::Quoted,
            State::FieldStart if b == self.quote => State::Quoted,
            _ if end => State::FieldStart,
            _ if b == self.delimiter => State::FieldStart,
            _ => State::Unquoted,
        };
        end && self.state == State::FieldStart
    }

    /// Scans `data` (about to be produced from offset `self.produced`); returns how many bytes
    /// may be produced before the current record passes the limit (`data.len()` if none).
    /// Only quotes and line ends change the state in ways that matter, so the scan jumps
    /// between them with `memchr` (a quote opens a field only after a delimiter, which the
    /// byte before it tells).
    fn scan(&mut self, data: &[u8]) -> usize {
        if self.scan_plain(data) {
            return data.len();
        }
        let mut i = 0;
        while i < data.len() {
            let used = self.produced + i as u64 - self.record_start;
            if used >= self.limit {
                let b = data[i];
                if (b != b'\n' && b != b'\r') || self.state == State::Quoted {
                    return i;
                }
                // Exactly `limit` bytes, then the record's end: not too long.
                self.step(b);
                self.record_start = self.produced + i as u64 + 1;
                i += 1;
                continue;
            }
            let room = usize::try_from(self.limit - used).unwrap_or(usize::MAX);
            let end = data.len().min(i.saturating_add(room));
            let window = &data[i..end];
            let hit = if self.state == State::Quoted {
                memchr::memchr(self.quote, window)
            } else {
                memchr::memchr3(self.quote, b'\n', b'\r', window)
            };
            let skipped = hit.unwrap_or(window.len());
            if skipped > 0 && self.state != State::Quoted {
                // Plain bytes: the field is unquoted now, or a new one starts after a delimiter.
                self.step(window[skipped - 1]);
            }
            let Some(pos) = hit else {
                i = end;
                continue;
            };
            let at = i + pos;
            if self.step(data[at]) {
                self.record_start = self.produced + at as u64 + 1;
            }
            i = at + 1;
        }
        data.len()
    }

    /// The common case in one pass of `memchr`: no quote in `data`, outside a quoted field,
    /// and the current record plus `data` within the limit (so no record in it can pass the
    /// limit). Only the last line end matters then. False when the full scan is needed.
    fn scan_plain(&mut self, data: &[u8]) -> bool {
        let span = self.produced + data.len() as u64 - self.record_start;
        if span > self.limit
            || self.state == State::Quoted
            || memchr::memchr(self.quote, data).is_some()
        {
            return false;
        }
        let Some(&last) = data.last() else {
            return true;
        };
        if let Some(end) = memchr::memrchr2(b'\n', b'\r', data) {
            self.record_start = self.produced + end as u64 + 1;
            self.state = State::FieldStart;
        }
        if last != b'\n' && last != b'\r' {
            self.step(last);
        }
        true
    }

    /// Skips the rest of the record that passed the limit, up to (not including) its end;
    /// queues a closing quote when the csv crate is inside a quoted field.
    fn skip_record(&mut self) -> io::Result<()> {
        let start = self.record_start;
        let seen_by_csv = self.state;
        let mut bytes = self.produced - start;
        let mut lines = 0;
        'skipping: loop {
            if self.at == self.buf.len() && !self.fill()? {
                break; // the file ends inside the record
            }
            while self.at < self.buf.len() {
                let b = self.buf[self.at];
                if (b == b'\n' || b == b'\r') && self.state != State::Quoted {
                    // The record ends here; this byte is produced, and ends it for the csv crate.
                    break 'skipping;
                }
                lines += u64::from(b == b'\n');
                self.step(b);
                self.at += 1;
                bytes += 1;
            }
        }
        self.close_quote = seen_by_csv == State::Quoted;
        self.cuts.borrow_mut().pending.push(Cut {
            start,
            bytes,
            lines,
        });
        Ok(())
    }

    /// Reads the next chunk of `inner` into `buf`; false at the end of input.
    fn fill(&mut self) -> io::Result<bool> {
        self.buf.resize(CHUNK, 0);
        self.at = 0;
        let n = loop {
            match self.inner.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.buf.truncate(n);
        Ok(n > 0)
    }
}

impl<R: Read> Read for RecordLimit<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.close_quote {
                self.close_quote = false;
                out[0] = self.quote;
                self.produced += 1;
                return Ok(1);
            }
            if self.at == self.buf.len() {
                // Nothing kept back: read straight into the caller's buffer (no extra copy),
                // and keep what follows a cut point for `skip_record`.
                let n = loop {
                    match self.inner.read(out) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                };
                if n == 0 {
                    return Ok(0);
                }
                let allowed = self.scan(&out[..n]);
                self.produced += allowed as u64;
                if allowed < n {
                    self.buf.clear();
                    self.buf.extend_from_slice(&out[allowed..n]);
                    self.at = 0;
                    self.skip_record()?;
                }
                if allowed > 0 {
                    return Ok(allowed);
                }
                continue;
            }
            let n = (self.buf.len() - self.at).min(out.len());
            let from = self.at;
            let buf = std::mem::take(&mut self.buf);
            let allowed = self.scan(&buf[from..from + n]);
            out[..allowed].copy_from_slice(&buf[from..from + allowed]);
            self.buf = buf;
            self.at += allowed;
            self.produced += allowed as u64;
            if allowed < n {
                self.skip_record()?;
            }
            if allowed > 0 {
                return Ok(allowed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `input` through a limit of `limit` bytes: the produced text and the cuts.
    fn limited(input: &str, limit: usize) -> (String, Vec<Cut>) {
        let cuts = Rc::new(RefCell::new(Cuts::default()));
        let mut r = RecordLimit::new(input.as_bytes(), limit, b',', b'"', cuts.clone());
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        let all = cuts.borrow().pending.clone();
        (out, all)
    }

    /// A reader that hands out at most `step` bytes per call.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn records_split_across_reads_are_measured_whole() {
        // Short chunks take the quote-free fast path; the long record spans several of them.
        let input = "a,b\n1,xxxxxxxxxxxxxxxxxxxx\n2,y\n3,\"q\nq\"\n";
        for step in [1, 2, 3, 5, 7, 64] {
            let cuts = Rc::new(RefCell::new(Cuts::default()));
            let mut r = RecordLimit::new(
                Trickle(input.as_bytes(), step),
                10,
                b',',
                b'"',
                cuts.clone(),
            );
            let mut out = String::new();
            r.read_to_string(&mut out).unwrap();
            assert_eq!(out, "a,b\n1,xxxxxxxx\n2,y\n3,\"q\nq\"\n", "step {step}");
            assert_eq!(
                cuts.borrow().pending,
                [Cut {
                    start: 4,
                    bytes: 22,
                    lines: 0
                }],
                "step {step}"
            );
        }
    }

    #[test]
    fn short_records_pass_unchanged() {
        let text = "a,b\n1,\"x\ny\"\r\n2,\"q\"\"\"\n3,5'11\"\n";
        assert_eq!(limited(text, 100), (text.to_string(), vec![]));
    }

    #[test]
    fn a_long_record_is_cut_and_the_next_one_kept() {
        let (out, cuts) = limited("a,b\n1,xxxxxxxxxx\n2,y\n", 6);
        assert_eq!(out, "a,b\n1,xxxx\n2,y\n");
        assert_eq!(
            cuts,
            [Cut {
                start: 4,
                bytes: 12,
                lines: 0
            }]
        );
    }

    #[test]
    fn a_cut_inside_quotes_is_closed_and_counts_its_line_breaks() {
        let (out, cuts) = limited("1,\"ab\ncd\nef\"\n2,y\n", 5);
        assert_eq!(out, "1,\"ab\"\n2,y\n");
        assert_eq!(
            cuts,
            [Cut {
                start: 0,
                bytes: 12,
                lines: 2
            }]
        );
    }

    #[test]
    fn a_record_of_exactly_the_limit_passes() {
        assert_eq!(
            limited("1,xx\n2,y\n", 4),
            ("1,xx\n2,y\n".to_string(), vec![])
        );
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_is_literal() {
        // `5'11"` opens no quote: the line feed after it ends the record.
        let (out, cuts) = limited("h,5'11\"\nnext,row\n", 8);
        assert_eq!(out, "h,5'11\"\nnext,row\n");
        assert!(cuts.is_empty());
    }

    #[test]
    fn a_file_that_is_one_long_line_ends_with_the_cut() {
        let line = "x".repeat(100_000);
        let (out, cuts) = limited(&line, 10);
        assert_eq!(out, "x".repeat(10));
        assert_eq!(cuts[0].bytes, 100_000);
    }
}
