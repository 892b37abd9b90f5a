//! Durable state: function metadata in SQLite (`DATA/nimbus.db`) and code packages as
//! content-addressed blobs ([`code`]).
//!
//! The store is the single owner of function metadata. Every mutation goes to SQLite first
//! (one transaction, `synchronous=FULL`), then to an in-memory map that the invoke path reads
//! without touching the database. Nothing else writes either.

pub mod code;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{Connection, OptionalExtension, params};

use crate::model::FunctionConfig;
use code::CodeStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Function not found: {0}")]
    NotFound(String),
    #[error("Function already exist: {0}")]
    AlreadyExists(String),
    #[error(
        "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
    )]
    RevisionMismatch,
    #[error("metadata database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("corrupt metadata record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the metadata lock was poisoned by a panic")]
    Poisoned,
}

type Functions = HashMap<String, HashMap<String, Arc<FunctionConfig>>>;

/// Function metadata and code.
pub struct Store {
    db: Mutex<Connection>,
    latest: RwLock<Functions>,
    pub code: CodeStore,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (account, name)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

impl Store {
    /// Opens (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(data_dir.join("nimbus.db"))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )?;
        db.execute_batch(SCHEMA)?;
        let mut latest: Functions = HashMap::new();
        {
            let mut stmt = db.prepare("SELECT config FROM functions")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            for row in rows {
                let cfg: FunctionConfig = serde_json::from_str(&row?)?;
                latest
                    .entry(cfg.account.clone())
                    .or_default()
                    .insert(cfg.name.clone(), Arc::new(cfg));
            }
        }
        let code = CodeStore::open(data_dir.join("code"))
            .map_err(|e| StoreError::Db(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(Store {
            db: Mutex::new(db),
            latest: RwLock::new(latest),
            code,
        })
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.db.lock().map_err(|_| StoreError::Poisoned)
    }

    /// `$LATEST` of a function. Lock-free for practical purposes: a read lock on a map.
    pub fn get(&self, account: &str, name: &str) -> Option<Arc<FunctionConfig>> {
        self.latest.read().ok()?.get(account)?.get(name).cloned()
    }

    /// Every function of an account, sorted by name.
    pub fn list(&self, account: &str) -> Vec<Arc<FunctionConfig>> {
        let Ok(map) = self.latest.read() else {
            return Vec::new();
        };
        let mut out: Vec<_> = map
            .get(account)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Number of functions and total code size of an account.
    pub fn usage(&self, account: &str) -> (usize, u64) {
        let list = self.list(account);
        (list.len(), list.iter().map(|f| f.code_size).sum())
    }

    pub fn create(
        &self,
        cfg: FunctionConfig,
        tags: &BTreeMap<String, String>,
    ) -> Result<Arc<FunctionConfig>, StoreError> {
        let db = self.db()?;
        let json = serde_json::to_string(&cfg)?;
        let tags = serde_json::to_string(tags)?;
        let inserted = db.execute(
            "INSERT OR IGNORE INTO functions (account, name, config, tags) VALUES (?1, ?2, ?3, ?4)",
            params![cfg.account, cfg.name, json, tags],
        )?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(cfg.name));
        }
        let cfg = Arc::new(cfg);
        self.latest
            .write()
            .map_err(|_| StoreError::Poisoned)?
            .entry(cfg.account.clone())
            .or_default()
            .insert(cfg.name.clone(), cfg.clone());
        Ok(cfg)
    }

    /// Applies `change` to `$LATEST` atomically, honouring an expected RevisionId. The change
    /// must set a new `revision_id` itself.
    pub fn update<E: From<StoreError>>(
        &self,
        account: &str,
        name: &str,
        expected_revision: Option<&str>,
        change: impl FnOnce(&mut FunctionConfig) -> Result<(), E>,
    ) -> Result<(Arc<FunctionConfig>, Arc<FunctionConfig>), E> {
        let db = self.db()?;
        let old = self
            .get(account, name)
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        if let Some(rev) = expected_revision
            && rev != old.revision_id
        {
            return Err(StoreError::RevisionMismatch.into());
        }
        let mut new = (*old).clone();
        change(&mut new)?;
        let json = serde_json::to_string(&new).map_err(StoreError::from)?;
        db.execute(
            "UPDATE functions SET config = ?1 WHERE account = ?2 AND name = ?3",
            params![json, account, name],
        )
        .map_err(StoreError::from)?;
        let new = Arc::new(new);
        self.latest
            .write()
            .map_err(|_| StoreError::Poisoned)?
            .entry(account.to_string())
            .or_default()
            .insert(name.to_string(), new.clone());
        drop(db);
        if old.code_sha256_hex != new.code_sha256_hex {
            self.release_code(&old.code_sha256_hex);
        }
        Ok((old, new))
    }

    pub fn delete(&self, account: &str, name: &str) -> Result<Arc<FunctionConfig>, StoreError> {
        let db = self.db()?;
        let n = db.execute(
            "DELETE FROM functions WHERE account = ?1 AND name = ?2",
            params![account, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        let old = self
            .latest
            .write()
            .map_err(|_| StoreError::Poisoned)?
            .get_mut(account)
            .and_then(|m| m.remove(name))
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        drop(db);
        self.release_code(&old.code_sha256_hex);
        Ok(old)
    }

    pub fn tags(&self, account: &str, name: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let db = self.db()?;
        let tags: Option<String> = db
            .query_row(
                "SELECT tags FROM functions WHERE account = ?1 AND name = ?2",
                params![account, name],
                |r| r.get(0),
            )
            .optional()?;
        match tags {
            Some(t) => Ok(serde_json::from_str(&t)?),
            None => Err(StoreError::NotFound(name.to_string())),
        }
    }

    /// Removes a code package once no function refers to it any more.
    fn release_code(&self, sha256_hex: &str) {
        let in_use = self.latest.read().is_ok_and(|m| {
            m.values()
                .flat_map(|f| f.values())
                .any(|f| f.code_sha256_hex == sha256_hex)
        });
        if !in_use {
            self.code.remove(sha256_hex);
        }
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let db = self.db()?;
        Ok(db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let db = self.db()?;
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> FunctionConfig {
        FunctionConfig {
            name: name.into(),
            account: "123456789012".into(),
            version: "$LATEST".into(),
            runtime: "python3.11".into(),
            handler: "app.handler".into(),
            role: "arn:aws:iam::123456789012:role/r".into(),
            description: String::new(),
            timeout: 3,
            memory_size: 128,
            environment: BTreeMap::new(),
            code_sha256_hex: "00".into(),
            code_sha256: "AA==".into(),
            code_size: 1,
            last_modified_ms: 0,
            revision_id: "r1".into(),
            ephemeral_storage: 512,
            architectures: vec!["x86_64".into()],
            tracing_mode: "PassThrough".into(),
            dead_letter_target: None,
            layers: vec![],
            kms_key_arn: None,
            network: true,
        }
    }

    #[test]
    fn functions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.create(sample("a"), &BTreeMap::new()).unwrap();
            store.meta_set("k", "v").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.get("123456789012", "a").unwrap().handler,
            "app.handler"
        );
        assert_eq!(store.meta_get("k").unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn duplicate_create_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create(sample("a"), &BTreeMap::new()).unwrap();
        assert!(matches!(
            store.create(sample("a"), &BTreeMap::new()),
            Err(StoreError::AlreadyExists(_))
        ));
    }

    #[test]
    fn update_honours_the_revision_precondition() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create(sample("a"), &BTreeMap::new()).unwrap();
        let r: Result<_, StoreError> = store.update("123456789012", "a", Some("wrong"), |c| {
            c.timeout = 9;
            Ok(())
        });
        assert!(matches!(r, Err(StoreError::RevisionMismatch)));
        let (_, new) = store
            .update::<StoreError>("123456789012", "a", Some("r1"), |c| {
                c.timeout = 9;
                c.revision_id = "r2".into();
                Ok(())
            })
            .unwrap();
        assert_eq!(new.timeout, 9);
        assert_eq!(store.get("123456789012", "a").unwrap().revision_id, "r2");
    }

    #[test]
    fn accounts_do_not_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create(sample("a"), &BTreeMap::new()).unwrap();
        assert!(store.get("999999999999", "a").is_none());
        assert!(store.list("999999999999").is_empty());
    }
}
