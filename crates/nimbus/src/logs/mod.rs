//! Function logs: one durable file per log stream under `DATA/logs/<account>/<group>/<stream>`, one
//! stream per execution environment, as in CloudWatch Logs.
//!
//! Each environment's stdout and stderr arrive on one pipe. A task per environment (the
//! stream's only writer) reads it line by line and interleaves the platform's own lines
//! (START / END / REPORT) in the right order: the invoker tells it when an invocation starts
//! and ends, and at the end it first drains whatever the function wrote before it answered.
//! Files are written with one `write` per batch, so a crash of the server loses nothing that a
//! reader could already have seen.
//!
//! Reading never loads a stream: `read` reads one stream a page at a time by byte offset,
//! `group` merges a group's streams in time order (decision 0008).

mod group;
mod read;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use tokio::sync::{mpsc, oneshot};

use crate::model::time::now_ms;
use crate::sandbox::EnvProcess;

pub use group::{GroupPage, GroupPosition, GroupQuery};
pub use read::{Located, StreamPage, TimeRange};

/// What a REPORT line says; the stream's task completes it with Max Memory Used.
pub struct Report {
    pub request_id: Arc<str>,
    pub duration: Duration,
    pub memory_mb: u32,
    /// Set on the first invocation of an environment.
    pub init: Option<Duration>,
    /// `timeout`, or `error\tError Type: …`.
    pub status: Option<String>,
    pub process: Arc<dyn EnvProcess>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The REPORT line, in Lambda's exact format: tab-separated, each field followed by a tab;
/// billed duration is the duration rounded up to the millisecond.
pub fn report_line(
    request_id: &str,
    duration: Duration,
    memory_mb: u32,
    max_memory_bytes: u64,
    init: Option<Duration>,
    status: Option<&str>,
) -> String {
    let d = ms(duration);
    let billed = (d.ceil() as u64).max(1);
    let used = max_memory_bytes.div_ceil(1024 * 1024);
    let mut line = format!(
        "REPORT RequestId: {request_id}\tDuration: {d:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {used} MB\t"
    );
    if let Some(init) = init {
        line.push_str(&format!("Init Duration: {:.2} ms\t", ms(init)));
    }
    if let Some(status) = status {
        line.push_str(&format!("Status: {status}\t"));
    }
    line
}

/// How much of an invocation's log text is kept for `LogType: Tail` (which returns 4 KB).
const TEXT_KEEP: usize = 2 * crate::model::limits::LOG_TAIL_BYTES;

/// Lambda splits log lines longer than 256 KB.
const MAX_LINE: usize = 256 * 1024;

const FILE_NAME: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'[')
    .remove(b']')
    .remove(b'$');

fn encode(name: &str) -> String {
    utf8_percent_encode(name, FILE_NAME).to_string()
}

fn decode(file_name: &str) -> String {
    percent_decode_str(file_name)
        .decode_utf8_lossy()
        .into_owned()
}

/// One log event.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub timestamp: u64,
    pub message: String,
}

/// A stream's summary.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub name: String,
    pub first_event: Option<u64>,
    pub last_event: Option<u64>,
    pub stored_bytes: u64,
    pub created: u64,
}

/// The log directory; owns `DATA/logs`.
#[derive(Debug, Clone)]
pub struct LogStore {
    root: PathBuf,
}

impl LogStore {
    pub fn open(root: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&root)?;
        Ok(LogStore { root })
    }

    fn account_dir(&self, account: &str) -> PathBuf {
        self.root.join(encode(account))
    }

    fn group_dir(&self, account: &str, group: &str) -> PathBuf {
        self.account_dir(account).join(encode(group))
    }

    fn stream_path(&self, account: &str, group: &str, stream: &str) -> PathBuf {
        self.group_dir(account, group).join(encode(stream))
    }

    /// Starts the writer task of a new stream fed by `output` (an environment's pipe).
    pub fn start_stream(
        &self,
        account: &str,
        group: &str,
        stream: &str,
        output: OwnedFd,
    ) -> io::Result<LogSink> {
        fs::create_dir_all(self.group_dir(account, group))?;
        let path = self.stream_path(account, group, stream);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // Stream names are unique per environment, but should a file already exist, its
        // newest time is where this writer's timestamps start.
        let last_ts = read::last_timestamp(&File::open(&path)?)?.unwrap_or(0);
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(output)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let pending_start = Arc::new(std::sync::Mutex::new(None));
        tokio::spawn(run_stream(pipe, file, last_ts, rx, pending_start.clone()));
        Ok(LogSink {
            ctl: tx,
            pending_start,
            started: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Log groups whose name starts with `prefix`, sorted.
    pub fn groups(&self, account: &str, prefix: &str) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = fs::read_dir(self.account_dir(account))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let created = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.created().or_else(|_| m.modified()).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                (decode(&e.file_name().to_string_lossy()), created)
            })
            .filter(|(g, _)| g.starts_with(prefix))
            .collect();
        out.sort();
        out
    }

    /// Whether a group exists (it does once one of its streams has been started).
    pub fn group_exists(&self, account: &str, group: &str) -> bool {
        self.group_dir(account, group).is_dir()
    }

    /// Names of a group's streams, sorted, or `None` if the group does not exist.
    pub fn stream_names(&self, account: &str, group: &str) -> Option<Vec<String>> {
        let entries = fs::read_dir(self.group_dir(account, group)).ok()?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| decode(&e.file_name().to_string_lossy()))
            .collect();
        names.sort();
        Some(names)
    }

    /// Streams of a group with their first and last event times, or `None` if the group
    /// does not exist. Reads each file's first line and its tail, never the whole file.
    pub fn streams(&self, account: &str, group: &str) -> Option<Vec<StreamInfo>> {
        let names = self.stream_names(account, group)?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(file) = self.open_stream(account, group, &name) else {
                continue;
            };
            // A stream that cannot be read is listed without times, not dropped.
            let first = read::first_timestamp(&file).ok().flatten();
            let last = read::last_timestamp(&file).ok().flatten();
            out.push(StreamInfo {
                first_event: first,
                last_event: last,
                stored_bytes: file.metadata().map(|m| m.len()).unwrap_or(0),
                created: first.unwrap_or(0),
                name,
            });
        }
        Some(out)
    }

    fn open_stream(&self, account: &str, group: &str, stream: &str) -> Option<File> {
        let file = File::open(self.stream_path(account, group, stream)).ok()?;
        // A name like `..` must not open a directory.
        file.metadata().is_ok_and(|m| m.is_file()).then_some(file)
    }

    /// A page of one stream read forward from `from` (an offset a previous page returned)
    /// or from the start of `range`; an empty page if the stream does not exist.
    pub fn page_forward(
        &self,
        account: &str,
        group: &str,
        stream: &str,
        from: Option<u64>,
        range: TimeRange,
        limit: usize,
    ) -> io::Result<StreamPage> {
        match self.open_stream(account, group, stream) {
            Some(file) => read::page_forward(&file, from, range, limit),
            None => Ok(StreamPage::default()),
        }
    }

    /// A page of one stream read backward from `before` (an offset a previous page
    /// returned) or from the end of `range`: by default the newest events.
    pub fn page_backward(
        &self,
        account: &str,
        group: &str,
        stream: &str,
        before: Option<u64>,
        range: TimeRange,
        limit: usize,
    ) -> io::Result<StreamPage> {
        match self.open_stream(account, group, stream) {
            Some(file) => read::page_backward(&file, before, range, limit),
            None => Ok(StreamPage::default()),
        }
    }

    /// A page of the group's streams that `wanted` accepts, merged in time order, and the
    /// names of those streams; `None` if the group does not exist.
    pub fn read_group(
        &self,
        account: &str,
        group: &str,
        wanted: &dyn Fn(&str) -> bool,
        q: &GroupQuery,
    ) -> io::Result<Option<(Vec<String>, GroupPage)>> {
        let Some(names) = self.stream_names(account, group) else {
            return Ok(None);
        };
        let streams: Vec<(String, File)> = names
            .into_iter()
            .filter(|n| wanted(n))
            .filter_map(|n| self.open_stream(account, group, &n).map(|f| (n, f)))
            .collect();
        let searched = streams.iter().map(|(n, _)| n.clone()).collect();
        Ok(Some((searched, group::read_group(streams, q)?)))
    }
}

/// The invoker's handle on an environment's log stream.
#[derive(Clone)]
pub struct LogSink {
    ctl: mpsc::UnboundedSender<Ctl>,
    /// The START line of the invocation that began and has not been written yet, with its
    /// time. Handing it over here wakes nobody: the writer takes it before anything else it
    /// writes (the function's output, END, REPORT), so a short invocation's START, END and
    /// REPORT reach the file in one write, and a long one's START is written when the
    /// invoker asks ([`LogSink::flush_start`]).
    pending_start: PendingStart,
    /// Invocations started on this stream: numbers each START and its Finish, so a START
    /// handed over before the previous invocation's END was written waits its turn.
    started: Arc<AtomicU64>,
}

/// (invocation number, time, START line).
type PendingStart = Arc<std::sync::Mutex<Option<(u64, u64, String)>>>;

enum Ctl {
    /// Write the pending START now (the invocation is taking a while).
    FlushStart,
    /// Platform lines that close it (timeout line, END, REPORT); the invocation's whole log
    /// text is sent back when asked for.
    Finish {
        /// Which invocation (its number from [`LogSink::start`]).
        seq: u64,
        lines: Vec<String>,
        report: Option<Report>,
        text: Option<oneshot::Sender<String>>,
    },
    /// A platform line outside any invocation (e.g. an init report).
    Line(String),
}

impl LogSink {
    /// Opens an invocation with its START line (written before anything else of it).
    pub fn start(&self, line: String) {
        let seq = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        if let Ok(mut slot) = self.pending_start.lock() {
            *slot = Some((seq, now_ms(), line));
        }
    }

    /// Writes the pending START now: a reader (`logs --follow`) must see a long invocation
    /// start, not only end.
    pub fn flush_start(&self) {
        let _ = self.ctl.send(Ctl::FlushStart);
    }

    pub fn line(&self, line: String) {
        let _ = self.ctl.send(Ctl::Line(line));
    }

    /// Closes the invocation with `lines` and then its REPORT; if `want_text`, returns its
    /// whole log (START … REPORT).
    pub async fn finish(
        &self,
        lines: Vec<String>,
        report: Option<Report>,
        want_text: bool,
    ) -> Option<String> {
        let seq = self.started.load(Ordering::Acquire);
        if want_text {
            let (tx, rx) = oneshot::channel();
            let _ = self.ctl.send(Ctl::Finish {
                seq,
                lines,
                report,
                text: Some(tx),
            });
            rx.await.ok()
        } else {
            let _ = self.ctl.send(Ctl::Finish {
                seq,
                lines,
                report,
                text: None,
            });
            None
        }
    }
}

struct StreamWriter {
    file: File,
    /// The newest timestamp written: readers binary-search on time, so a stream's timestamps
    /// must never decrease, even when the wall clock steps back.
    last_ts: u64,
    batch: Vec<u8>,
    partial: Vec<u8>,
    invocation: Option<String>,
}

impl StreamWriter {
    fn emit(&mut self, ts: u64, msg: &[u8]) {
        let ts = ts.max(self.last_ts);
        self.last_ts = ts;
        let msg = msg.strip_suffix(b"\r").unwrap_or(msg);
        self.batch.extend_from_slice(ts.to_string().as_bytes());
        self.batch.push(b'\t');
        self.batch.extend_from_slice(msg);
        self.batch.push(b'\n');
        if let Some(text) = &mut self.invocation {
            text.push_str(&String::from_utf8_lossy(msg));
            text.push('\n');
            // Only the tail is ever returned: a chatty function must not grow this unbounded.
            if text.len() > 4 * TEXT_KEEP {
                let cut = tail(text, TEXT_KEEP).len();
                text.drain(..text.len() - cut);
            }
        }
    }

    fn take_output(&mut self, data: &[u8]) {
        let ts = now_ms();
        self.partial.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = self.partial[start..start + pos].to_vec();
            self.emit(ts, &line);
            start += pos + 1;
        }
        self.partial.drain(..start);
        while self.partial.len() >= MAX_LINE {
            let line: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            self.emit(ts, &line);
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit(now_ms(), &line);
        }
    }

    fn write(&mut self) {
        if !self.batch.is_empty() {
            // A full disk loses log lines, never the server or the invocation.
            if let Err(e) = self.file.write_all(&self.batch) {
                tracing::warn!("could not write a log stream: {e}");
            }
            self.batch.clear();
        }
    }
}

impl StreamWriter {
    /// Emits the pending START of invocation `seq`, if it is pending: it goes before every
    /// other line of its invocation.
    fn open_pending(&mut self, pending: &PendingStart, seq: u64) {
        let Some((_, ts, line)) = pending
            .lock()
            .ok()
            .and_then(|mut p| p.take_if(|(n, _, _)| *n == seq))
        else {
            return;
        };
        // The first invocation's text keeps what init printed before it.
        if self.invocation.is_none() {
            self.invocation = Some(String::new());
        }
        self.emit(ts, line.as_bytes());
    }
}

async fn run_stream(
    pipe: tokio::net::unix::pipe::Receiver,
    file: File,
    last_ts: u64,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    pending: PendingStart,
) {
    let mut w = StreamWriter {
        file,
        last_ts,
        batch: Vec::with_capacity(4096),
        partial: Vec::new(),
        // Init output belongs to the first invocation's log tail, as on Lambda.
        invocation: Some(String::new()),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut eof = false;
    // Peak memory of the environment so far: kept for when its process is already gone.
    let mut max_memory: u64 = 0;
    // The last invocation whose END was written: the next one's START may go out.
    let mut finished: u64 = 0;
    loop {
        tokio::select! {
            biased;
            msg = ctl.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    Ctl::FlushStart => w.open_pending(&pending, finished + 1),
                    Ctl::Line(line) => {
                        w.open_pending(&pending, finished + 1);
                        w.emit(now_ms(), line.as_bytes());
                    }
                    Ctl::Finish { seq, lines, report, text } => {
                        w.open_pending(&pending, seq);
                        finished = seq;
                        // What the function wrote before it answered is already in the pipe.
                        if !eof {
                            eof = drain_now(&pipe, &mut buf, &mut w);
                        }
                        w.flush_partial();
                        let ts = now_ms();
                        for l in &lines {
                            w.emit(ts, l.as_bytes());
                        }
                        // The invocation's output is taken: the rest (the peak memory read,
                        // REPORT, the file write) can wait until the caller's answer is
                        // written, unless the caller waits for the log text itself. Nothing
                        // of this stream is read or written meanwhile: this task owns both.
                        if text.is_none() && report.is_some() {
                            tokio::task::yield_now().await;
                        }
                        if let Some(r) = report {
                            // Read for every REPORT: each one must show what its invocation
                            // used (sampling showed a stale peak after a quick allocation).
                            // It is read here, after the caller has its answer.
                            if let Some(m) = r.process.max_memory_bytes() {
                                max_memory = max_memory.max(m);
                            }
                            let line = report_line(
                                &r.request_id,
                                r.duration,
                                r.memory_mb,
                                max_memory,
                                r.init,
                                r.status.as_deref(),
                            );
                            w.emit(ts, line.as_bytes());
                        }
                        let inv = w.invocation.take().unwrap_or_default();
                        if let Some(text) = text {
                            let _ = text.send(inv);
                        }
                    }
                }
                w.write();
            }
            ready = pipe.readable(), if !eof => {
                if ready.is_err() {
                    eof = true;
                } else {
                    // The function's output follows its invocation's START.
                    w.open_pending(&pending, finished + 1);
                    eof = drain(&pipe, &mut buf, &mut w);
                    w.write();
                }
            }
        }
    }
    w.open_pending(&pending, finished + 1);
    if !eof {
        drain_now(&pipe, &mut buf, &mut w);
    }
    w.flush_partial();
    w.write();
}

/// Reads everything available now; true at end of file.
fn drain(pipe: &tokio::net::unix::pipe::Receiver, buf: &mut [u8], w: &mut StreamWriter) -> bool {
    loop {
        match pipe.try_read(buf) {
            Ok(0) => return true,
            Ok(n) => w.take_output(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Reads everything in the pipe now, with real `read` calls: tokio's `try_read` answers
/// from cached readiness and would miss bytes the reactor has not been told about yet — the
/// very bytes a function printed just before it answered. True at end of file.
fn drain_now(
    pipe: &tokio::net::unix::pipe::Receiver,
    buf: &mut [u8],
    w: &mut StreamWriter,
) -> bool {
    use std::os::fd::AsFd;
    loop {
        // The fd is non-blocking (tokio set O_NONBLOCK when it registered it).
        match rustix::io::read(pipe.as_fd(), &mut *buf) {
            Ok(0) => return true,
            Ok(n) => w.take_output(&buf[..n]),
            Err(rustix::io::Errno::AGAIN) => return false,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return true,
        }
    }
}

/// Returns the last `max` bytes of `text`, cut at a character boundary.
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a";
    const G: &str = "/aws/lambda/f";

    fn new_store() -> (tempfile::TempDir, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path().to_path_buf()).unwrap();
        (dir, store)
    }

    /// Appends raw bytes to a stream file, as the writer would.
    fn append(store: &LogStore, stream: &str, bytes: &[u8]) {
        fs::create_dir_all(store.group_dir(A, G)).unwrap();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(store.stream_path(A, G, stream))
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    fn lines(events: impl IntoIterator<Item = (u64, String)>) -> Vec<u8> {
        let mut out = Vec::new();
        for (ts, msg) in events {
            out.extend_from_slice(format!("{ts}\t{msg}\n").as_bytes());
        }
        out
    }

    /// `n` events, several per millisecond, from 1000 on.
    fn numbered(n: usize) -> Vec<(u64, String)> {
        (0..n)
            .map(|i| (1000 + i as u64 / 7, format!("event {i}")))
            .collect()
    }

    /// Every event of a stream, read forward page by page with the returned offsets; stops
    /// when the position repeats, as a GetLogEvents client does.
    fn all_forward(store: &LogStore, stream: &str, range: TimeRange, limit: usize) -> Vec<Located> {
        let mut out = Vec::new();
        let mut from = None;
        loop {
            let page = store
                .page_forward(A, G, stream, from, range, limit)
                .unwrap();
            assert!(page.events.len() <= limit);
            out.extend(page.events);
            if from == Some(page.forward) {
                return out;
            }
            from = Some(page.forward);
        }
    }

    fn messages(events: &[Located]) -> Vec<String> {
        events.iter().map(|e| e.event.message.clone()).collect()
    }

    fn group_pages(store: &LogStore, q: GroupQuery) -> (Vec<(String, String)>, usize) {
        let mut out = Vec::new();
        let mut pages = 0;
        let mut from: Option<GroupPosition> = None;
        loop {
            let q = GroupQuery {
                from: from.as_ref(),
                ..q
            };
            let (_, page) = store.read_group(A, G, &|_| true, &q).unwrap().unwrap();
            pages += 1;
            assert!(page.events.len() <= q.limit);
            out.extend(page.events.into_iter().map(|(s, e)| (s, e.event.message)));
            match page.next {
                Some(next) => {
                    assert!(from.as_ref().is_none_or(|f| next > *f), "no progress");
                    from = Some(next);
                }
                None => return (out, pages),
            }
        }
    }

    #[test]
    fn pages_return_every_event_once_in_order() {
        let (_dir, store) = new_store();
        let all = numbered(5_000);
        append(&store, "s", &lines(all.clone()));
        let want: Vec<String> = all.iter().map(|(_, m)| m.clone()).collect();

        let forward = all_forward(&store, "s", TimeRange::default(), 37);
        assert_eq!(messages(&forward), want);

        // Backward from the end, following each page's backward offset.
        let mut got = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .page_backward(A, G, "s", before, TimeRange::default(), 37)
                .unwrap();
            let mut msgs = messages(&page.events);
            msgs.extend(got);
            got = msgs;
            if before == Some(page.backward) {
                break;
            }
            before = Some(page.backward);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn group_pages_merge_streams_in_time_order_once() {
        let (_dir, store) = new_store();
        // Three streams with interleaved and equal timestamps.
        let mut want = Vec::new();
        for (k, name) in ["a", "b", "c"].iter().enumerate() {
            let events: Vec<(u64, String)> = (0..700)
                .map(|i| (1000 + (i * (k as u64 + 1)) / 5, format!("{name} {i}")))
                .collect();
            append(&store, name, &lines(events.clone()));
            for (i, (ts, m)) in events.into_iter().enumerate() {
                want.push((ts, name.to_string(), i, m));
            }
        }
        want.sort();
        let want: Vec<(String, String)> = want.into_iter().map(|(_, s, _, m)| (s, m)).collect();
        let all = |_: &str| true;
        let q = GroupQuery {
            range: TimeRange::default(),
            from: None,
            limit: 13,
            matches: &all,
        };
        let (got, pages) = group_pages(&store, q);
        assert_eq!(got, want);
        assert_eq!(pages, want.len().div_ceil(13));

        // A pattern applies while streaming: only matching events, still each once.
        let sevens = |m: &str| m.ends_with('7');
        let q = GroupQuery {
            matches: &sevens,
            limit: 5,
            ..q
        };
        let (got, _) = group_pages(&store, q);
        let want: Vec<_> = want.into_iter().filter(|(_, m)| m.ends_with('7')).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_start_time_in_the_middle_is_found_by_binary_search() {
        let (_dir, store) = new_store();
        // Gaps and runs of equal timestamps: 10 events at each even millisecond.
        let all: Vec<(u64, String)> = (0..40_000u64)
            .map(|i| {
                (
                    2 * (i / 10),
                    format!("e{i:06} {}", "x".repeat((i % 50) as usize)),
                )
            })
            .collect();
        append(&store, "s", &lines(all.clone()));
        let file = store.open_stream(A, G, "s").unwrap();
        for start in [0, 1, 2, 3, 777, 4000, 4001, 7998, 7999, 8000, 100_000] {
            let first = all.iter().position(|(ts, _)| *ts >= start);
            let want_offset: usize = all[..first.unwrap_or(all.len())]
                .iter()
                .map(|(ts, m)| ts.to_string().len() + m.len() + 2)
                .sum();
            assert_eq!(
                read::seek_time(&file, start).unwrap(),
                want_offset as u64,
                "start {start}"
            );
            let range = TimeRange {
                start: Some(start),
                end: Some(start + 5),
            };
            let page = store.page_forward(A, G, "s", None, range, 3).unwrap();
            let want: Vec<String> = all
                .iter()
                .filter(|(ts, _)| *ts >= start && *ts < start + 5)
                .take(3)
                .map(|(_, m)| m.clone())
                .collect();
            assert_eq!(messages(&page.events), want, "start {start}");
            // The whole range, across pages, and nothing past its end.
            let got = all_forward(&store, "s", range, 4);
            assert!(
                got.iter()
                    .all(|e| e.event.timestamp >= start && e.event.timestamp < start + 5)
            );
            assert_eq!(
                got.len(),
                all.iter()
                    .filter(|(ts, _)| *ts >= start && *ts < start + 5)
                    .count()
            );
        }
    }

    #[test]
    fn without_a_token_the_last_page_is_read_backwards() {
        let (_dir, store) = new_store();
        let all = numbered(1_000);
        append(&store, "s", &lines(all.clone()));
        let page = store
            .page_backward(A, G, "s", None, TimeRange::default(), 5)
            .unwrap();
        assert_eq!(
            messages(&page.events),
            [
                "event 995",
                "event 996",
                "event 997",
                "event 998",
                "event 999"
            ]
        );
        // The forward position is the end: a forward read from it is empty and repeats it.
        let next = store
            .page_forward(A, G, "s", Some(page.forward), TimeRange::default(), 5)
            .unwrap();
        assert!(next.events.is_empty());
        assert_eq!(next.forward, page.forward);
        // With an end time: the newest events before it, and none before the start.
        let range = TimeRange {
            start: Some(1100),
            end: Some(1101),
        };
        let page = store.page_backward(A, G, "s", None, range, 100).unwrap();
        let want: Vec<String> = (700..707).map(|i| format!("event {i}")).collect();
        assert_eq!(messages(&page.events), want);
    }

    #[test]
    fn huge_lines_are_read_whole_up_to_the_line_limit() {
        let (_dir, store) = new_store();
        let longest = "L".repeat(MAX_LINE);
        let damaged = "D".repeat(3 * 1024 * 1024);
        append(
            &store,
            "s",
            &lines([
                (1, "before".to_string()),
                (2, longest.clone()),
                (3, damaged),
                (4, "after".to_string()),
            ]),
        );
        let events = all_forward(&store, "s", TimeRange::default(), 1);
        let lens: Vec<usize> = events.iter().map(|e| e.event.message.len()).collect();
        // A line longer than Nimbus ever writes is cut, and the next line is still found.
        assert_eq!(lens, [6, MAX_LINE, read::MAX_LINE_BYTES - 2, 5]);
        assert_eq!(events[1].event.message, longest);
        let back = store
            .page_backward(A, G, "s", None, TimeRange::default(), 10)
            .unwrap();
        assert_eq!(back.events, events);
    }

    #[test]
    fn a_partly_written_last_line_is_not_an_event_yet() {
        let (_dir, store) = new_store();
        append(&store, "s", b"1\tone\n2\ttwo\n3\tthr");
        let page = store
            .page_forward(A, G, "s", None, TimeRange::default(), 10)
            .unwrap();
        assert_eq!(messages(&page.events), ["one", "two"]);
        assert_eq!(page.forward, 12, "resumes at the start of the torn line");
        let back = store
            .page_backward(A, G, "s", None, TimeRange::default(), 10)
            .unwrap();
        assert_eq!(back.events, page.events);
        let info = &store.streams(A, G).unwrap()[0];
        assert_eq!((info.first_event, info.last_event), (Some(1), Some(2)));

        append(&store, "s", b"ee\n");
        let next = store
            .page_forward(A, G, "s", Some(page.forward), TimeRange::default(), 10)
            .unwrap();
        assert_eq!(messages(&next.events), ["three"]);
        // An offset inside a line (a forged token) moves on to the next line start.
        let mid = store
            .page_forward(A, G, "s", Some(7), TimeRange::default(), 10)
            .unwrap();
        assert_eq!(messages(&mid.events), ["three"]);
    }

    #[test]
    fn an_empty_stream_reads_as_empty() {
        let (_dir, store) = new_store();
        append(&store, "s", b"");
        for page in [
            store.page_forward(A, G, "s", None, TimeRange::default(), 10),
            store.page_backward(A, G, "s", None, TimeRange::default(), 10),
            store.page_forward(A, G, "s", Some(99), TimeRange::default(), 10),
        ] {
            let page = page.unwrap();
            assert!(page.events.is_empty());
            assert_eq!((page.forward, page.backward), (0, 0));
        }
        let info = &store.streams(A, G).unwrap()[0];
        assert_eq!(
            (info.first_event, info.last_event, info.stored_bytes),
            (None, None, 0)
        );
        let missing = store
            .page_forward(A, G, "nope", None, TimeRange::default(), 10)
            .unwrap();
        assert!(missing.events.is_empty());
    }

    #[test]
    fn reads_of_a_large_stream_hold_only_the_page() {
        let (_dir, store) = new_store();
        // ~50 MB: 500,000 events of 100 bytes.
        let n = 500_000u64;
        let mut data = Vec::with_capacity(50 * 1024 * 1024);
        for i in 0..n {
            data.extend_from_slice(format!("{}\t{:<91}\n", 1_000_000 + i, i).as_bytes());
        }
        let line = (data.len() as u64) / n;
        assert_eq!(line, 100);
        append(&store, "s", &data);
        drop(data);

        // Each page covers exactly the bytes of its events: the read stopped there.
        let head = store
            .page_forward(A, G, "s", None, TimeRange::default(), 10)
            .unwrap();
        assert_eq!(head.events.len(), 10);
        assert_eq!((head.backward, head.forward), (0, 10 * line));

        let range = TimeRange {
            start: Some(1_000_000 + n / 2),
            end: None,
        };
        let mid = store.page_forward(A, G, "s", None, range, 10).unwrap();
        assert_eq!(mid.events[0].offset, n / 2 * line);
        assert_eq!(mid.forward - mid.backward, 10 * line);

        let tail = store
            .page_backward(A, G, "s", None, TimeRange::default(), 10)
            .unwrap();
        assert_eq!(tail.events.len(), 10);
        assert_eq!(tail.backward, (n - 10) * line);
        assert_eq!(tail.events[9].event.timestamp, 1_000_000 + n - 1);

        // The listing reads the two ends only.
        let info = &store.streams(A, G).unwrap()[0];
        assert_eq!(info.first_event, Some(1_000_000));
        assert_eq!(info.last_event, Some(1_000_000 + n - 1));
        assert_eq!(info.stored_bytes, n * line);

        // A pattern that matches nothing stops at the scan budget and says where to resume.
        let none = |_: &str| false;
        let q = GroupQuery {
            range: TimeRange::default(),
            from: None,
            limit: 10,
            matches: &none,
        };
        let (_, page) = store.read_group(A, G, &|_| true, &q).unwrap().unwrap();
        assert!(page.events.is_empty());
        let next = page.next.unwrap();
        assert_eq!(next.offset, group::SCAN_BYTES.div_ceil(line) * line);
        // A group page of 10 from the middle, resumed from that token.
        let all = |_: &str| true;
        let q = GroupQuery {
            matches: &all,
            from: Some(&next),
            ..q
        };
        let (_, page) = store.read_group(A, G, &|_| true, &q).unwrap().unwrap();
        assert_eq!(page.events.len(), 10);
        assert_eq!(page.events[0].1.offset, next.offset);
        assert_eq!(page.next.unwrap().offset, next.offset + 10 * line);
    }

    #[test]
    fn the_writer_never_lets_time_go_backwards() {
        let (_dir, store) = new_store();
        append(&store, "s", b"");
        let file = OpenOptions::new()
            .append(true)
            .open(store.stream_path(A, G, "s"))
            .unwrap();
        let mut w = StreamWriter {
            file,
            last_ts: 50,
            batch: Vec::new(),
            partial: Vec::new(),
            invocation: None,
        };
        for ts in [40, 100, 90, 120] {
            w.emit(ts, b"m");
        }
        w.write();
        let stamps: Vec<u64> = all_forward(&store, "s", TimeRange::default(), 10)
            .iter()
            .map(|e| e.event.timestamp)
            .collect();
        assert_eq!(stamps, [50, 100, 100, 120]);
    }

    #[tokio::test]
    async fn orders_platform_lines_around_function_output() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path().to_path_buf()).unwrap();
        let (reader, mut writer) = std::io::pipe().unwrap();
        let sink = store
            .start_stream(
                "a",
                "/aws/lambda/f",
                "2026/01/01/[$LATEST]abc",
                reader.into(),
            )
            .unwrap();
        sink.start("START RequestId: r1 Version: $LATEST".into());
        writer.write_all(b"hello\nworld").unwrap();
        let text = sink
            .finish(vec!["END RequestId: r1".into()], None, true)
            .await
            .unwrap();
        assert_eq!(
            text,
            "START RequestId: r1 Version: $LATEST\nhello\nworld\nEND RequestId: r1\n"
        );
        let events = all_forward(&store, "2026/01/01/[$LATEST]abc", TimeRange::default(), 3);
        let msgs: Vec<_> = events.iter().map(|e| e.event.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "START RequestId: r1 Version: $LATEST",
                "hello",
                "world",
                "END RequestId: r1"
            ]
        );
        assert_eq!(store.groups("a", "/aws/lambda/")[0].0, "/aws/lambda/f");
        let streams = store.streams("a", "/aws/lambda/f").unwrap();
        assert_eq!(streams[0].name, "2026/01/01/[$LATEST]abc");
    }

    #[test]
    fn report_line_matches_lambda_format() {
        let line = report_line(
            "r1",
            Duration::from_micros(4_157_160),
            256,
            99 * 1024 * 1024,
            Some(Duration::from_micros(841_600)),
            None,
        );
        assert_eq!(
            line,
            "REPORT RequestId: r1\tDuration: 4157.16 ms\tBilled Duration: 4158 ms\tMemory Size: 256 MB\tMax Memory Used: 99 MB\tInit Duration: 841.60 ms\t"
        );
    }

    #[test]
    fn billed_duration_is_at_least_one_millisecond() {
        let line = report_line("r", Duration::from_micros(120), 128, 0, None, None);
        assert!(
            line.contains("Duration: 0.12 ms\tBilled Duration: 1 ms"),
            "{line}"
        );
    }

    #[test]
    fn billing_uses_the_exact_duration_not_the_printed_one() {
        let line = report_line("r", Duration::from_micros(1_003), 128, 0, None, None);
        assert!(
            line.contains("Duration: 1.00 ms\tBilled Duration: 2 ms"),
            "{line}"
        );
    }

    #[test]
    fn tail_cuts_at_a_character_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("é", 1), "");
        assert_eq!(tail("ab", 10), "ab");
    }
}
