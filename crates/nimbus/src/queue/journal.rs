//! The queue's durable state in its own SQLite database, `DATA/queue.db` (WAL,
//! `synchronous=FULL`): pending events, event invoke configs, and the messages of the
//! built-in queues.
//!
//! All writes go through one writer thread that commits in groups: it takes every write
//! waiting in its channel, runs each in its own savepoint inside one transaction, commits
//! (one fsync), and only then answers each writer. So a caller that got `Ok` knows its
//! change is on disk, and concurrent enqueues share the cost of an fsync. Reads use a
//! second connection (WAL lets it read while the writer commits).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::destination::{MessageAttribute, Response};
use super::invoke_config::EventInvokeConfig;
use super::{FunctionKey, NewEvent, QueueError};

/// Writes taken into one transaction at most: bounds the latency one commit adds.
const MAX_GROUP: usize = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    account TEXT NOT NULL,
    function TEXT NOT NULL,
    qualifier TEXT,
    payload BLOB NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_version TEXT,
    last_error INTEGER,
    last_payload BLOB
);
CREATE TABLE IF NOT EXISTS invoke_configs (
    account TEXT NOT NULL,
    function TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (account, function, qualifier)
);
CREATE TABLE IF NOT EXISTS queues (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    visible_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    first_receive_ms INTEGER,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (account, queue, visible_ms);
CREATE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt);
";

/// Called with the commit's outcome once the group is committed (or not).
type Finish = Box<dyn FnOnce(Result<(), QueueError>) + Send>;
/// One write: runs inside the group's transaction, says whether it succeeded, and hands
/// back what to do once the commit is known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

pub(super) struct Journal {
    jobs: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
}

/// An event as stored, without its payload.
pub(super) struct StoredEvent {
    pub id: i64,
    pub key: FunctionKey,
    pub qualifier: Option<String>,
    pub request_id: String,
    pub enqueued_ms: u64,
    pub due_ms: u64,
    pub attempts: u32,
}

/// What a restart finds on disk.
pub(super) struct Stored {
    pub events: Vec<StoredEvent>,
    /// (function, qualifier, config)
    pub configs: Vec<(FunctionKey, String, EventInvokeConfig)>,
}

/// What the dispatcher needs besides the metadata it keeps in memory.
pub(super) struct EventBody {
    pub payload: Bytes,
    pub last: Option<Response>,
}

/// A message to put on a built-in queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub account: String,
    pub queue: String,
    pub body: String,
    pub attributes: BTreeMap<String, MessageAttribute>,
}

/// A message handed out by ReceiveMessage.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub attributes: BTreeMap<String, MessageAttribute>,
    pub sent_ms: u64,
    pub receive_count: u32,
    pub first_receive_ms: u64,
}

fn open_connection(path: &Path) -> Result<Connection, QueueError> {
    let db = Connection::open(path)?;
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
    )?;
    Ok(db)
}

impl Journal {
    /// Opens (creating if needed) `path` and starts the writer thread. Returns what is
    /// stored: every pending event (metadata only) and every event invoke config.
    pub(super) fn open(path: &Path) -> Result<(Journal, Stored), QueueError> {
        let writer = open_connection(path)?;
        writer.execute_batch(SCHEMA)?;
        let reader = open_connection(path)?;
        let events = load_events(&reader)?;
        let configs = load_configs(&reader)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("nimbus-queue-writer".into())
            .spawn(move || write_loop(writer, rx))
            .map_err(QueueError::Spawn)?;
        Ok((
            Journal {
                jobs,
                reader: Arc::new(Mutex::new(reader)),
            },
            Stored { events, configs },
        ))
    }

    /// Runs `f` in the next group transaction; resolves once that transaction is durably
    /// committed. A failing `f` is rolled back alone (its savepoint); the others commit.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let out = f(conn);
            let ok = out.is_ok();
            let finish: Finish = Box::new(move |commit| {
                let _ = tx.send(commit.and(out));
            });
            (ok, finish)
        });
        self.jobs.send(job).map_err(|_| QueueError::WriterGone)?;
        // Under the tests' paused clock, tokio advances time whenever every task waits — also
        // while the disk works for us; waiting in a blocking task marks it as work.
        #[cfg(test)]
        let rx = async move {
            tokio::task::spawn_blocking(move || rx.blocking_recv())
                .await
                .map_err(|_| QueueError::WriterGone)?
                .map_err(|_| QueueError::WriterGone)
        };
        rx.await.map_err(|_| QueueError::WriterGone)?
    }

    /// Runs `f` on the read connection, off the async threads.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| QueueError::Poisoned)?;
            f(&conn)
        })
        .await
        .map_err(|e| QueueError::Task(e.to_string()))?
    }
}

fn write_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // A write that cannot run (no transaction, no savepoint) is dropped: its caller's
        // channel closes and it gets `WriterGone`, never a false `Ok`.
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!("queue database: cannot begin a transaction: {e}");
            continue;
        }
        let mut finishes = Vec::with_capacity(group.len());
        for job in group {
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                tracing::error!("queue database: cannot open a savepoint: {e}");
                continue;
            }
            let (ok, finish) = job(&conn);
            let end = if ok {
                conn.execute_batch("RELEASE job")
            } else {
                conn.execute_batch("ROLLBACK TO job; RELEASE job")
            };
            if let Err(e) = end {
                tracing::error!("queue database: savepoint: {e}");
            }
            finishes.push(finish);
        }
        let committed = conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            QueueError::Commit(e.to_string())
        });
        for finish in finishes {
            finish(match &committed {
                Ok(()) => Ok(()),
                Err(e) => Err(QueueError::Commit(e.to_string())),
            });
        }
    }
}

fn ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn db_ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn load_events(conn: &Connection) -> Result<Vec<StoredEvent>, QueueError> {
    let mut stmt = conn.prepare(
        "SELECT id, account, function, qualifier, request_id, enqueued_ms, due_ms, attempts FROM events ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredEvent {
            id: r.get(0)?,
            key: FunctionKey {
                account: r.get(1)?,
                name: r.get(2)?,
            },
            qualifier: r.get(3)?,
            request_id: r.get(4)?,
            enqueued_ms: ms(r.get(5)?),
            due_ms: ms(r.get(6)?),
            attempts: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn load_configs(
    conn: &Connection,
) -> Result<Vec<(FunctionKey, String, EventInvokeConfig)>, QueueError> {
    let mut stmt =
        conn.prepare("SELECT account, function, qualifier, config FROM invoke_configs")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (account, name, qualifier, json) = row?;
        match serde_json::from_str(&json) {
            Ok(cfg) => out.push((FunctionKey { account, name }, qualifier, cfg)),
            // One bad row must not keep the server from starting; the default policy applies.
            Err(e) => {
                tracing::error!(%account, function = %name, "unreadable event invoke config: {e}")
            }
        }
    }
    Ok(out)
}

pub(super) fn insert_event(
    conn: &Connection,
    e: &NewEvent,
    now_ms: u64,
) -> Result<i64, QueueError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO events (request_id, account, function, qualifier, payload, enqueued_ms, due_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?;
    stmt.execute(params![
        e.request_id,
        e.account,
        e.function,
        e.qualifier,
        e.payload.as_ref(),
        db_ms(now_ms)
    ])?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn delete_event(conn: &Connection, id: i64) -> Result<(), QueueError> {
    conn.prepare_cached("DELETE FROM events WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Records a function-error attempt: the count survives restarts, so retries are exact.
pub(super) fn record_attempt(
    conn: &Connection,
    id: i64,
    attempts: u32,
    due_ms: u64,
    last: &Response,
) -> Result<(), QueueError> {
    conn.prepare_cached(
        "UPDATE events SET attempts = ?2, due_ms = ?3, last_version = ?4, last_error = ?5, last_payload = ?6 WHERE id = ?1",
    )?
    .execute(params![
        id,
        attempts,
        db_ms(due_ms),
        last.executed_version,
        last.function_error,
        last.payload.as_ref()
    ])?;
    Ok(())
}

pub(super) fn load_body(conn: &Connection, id: i64) -> Result<Option<EventBody>, QueueError> {
    let row = conn
        .prepare_cached(
            "SELECT payload, last_version, last_error, last_payload FROM events WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<bool>>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
            ))
        })
        .optional()?;
    Ok(row.map(|(payload, version, error, last)| EventBody {
        payload: Bytes::from(payload),
        last: match (version, last) {
            (Some(executed_version), Some(p)) => Some(Response {
                executed_version,
                function_error: error.unwrap_or(true),
                payload: Bytes::from(p),
            }),
            _ => None,
        },
    }))
}

pub(super) fn put_config(
    conn: &Connection,
    key: &FunctionKey,
    qualifier: &str,
    cfg: &EventInvokeConfig,
) -> Result<(), QueueError> {
    conn.execute(
        "INSERT INTO invoke_configs (account, function, qualifier, config) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (account, function, qualifier) DO UPDATE SET config = excluded.config",
        params![
            key.account,
            key.name,
            qualifier,
            serde_json::to_string(cfg)?
        ],
    )?;
    Ok(())
}

pub(super) fn delete_configs(
    conn: &Connection,
    key: &FunctionKey,
    qualifier: Option<&str>,
) -> Result<usize, QueueError> {
    Ok(match qualifier {
        Some(q) => conn.execute(
            "DELETE FROM invoke_configs WHERE account = ?1 AND function = ?2 AND qualifier = ?3",
            params![key.account, key.name, q],
        )?,
        None => conn.execute(
            "DELETE FROM invoke_configs WHERE account = ?1 AND function = ?2",
            params![key.account, key.name],
        )?,
    })
}

pub(super) fn create_queue(
    conn: &Connection,
    account: &str,
    name: &str,
    now_ms: u64,
) -> Result<(), QueueError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO queues (account, name, created_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![account, name, db_ms(now_ms)])?;
    Ok(())
}

pub(super) fn insert_message(
    conn: &Connection,
    m: &NewMessage,
    now_ms: u64,
) -> Result<(), QueueError> {
    create_queue(conn, &m.account, &m.queue, now_ms)?;
    conn.prepare_cached(
        "INSERT INTO messages (account, queue, message_id, body, attributes, sent_ms, visible_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?
    .execute(params![
        m.account,
        m.queue,
        uuid::Uuid::new_v4().to_string(),
        m.body,
        serde_json::to_string(&m.attributes)?,
        db_ms(now_ms)
    ])?;
    Ok(())
}

/// Hands out up to `max` visible messages, hiding them for `visibility_ms`.
pub(super) fn receive(
    conn: &Connection,
    account: &str,
    queue: &str,
    max: usize,
    now_ms: u64,
    visibility_ms: u64,
) -> Result<Vec<ReceivedMessage>, QueueError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, message_id, body, attributes, sent_ms, receive_count, first_receive_ms FROM messages \
         WHERE account = ?1 AND queue = ?2 AND visible_ms <= ?3 ORDER BY id LIMIT ?4",
    )?;
    let rows = stmt
        .query_map(params![account, queue, db_ms(now_ms), max as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut update = conn.prepare_cached(
        "UPDATE messages SET receipt = ?2, visible_ms = ?3, receive_count = ?4, first_receive_ms = ?5 WHERE id = ?1",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, message_id, body, attributes, sent, count, first) in rows {
        let receipt = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let count = u32::try_from(count).unwrap_or(0).saturating_add(1);
        let first = first.map(ms).unwrap_or(now_ms);
        update.execute(params![
            id,
            receipt,
            db_ms(now_ms.saturating_add(visibility_ms)),
            count,
            db_ms(first)
        ])?;
        out.push(ReceivedMessage {
            message_id,
            receipt,
            body,
            attributes: serde_json::from_str(&attributes)?,
            sent_ms: ms(sent),
            receive_count: count,
            first_receive_ms: first,
        });
    }
    Ok(out)
}

pub(super) fn delete_message(
    conn: &Connection,
    account: &str,
    queue: &str,
    receipt: &str,
) -> Result<bool, QueueError> {
    let n = conn
        .prepare_cached("DELETE FROM messages WHERE receipt = ?3 AND account = ?1 AND queue = ?2")?
        .execute(params![account, queue, receipt])?;
    Ok(n > 0)
}

pub(super) fn purge(conn: &Connection, account: &str, queue: &str) -> Result<usize, QueueError> {
    Ok(conn.execute(
        "DELETE FROM messages WHERE account = ?1 AND queue = ?2",
        params![account, queue],
    )?)
}

/// (visible, in flight) message counts of a queue.
pub(super) fn counts(
    conn: &Connection,
    account: &str,
    queue: &str,
    now_ms: u64,
) -> Result<(u64, u64), QueueError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(visible_ms <= ?3), 0), COALESCE(SUM(visible_ms > ?3), 0) FROM messages WHERE account = ?1 AND queue = ?2",
        params![account, queue, db_ms(now_ms)],
        |r| Ok((ms(r.get(0)?), ms(r.get(1)?))),
    )?)
}

pub(super) fn list_queues(
    conn: &Connection,
    account: &str,
    prefix: &str,
) -> Result<Vec<String>, QueueError> {
    let mut stmt = conn.prepare("SELECT name FROM queues WHERE account = ?1 ORDER BY name")?;
    let names = stmt
        .query_map([account], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect())
}

pub(super) fn queue_created_ms(
    conn: &Connection,
    account: &str,
    name: &str,
) -> Result<Option<u64>, QueueError> {
    Ok(conn
        .query_row(
            "SELECT created_ms FROM queues WHERE account = ?1 AND name = ?2",
            params![account, name],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map(ms))
}
