//! Function logs: one durable file per log stream under `DATA/logs/<account>/<group>/<stream>`, one
//! stream per execution environment, as in CloudWatch Logs.
//!
//! Each environment's stdout and stderr arrive on one pipe. A task per environment (the
//! stream's only writer) reads it line by line and interleaves the platform's own lines
//! (START / END / REPORT) in the right order: the invoker tells it when an invocation starts
//! and ends, and at the end it first drains whatever the function wrote before it answered.
//! Files are written with one `write` per batch, so a crash of the server loses nothing that a
//! reader could already have seen.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use tokio::sync::{mpsc, oneshot};

use crate::model::time::now_ms;
use crate::sandbox::EnvProcess;

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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stream_path(account, group, stream))?;
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(output)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let pending_start = Arc::new(std::sync::Mutex::new(None));
        tokio::spawn(run_stream(pipe, file, rx, pending_start.clone()));
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

    /// Streams of a group, or `None` if the group does not exist.
    pub fn streams(&self, account: &str, group: &str) -> Option<Vec<StreamInfo>> {
        let dir = self.group_dir(account, group);
        let entries = fs::read_dir(&dir).ok()?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = decode(&e.file_name().to_string_lossy());
            let meta = e.metadata().ok();
            let events = self.read_stream(account, group, &name);
            out.push(StreamInfo {
                first_event: events.first().map(|e| e.timestamp),
                last_event: events.last().map(|e| e.timestamp),
                stored_bytes: meta.as_ref().map(|m| m.len()).unwrap_or(0),
                created: events.first().map(|e| e.timestamp).unwrap_or(0),
                name,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Some(out)
    }

    /// Every event of a stream, oldest first.
    pub fn read_stream(&self, account: &str, group: &str, stream: &str) -> Vec<LogEvent> {
        let Ok(f) = File::open(self.stream_path(account, group, stream)) else {
            return Vec::new();
        };
        io::BufReader::new(f)
            .split(b'\n')
            .map_while(Result::ok)
            .filter_map(|line| parse_line(&line))
            .collect()
    }
}

fn parse_line(line: &[u8]) -> Option<LogEvent> {
    let tab = line.iter().position(|&b| b == b'\t')?;
    let timestamp = std::str::from_utf8(&line[..tab]).ok()?.parse().ok()?;
    Some(LogEvent {
        timestamp,
        message: String::from_utf8_lossy(&line[tab + 1..]).into_owned(),
    })
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
    batch: Vec<u8>,
    partial: Vec<u8>,
    invocation: Option<String>,
}

impl StreamWriter {
    fn emit(&mut self, ts: u64, msg: &[u8]) {
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
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    pending: PendingStart,
) {
    let mut w = StreamWriter {
        file,
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
        let events = store.read_stream("a", "/aws/lambda/f", "2026/01/01/[$LATEST]abc");
        let msgs: Vec<_> = events.iter().map(|e| e.message.as_str()).collect();
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
    fn tail_cuts_at_a_character_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("é", 1), "");
        assert_eq!(tail("ab", 10), "ab");
    }
}
