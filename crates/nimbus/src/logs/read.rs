//! Reading one stream file a page at a time, with memory bounded by the page and never by the
//! stream.
//!
//! A stream file is append-only text, one event per line: `<epoch ms>\t<message>\n`, with
//! non-decreasing timestamps (the writer enforces that, see `StreamWriter::emit`). So a reader
//! can seek: a position is a byte offset, the first event of a time range is found by binary
//! search on offsets, and the newest page is read backwards from the end in fixed-size chunks.
//! Only lines that end in `\n` are events: a line the writer is still writing stays invisible
//! until it is complete, and a reader that stops before it resumes at its start.
//!
//! This module only reads; it never writes, truncates or locks a stream file. Any offset it
//! is given (from a token, i.e. from a client) is treated as untrusted: it is clamped to the
//! file and moved to the next line start.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use super::LogEvent;

/// The longest line a reader keeps: the writer splits messages at `MAX_LINE`, plus room for
/// the timestamp and the tab. Longer lines (never written by Nimbus) are cut to this.
pub(super) const MAX_LINE_BYTES: usize = super::MAX_LINE + 32;

/// Bytes of events one page may hold: CloudWatch Logs answers with at most 1 MB of events
/// (or 10,000 of them) per call, counting 26 bytes per event on top of its message.
pub(super) const PAGE_BYTES: usize = 1024 * 1024;
const EVENT_OVERHEAD: usize = 26;

/// Backward reads and line-start searches read the file in chunks of this size.
const CHUNK: usize = 64 * 1024;

/// Below this many bytes, a time search finishes with a plain forward scan.
const LINEAR_SCAN: u64 = 16 * 1024;

/// A time range, as CloudWatch Logs defines it: `start` included, `end` excluded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub start: Option<u64>,
    pub end: Option<u64>,
}

impl TimeRange {
    fn before_start(&self, ts: u64) -> bool {
        self.start.is_some_and(|s| ts < s)
    }

    fn past_end(&self, ts: u64) -> bool {
        self.end.is_some_and(|e| ts >= e)
    }
}

/// An event and where its line sits in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// Offset of the line's first byte.
    pub offset: u64,
    /// Offset just past the line's `\n`: where the next line starts.
    pub next: u64,
    pub event: LogEvent,
}

impl Located {
    /// What the event counts for against `PAGE_BYTES`.
    pub(super) fn page_bytes(&self) -> usize {
        self.event.message.len() + EVENT_OVERHEAD
    }
}

/// One page of one stream, oldest event first.
#[derive(Debug, Default)]
pub struct StreamPage {
    pub events: Vec<Located>,
    /// Where a forward read continues: after the newest event returned, or where the read
    /// stopped (end of the complete lines, or the first line at or past the range's end).
    pub forward: u64,
    /// Where a backward read continues (it reads the lines before this offset): the oldest
    /// event returned, or where the read stopped.
    pub backward: u64,
}

/// Splits a line (without its `\n`) into an event; `None` if it is not `<digits>\t…`.
pub(super) fn parse_line(line: &[u8]) -> Option<LogEvent> {
    let tab = line.iter().position(|&b| b == b'\t')?;
    Some(LogEvent {
        timestamp: parse_timestamp(&line[..tab])?,
        message: String::from_utf8_lossy(&line[tab + 1..]).into_owned(),
    })
}

fn parse_timestamp(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// How much of the file a call may scan before it must answer (FilterLogEvents with a pattern
/// that matches nothing would otherwise read a whole group in one call).
#[derive(Debug)]
pub(super) struct ScanBudget {
    left: u64,
}

impl ScanBudget {
    pub(super) fn new(bytes: u64) -> Self {
        ScanBudget { left: bytes }
    }

    pub(super) fn unlimited() -> Self {
        ScanBudget { left: u64::MAX }
    }
}

/// What a cursor found next.
#[derive(Debug)]
pub(super) enum Step {
    Event(Located),
    /// End of the complete lines, or the first line at or past the range's end; the cursor's
    /// `pos` is where a later read resumes.
    End,
    /// The scan budget ran out; `pos` and `floor_ts` say where to resume.
    OutOfBudget,
}

/// A forward reader over one file, from a line start, one capped line at a time.
pub(super) struct Cursor {
    reader: BufReader<File>,
    /// Offset of the next unread line.
    pos: u64,
    /// No line at or after `pos` has an earlier timestamp (the file is non-decreasing).
    floor_ts: u64,
    /// Whether this cursor has read a line in this call (see `next_event`).
    scanned: bool,
    stopped: bool,
    line: Vec<u8>,
}

impl Cursor {
    /// A cursor at the first line starting at or after `offset` (clamped to the file);
    /// `floor_ts` is a timestamp no line from there on is below.
    pub(super) fn at(file: File, offset: u64, floor_ts: u64) -> io::Result<Self> {
        let start = next_line_start(&file, offset)?;
        let mut reader = BufReader::with_capacity(CHUNK, file);
        reader.seek(SeekFrom::Start(start))?;
        Ok(Cursor {
            reader,
            pos: start,
            floor_ts,
            scanned: false,
            stopped: false,
            line: Vec::new(),
        })
    }

    pub(super) fn pos(&self) -> u64 {
        self.pos
    }

    pub(super) fn floor_ts(&self) -> u64 {
        self.floor_ts
    }

    /// Reads the next complete line into `self.line` (cut to `MAX_LINE_BYTES`, without its
    /// `\n`) and returns its start offset and length in the file; `None` at the end of the
    /// complete lines, leaving `pos` at the start of an unterminated last line.
    fn read_line(&mut self) -> io::Result<Option<(u64, u64)>> {
        if self.stopped {
            return Ok(None);
        }
        self.line.clear();
        let start = self.pos;
        let mut consumed: u64 = 0;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                // A line without its `\n` is still being written: not an event yet. Stop
                // for good, so that bytes appended meanwhile are not read from mid-line.
                self.stopped = true;
                return Ok(None);
            }
            let (len, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let content = if complete { len - 1 } else { len };
            let keep = MAX_LINE_BYTES.saturating_sub(self.line.len()).min(content);
            self.line.extend_from_slice(&buf[..keep]);
            self.reader.consume(len);
            consumed += len as u64;
            if complete {
                self.pos = start + consumed;
                return Ok(Some((start, consumed)));
            }
        }
    }

    /// The next event in `range` whose message `matches`. Lines before the range are
    /// skipped; at the first line past its end the cursor stops there. Once `budget` is
    /// spent it answers `OutOfBudget`, but only after reading at least one line, so that a
    /// resumed call always makes progress.
    pub(super) fn next_event(
        &mut self,
        range: TimeRange,
        budget: &mut ScanBudget,
        matches: &dyn Fn(&str) -> bool,
    ) -> io::Result<Step> {
        loop {
            if budget.left == 0 && self.scanned {
                return Ok(Step::OutOfBudget);
            }
            let Some((start, len)) = self.read_line()? else {
                return Ok(Step::End);
            };
            budget.left = budget.left.saturating_sub(len);
            self.scanned = true;
            // A line that does not parse (only a damaged file has one) is skipped.
            let Some(event) = parse_line(&self.line) else {
                continue;
            };
            if range.past_end(event.timestamp) {
                self.pos = start;
                self.stopped = true;
                return Ok(Step::End);
            }
            self.floor_ts = self.floor_ts.max(event.timestamp);
            if range.before_start(event.timestamp) || !matches(&event.message) {
                continue;
            }
            return Ok(Step::Event(Located {
                offset: start,
                next: start + len,
                event,
            }));
        }
    }
}

/// The smallest line start at or after `offset`, or the file's length if there is none.
fn next_line_start(file: &File, offset: u64) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if offset == 0 || offset > len {
        return Ok(offset.min(len));
    }
    // The line containing byte `offset - 1` ends at the first `\n` from there.
    let mut at = offset - 1;
    let mut chunk = vec![0u8; CHUNK];
    while at < len {
        let n = ((len - at) as usize).min(CHUNK);
        file.read_exact_at(&mut chunk[..n], at)?;
        if let Some(i) = chunk[..n].iter().position(|&b| b == b'\n') {
            return Ok(at + i as u64 + 1);
        }
        at += n as u64;
    }
    Ok(len)
}

/// The timestamp of the line starting at `offset`, read from its first bytes.
fn timestamp_at(file: &File, offset: u64) -> io::Result<Option<u64>> {
    let mut head = [0u8; 24];
    let n = file.read_at(&mut head, offset)?;
    let head = &head[..n];
    Ok(head
        .iter()
        .position(|&b| b == b'\t')
        .and_then(|tab| parse_timestamp(&head[..tab])))
}

/// The offset of the first line whose timestamp is at least `ts`, or the end of the complete
/// lines if there is none: a binary search on byte offsets (each probe skips to the next line
/// start and reads its timestamp), finished by a short forward scan.
pub(super) fn seek_time(file: &File, ts: u64) -> io::Result<u64> {
    // Invariant: every line starting before `lo` is earlier than `ts`; the answer is at or
    // before `hi`, which is a line start whose timestamp is at least `ts`, or the length.
    let (mut lo, mut hi) = (0u64, file.metadata()?.len());
    while hi - lo > LINEAR_SCAN {
        let mid = lo + (hi - lo) / 2;
        let s = next_line_start(file, mid)?;
        if s >= hi {
            break;
        }
        match timestamp_at(file, s)? {
            Some(t) if t >= ts => hi = s,
            // An unparseable line (a damaged file) counts as earlier.
            _ => lo = s,
        }
    }
    let mut cursor = Cursor::at(file.try_clone()?, lo, 0)?;
    while let Some((start, _)) = cursor.read_line()? {
        if start >= hi {
            return Ok(hi);
        }
        if parse_line(&cursor.line).is_some_and(|e| e.timestamp >= ts) {
            return Ok(start);
        }
    }
    Ok(cursor.pos.min(hi))
}

/// Up to `limit` events of `range`, oldest first, from `from` (a token's offset) or from the
/// start of the range.
pub(super) fn page_forward(
    file: &File,
    from: Option<u64>,
    range: TimeRange,
    limit: usize,
) -> io::Result<StreamPage> {
    let mut start = from.unwrap_or(0);
    if let Some(t) = range.start {
        start = start.max(seek_time(file, t)?);
    }
    let mut cursor = Cursor::at(file.try_clone()?, start, range.start.unwrap_or(0))?;
    let backward = cursor.pos();
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut budget = ScanBudget::unlimited();
    while events.len() < limit && bytes < PAGE_BYTES {
        match cursor.next_event(range, &mut budget, &|_| true)? {
            Step::Event(e) => {
                bytes += e.page_bytes();
                events.push(e);
            }
            Step::End | Step::OutOfBudget => break,
        }
    }
    Ok(StreamPage {
        backward: events.first().map_or(backward, |e| e.offset),
        forward: cursor.pos(),
        events,
    })
}

/// Walks a file's lines backwards from a line start, holding one chunk.
struct Backward<'a> {
    file: &'a File,
    chunk: Vec<u8>,
    chunk_start: u64,
    /// Start of the line returned last: lines before it remain.
    pos: u64,
}

impl<'a> Backward<'a> {
    /// Starts at `end` clamped to the file and moved back to a line start, so an
    /// unterminated last line (or a mid-line offset from a token) is left out.
    fn new(file: &'a File, end: u64) -> io::Result<Self> {
        let end = end.min(file.metadata()?.len());
        let mut b = Backward {
            file,
            chunk: Vec::new(),
            chunk_start: 0,
            pos: 0,
        };
        b.pos = match b.rfind_newline(end)? {
            Some(i) => i + 1,
            None => 0,
        };
        Ok(b)
    }

    /// The offset of the last `\n` before `p`.
    fn rfind_newline(&mut self, mut p: u64) -> io::Result<Option<u64>> {
        while p > 0 {
            let chunk_end = self.chunk_start + self.chunk.len() as u64;
            if !(self.chunk_start < p && p <= chunk_end) {
                let start = p.saturating_sub(CHUNK as u64);
                self.chunk.resize((p - start) as usize, 0);
                self.file.read_exact_at(&mut self.chunk, start)?;
                self.chunk_start = start;
            }
            let upto = (p - self.chunk_start) as usize;
            if let Some(i) = self.chunk[..upto].iter().rposition(|&b| b == b'\n') {
                return Ok(Some(self.chunk_start + i as u64));
            }
            p = self.chunk_start;
        }
        Ok(None)
    }

    /// The line before the current position, as (start, end past its `\n`).
    fn prev_line(&mut self) -> io::Result<Option<(u64, u64)>> {
        if self.pos == 0 {
            return Ok(None);
        }
        let end = self.pos;
        let start = match self.rfind_newline(end - 1)? {
            Some(i) => i + 1,
            None => 0,
        };
        self.pos = start;
        Ok(Some((start, end)))
    }

    /// The event on the line [start, end), its content cut to `MAX_LINE_BYTES`.
    fn event(&self, start: u64, end: u64) -> io::Result<Option<Located>> {
        let content_end = (end - 1).min(start + MAX_LINE_BYTES as u64);
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        let event = if start >= self.chunk_start && content_end <= chunk_end {
            let from = (start - self.chunk_start) as usize;
            let to = (content_end - self.chunk_start) as usize;
            parse_line(&self.chunk[from..to])
        } else {
            let mut line = vec![0u8; (content_end - start) as usize];
            self.file.read_exact_at(&mut line, start)?;
            parse_line(&line)
        };
        Ok(event.map(|event| Located {
            offset: start,
            next: end,
            event,
        }))
    }
}

/// Up to `limit` events of `range` that end before `before` (a token's offset) or before
/// the range's end: the newest page, read backwards in chunks. Oldest first.
pub(super) fn page_backward(
    file: &File,
    before: Option<u64>,
    range: TimeRange,
    limit: usize,
) -> io::Result<StreamPage> {
    let mut end = before.unwrap_or(u64::MAX);
    if let Some(t) = range.end {
        end = end.min(seek_time(file, t)?);
    }
    let mut lines = Backward::new(file, end)?;
    let aligned_end = lines.pos;
    let mut events = Vec::new();
    let mut bytes = 0;
    while events.len() < limit && bytes < PAGE_BYTES {
        let Some((start, end)) = lines.prev_line()? else {
            break;
        };
        let Some(e) = lines.event(start, end)? else {
            continue;
        };
        if range.before_start(e.event.timestamp) {
            break;
        }
        if range.past_end(e.event.timestamp) {
            continue;
        }
        bytes += e.page_bytes();
        events.push(e);
    }
    events.reverse();
    Ok(StreamPage {
        forward: events.last().map_or(aligned_end, |e| e.next),
        backward: events.first().map_or(aligned_end, |e| e.offset),
        events,
    })
}

/// The timestamp of a file's first complete event, read from its first line.
pub(super) fn first_timestamp(file: &File) -> io::Result<Option<u64>> {
    let mut cursor = Cursor::at(file.try_clone()?, 0, 0)?;
    let all = |_: &str| true;
    Ok(
        match cursor.next_event(TimeRange::default(), &mut ScanBudget::unlimited(), &all)? {
            Step::Event(e) => Some(e.event.timestamp),
            Step::End | Step::OutOfBudget => None,
        },
    )
}

/// The timestamp of a file's last complete event, read from its tail.
pub(super) fn last_timestamp(file: &File) -> io::Result<Option<u64>> {
    Ok(page_backward(file, None, TimeRange::default(), 1)?
        .events
        .first()
        .map(|e| e.event.timestamp))
}
