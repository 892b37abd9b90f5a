//! Reading a log group's streams as one sequence ordered by (timestamp, stream name, offset),
//! a page at a time: FilterLogEvents.
//!
//! Each stream is read by its own cursor from the position a binary search finds; a k-way
//! merge takes the smallest head. A page ends after `limit` events, `PAGE_BYTES` of them, or
//! when the scan budget is spent, and says where the next one starts as a `GroupPosition`: a
//! key that every event not yet returned is at or above. So a page holds one pending event per
//! stream plus the page itself, whatever the size of the streams.
//!
//! This module owns no files: `LogStore` opens them, and it never writes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io;

use super::read::{Cursor, Located, PAGE_BYTES, ScanBudget, Step, TimeRange, seek_time};

/// Bytes one call may scan across all streams before it answers, so a pattern that matches
/// nothing cannot make one call read a whole group; the caller resumes with the token, as
/// with CloudWatch Logs, which also answers with partial or empty pages and a `nextToken`.
pub(super) const SCAN_BYTES: u64 = 16 * 1024 * 1024;

/// Where a group read resumes: the events whose (timestamp, stream, offset) is at or above
/// this key. Events of one stream are in offset order and never decrease in time, so this one
/// key stands for a position in every stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupPosition {
    pub timestamp: u64,
    pub stream: String,
    pub offset: u64,
}

/// What to read from a group.
#[derive(Clone, Copy)]
pub struct GroupQuery<'a> {
    pub range: TimeRange,
    pub from: Option<&'a GroupPosition>,
    pub limit: usize,
    /// Keeps the events whose message it accepts.
    pub matches: &'a dyn Fn(&str) -> bool,
}

/// One page of a group, in (timestamp, stream, offset) order.
#[derive(Debug, Default)]
pub struct GroupPage {
    pub events: Vec<(String, Located)>,
    /// `None` when every stream has been read to its end (or to the range's end).
    pub next: Option<GroupPosition>,
}

/// Where a stream's cursor starts for `q`: (offset, earliest timestamp from there).
fn start_of(file: &File, name: &str, q: &GroupQuery) -> io::Result<(u64, u64)> {
    let range_start = q.range.start.unwrap_or(0);
    let (ts, min_offset) = match q.from {
        None => (range_start, 0),
        // Events of earlier-named streams at the key's millisecond were already returned.
        Some(k) if name < k.stream.as_str() => (range_start.max(k.timestamp.saturating_add(1)), 0),
        Some(k) if name == k.stream => (range_start.max(k.timestamp), k.offset),
        Some(k) => (range_start.max(k.timestamp), 0),
    };
    let offset = if ts == 0 { 0 } else { seek_time(file, ts)? };
    Ok((offset.max(min_offset), ts))
}

/// Reads one page of `streams` (name and open file, sorted by name).
pub(super) fn read_group(streams: Vec<(String, File)>, q: &GroupQuery) -> io::Result<GroupPage> {
    let mut budget = ScanBudget::new(SCAN_BYTES);
    let mut names = Vec::with_capacity(streams.len());
    let mut cursors = Vec::with_capacity(streams.len());
    // Each stream's next event, or why it has none.
    let mut pending = Vec::with_capacity(streams.len());
    // Heads of the merge: (timestamp, stream index, offset); indexes follow name order.
    let mut heads = BinaryHeap::new();
    for (i, (name, file)) in streams.into_iter().enumerate() {
        let (offset, floor) = start_of(&file, &name, q)?;
        let mut cursor = Cursor::at(file, offset, floor)?;
        let head = cursor.next_event(q.range, &mut budget, q.matches)?;
        if let Some((ts, offset)) = head_key(&cursor, &head) {
            heads.push(Reverse((ts, i, offset)));
        }
        pending.push(head);
        names.push(name);
        cursors.push(cursor);
    }
    let mut page = GroupPage::default();
    let mut bytes = 0;
    while let Some(Reverse((ts, i, offset))) = heads.pop() {
        let full = page.events.len() >= q.limit || bytes >= PAGE_BYTES;
        let head = std::mem::replace(&mut pending[i], Step::End);
        let Step::Event(event) = head else {
            // A stream that ran out of budget: nothing at or above its key was returned.
            page.next = Some(position(&names[i], ts, offset));
            break;
        };
        if full {
            page.next = Some(position(&names[i], ts, offset));
            break;
        }
        bytes += event.page_bytes();
        page.events.push((names[i].clone(), event));
        let head = cursors[i].next_event(q.range, &mut budget, q.matches)?;
        if let Some((ts, offset)) = head_key(&cursors[i], &head) {
            heads.push(Reverse((ts, i, offset)));
        }
        pending[i] = head;
    }
    Ok(page)
}

fn position(stream: &str, timestamp: u64, offset: u64) -> GroupPosition {
    GroupPosition {
        timestamp,
        stream: stream.to_string(),
        offset,
    }
}

/// The merge key of a stream's head: its event's (timestamp, offset), or for a stream that
/// ran out of budget the lowest key its unread lines can have; `None` at its end.
fn head_key(cursor: &Cursor, head: &Step) -> Option<(u64, u64)> {
    match head {
        Step::Event(e) => Some((e.event.timestamp, e.offset)),
        Step::OutOfBudget => Some((cursor.floor_ts(), cursor.pos())),
        Step::End => None,
    }
}
