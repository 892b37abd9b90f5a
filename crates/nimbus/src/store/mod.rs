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
use serde::{Deserialize, Serialize};

use crate::model::{AliasConfig, FunctionConfig, LATEST, is_version_number};
use code::CodeStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Function not found: {0}")]
    NotFound(String),
    #[error("Function already exist: {0}")]
    AlreadyExists(String),
    /// Something other than a function is missing; the message is complete.
    #[error("{0}")]
    Missing(String),
    /// A conflicting state; the message is complete.
    #[error("{0}")]
    Conflict(String),
    /// A precondition other than the RevisionId failed; the message is complete.
    #[error("{0}")]
    Precondition(String),
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

/// A provisioned-concurrency configuration as requested.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProvisionedConfig {
    pub requested: u32,
    pub last_modified_ms: u64,
}

/// Everything stored about one function.
#[derive(Debug, Clone)]
pub struct FunctionEntry {
    pub latest: Arc<FunctionConfig>,
    pub versions: BTreeMap<u32, Arc<FunctionConfig>>,
    pub aliases: BTreeMap<String, Arc<AliasConfig>>,
    /// Highest version number ever published: numbers are never reused.
    pub last_version: u32,
    pub reserved: Option<u32>,
    /// By qualifier (a version number or an alias name).
    pub provisioned: BTreeMap<String, ProvisionedConfig>,
}

impl FunctionEntry {
    fn new(latest: Arc<FunctionConfig>) -> Self {
        FunctionEntry {
            latest,
            versions: BTreeMap::new(),
            aliases: BTreeMap::new(),
            last_version: 0,
            reserved: None,
            provisioned: BTreeMap::new(),
        }
    }

    /// The configuration a qualifier names, and the alias if it named one.
    pub fn qualified(
        &self,
        q: Option<&str>,
    ) -> Option<(Arc<FunctionConfig>, Option<Arc<AliasConfig>>)> {
        match q {
            None | Some(LATEST) => Some((self.latest.clone(), None)),
            Some(v) if is_version_number(v) => {
                let n: u32 = v.parse().ok()?;
                self.versions.get(&n).map(|c| (c.clone(), None))
            }
            Some(a) => {
                let alias = self.aliases.get(a)?;
                let (cfg, _) = self.qualified(Some(&alias.function_version))?;
                Some((cfg, Some(alias.clone())))
            }
        }
    }

    /// A version's configuration by its name (`$LATEST` or a number).
    pub fn version(&self, v: &str) -> Option<Arc<FunctionConfig>> {
        if v == LATEST {
            return Some(self.latest.clone());
        }
        self.versions.get(&v.parse().ok()?).cloned()
    }
}

type Functions = HashMap<String, HashMap<String, FunctionEntry>>;

/// Function metadata and code.
pub struct Store {
    db: Mutex<Connection>,
    functions: RwLock<Functions>,
    pub code: CodeStore,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    last_version INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER,
    PRIMARY KEY (account, name)
);
CREATE TABLE IF NOT EXISTS versions (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (account, name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (account, name, alias)
);
CREATE TABLE IF NOT EXISTS provisioned (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (account, name, qualifier)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

fn load(db: &Connection) -> Result<Functions, StoreError> {
    let mut map: Functions = HashMap::new();
    let mut stmt = db.prepare("SELECT config, last_version, reserved FROM functions")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u32>(1)?,
            r.get::<_, Option<u32>>(2)?,
        ))
    })?;
    for row in rows {
        let (config, last_version, reserved) = row?;
        let cfg: FunctionConfig = serde_json::from_str(&config)?;
        let mut entry = FunctionEntry::new(Arc::new(cfg.clone()));
        entry.last_version = last_version;
        entry.reserved = reserved;
        map.entry(cfg.account).or_default().insert(cfg.name, entry);
    }
    // Versions, aliases and provisioned configurations: (account, name, key, JSON) rows that
    // belong to a function loaded above.
    for_each_child(
        db,
        "SELECT account, name, version, config FROM versions",
        |k, json| {
            let e = entry_of(&mut map, k)?;
            let version: u32 = k.2.parse().map_err(|_| corrupt_key(&k.2))?;
            e.versions
                .insert(version, Arc::new(serde_json::from_str(json)?));
            Ok(())
        },
    )?;
    for_each_child(
        db,
        "SELECT account, name, alias, config FROM aliases",
        |k, json| {
            let e = entry_of(&mut map, k)?;
            e.aliases
                .insert(k.2.clone(), Arc::new(serde_json::from_str(json)?));
            Ok(())
        },
    )?;
    for_each_child(
        db,
        "SELECT account, name, qualifier, config FROM provisioned",
        |k, json| {
            let e = entry_of(&mut map, k)?;
            e.provisioned
                .insert(k.2.clone(), serde_json::from_str(json)?);
            Ok(())
        },
    )?;
    Ok(map)
}

/// (account, function name, key within the function).
type ChildKey = (String, String, String);

/// Runs `f` on every row of a child table; rows of a function that no longer exists are
/// skipped (their function row is the source of truth).
fn for_each_child(
    db: &Connection,
    sql: &str,
    mut f: impl FnMut(&ChildKey, &str) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = db.prepare(sql)?;
    let rows = stmt.query_map([], |r| {
        // Version numbers are stored as integers; read every key as text.
        let key: rusqlite::types::Value = r.get(2)?;
        let key = match key {
            rusqlite::types::Value::Integer(n) => n.to_string(),
            rusqlite::types::Value::Text(t) => t,
            _ => String::new(),
        };
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?, key),
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (key, json) = row?;
        match f(&key, &json) {
            Err(StoreError::NotFound(_)) => continue,
            other => other?,
        }
    }
    Ok(())
}

fn entry_of<'m>(map: &'m mut Functions, k: &ChildKey) -> Result<&'m mut FunctionEntry, StoreError> {
    map.get_mut(&k.0)
        .and_then(|m| m.get_mut(&k.1))
        .ok_or_else(|| StoreError::NotFound(k.1.clone()))
}

fn corrupt_key(k: &str) -> StoreError {
    StoreError::Conflict(format!(
        "corrupt metadata record: version '{k}' is not a number"
    ))
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(data_dir.join("nimbus.db"))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )?;
        db.execute_batch(SCHEMA)?;
        let functions = load(&db)?;
        let code = CodeStore::open(data_dir.join("code"))
            .map_err(|e| StoreError::Db(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(Store {
            db: Mutex::new(db),
            functions: RwLock::new(functions),
            code,
        })
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.db.lock().map_err(|_| StoreError::Poisoned)
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Functions>, StoreError> {
        self.functions.write().map_err(|_| StoreError::Poisoned)
    }

    /// `$LATEST` of a function. A read lock on a map: cheap on the invoke path.
    pub fn get(&self, account: &str, name: &str) -> Option<Arc<FunctionConfig>> {
        Some(
            self.functions
                .read()
                .ok()?
                .get(account)?
                .get(name)?
                .latest
                .clone(),
        )
    }

    /// A snapshot of everything stored about a function.
    pub fn entry(&self, account: &str, name: &str) -> Option<FunctionEntry> {
        self.functions.read().ok()?.get(account)?.get(name).cloned()
    }

    /// Runs `f` on a function's entry under the read lock (no clone).
    pub fn with_entry<T>(
        &self,
        account: &str,
        name: &str,
        f: impl FnOnce(&FunctionEntry) -> T,
    ) -> Option<T> {
        Some(f(self.functions.read().ok()?.get(account)?.get(name)?))
    }

    /// Every function of an account (`$LATEST`), sorted by name.
    pub fn list(&self, account: &str) -> Vec<Arc<FunctionConfig>> {
        let Ok(map) = self.functions.read() else {
            return Vec::new();
        };
        let mut out: Vec<_> = map
            .get(account)
            .map(|m| m.values().map(|e| e.latest.clone()).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every function entry of every account (for reconciliation loops).
    pub fn all_entries(&self) -> Vec<FunctionEntry> {
        self.functions
            .read()
            .map(|m| m.values().flat_map(|m| m.values().cloned()).collect())
            .unwrap_or_default()
    }

    /// Number of functions and total code size of an account.
    pub fn usage(&self, account: &str) -> (usize, u64) {
        let Ok(map) = self.functions.read() else {
            return (0, 0);
        };
        let Some(m) = map.get(account) else {
            return (0, 0);
        };
        let size = m
            .values()
            .map(|e| e.latest.code_size + e.versions.values().map(|v| v.code_size).sum::<u64>())
            .sum();
        (m.len(), size)
    }

    /// Sum of reserved concurrency over an account's functions.
    pub fn reserved_total(&self, account: &str) -> u32 {
        self.functions
            .read()
            .ok()
            .and_then(|m| {
                m.get(account)
                    .map(|m| m.values().filter_map(|e| e.reserved).sum())
            })
            .unwrap_or(0)
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
        self.write()?
            .entry(cfg.account.clone())
            .or_default()
            .insert(cfg.name.clone(), FunctionEntry::new(cfg.clone()));
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
        if let Some(e) = self.write()?.get_mut(account).and_then(|m| m.get_mut(name)) {
            e.latest = new.clone();
        }
        drop(db);
        if old.code_sha256_hex != new.code_sha256_hex {
            self.release_code(&old.code_sha256_hex);
        }
        Ok((old, new))
    }

    /// Deletes a function with all its versions, aliases and configurations.
    pub fn delete(&self, account: &str, name: &str) -> Result<FunctionEntry, StoreError> {
        let mut db = self.db()?;
        let tx = db.transaction()?;
        let n = tx.execute(
            "DELETE FROM functions WHERE account = ?1 AND name = ?2",
            params![account, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        for table in ["versions", "aliases", "provisioned"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE account = ?1 AND name = ?2"),
                params![account, name],
            )?;
        }
        tx.commit()?;
        let old = self
            .write()?
            .get_mut(account)
            .and_then(|m| m.remove(name))
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        drop(db);
        self.release_code(&old.latest.code_sha256_hex);
        for v in old.versions.values() {
            self.release_code(&v.code_sha256_hex);
        }
        Ok(old)
    }

    /// Publishes `$LATEST` as a new immutable version — or returns the newest version if
    /// nothing changed since it was published.
    pub fn publish(
        &self,
        account: &str,
        name: &str,
        description: Option<String>,
        expected_sha: Option<&str>,
        expected_revision: Option<&str>,
        now_ms: u64,
    ) -> Result<(Arc<FunctionConfig>, bool), StoreError> {
        let db = self.db()?;
        let entry = self
            .entry(account, name)
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        if let Some(rev) = expected_revision
            && rev != entry.latest.revision_id
        {
            return Err(StoreError::RevisionMismatch);
        }
        if let Some(sha) = expected_sha
            && sha != entry.latest.code_sha256
        {
            return Err(StoreError::Precondition(format!(
                "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({}). Please try again with the CodeSHA256 in $LATEST.",
                entry.latest.code_sha256
            )));
        }
        if let Some((_, newest)) = entry.versions.last_key_value()
            && newest.same_content(&entry.latest)
        {
            return Ok((newest.clone(), false));
        }
        let n = entry.last_version + 1;
        let mut cfg = (*entry.latest).clone();
        cfg.version = n.to_string();
        cfg.revision_id = uuid::Uuid::new_v4().to_string();
        cfg.last_modified_ms = now_ms;
        if let Some(d) = description {
            cfg.description = d;
        }
        let json = serde_json::to_string(&cfg)?;
        db.execute(
            "INSERT INTO versions (account, name, version, config) VALUES (?1, ?2, ?3, ?4)",
            params![account, name, n, json],
        )?;
        db.execute(
            "UPDATE functions SET last_version = ?1 WHERE account = ?2 AND name = ?3",
            params![n, account, name],
        )?;
        let cfg = Arc::new(cfg);
        if let Some(e) = self.write()?.get_mut(account).and_then(|m| m.get_mut(name)) {
            e.versions.insert(n, cfg.clone());
            e.last_version = n;
        }
        Ok((cfg, true))
    }

    /// Deletes one published version; refused while an alias or a provisioned-concurrency
    /// configuration refers to it.
    pub fn delete_version(
        &self,
        account: &str,
        name: &str,
        version: u32,
    ) -> Result<(), StoreError> {
        let db = self.db()?;
        let entry = self
            .entry(account, name)
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        let v = version.to_string();
        let Some(old) = entry.versions.get(&version).cloned() else {
            return Ok(());
        };
        let users: Vec<&str> = entry
            .aliases
            .values()
            .filter(|a| a.function_version == v || a.additional_weights.contains_key(&v))
            .map(|a| a.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "Unable to delete version because the following aliases reference it: [{}]",
                users.join(", ")
            )));
        }
        db.execute(
            "DELETE FROM versions WHERE account = ?1 AND name = ?2 AND version = ?3",
            params![account, name, version],
        )?;
        db.execute(
            "DELETE FROM provisioned WHERE account = ?1 AND name = ?2 AND qualifier = ?3",
            params![account, name, v],
        )?;
        if let Some(e) = self.write()?.get_mut(account).and_then(|m| m.get_mut(name)) {
            e.versions.remove(&version);
            e.provisioned.remove(&v);
        }
        drop(db);
        self.release_code(&old.code_sha256_hex);
        Ok(())
    }

    /// Creates or replaces an alias (`create` refuses an existing one).
    pub fn put_alias(
        &self,
        account: &str,
        name: &str,
        alias: AliasConfig,
        create: bool,
        expected_revision: Option<&str>,
    ) -> Result<Arc<AliasConfig>, StoreError> {
        let db = self.db()?;
        let entry = self
            .entry(account, name)
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        match (entry.aliases.get(&alias.name), create) {
            (Some(_), true) => {
                return Err(StoreError::Conflict(format!(
                    "Alias already exists: {}",
                    alias.name
                )));
            }
            (None, false) => return Err(StoreError::Missing(alias.name.clone())),
            (Some(old), false) => {
                if let Some(rev) = expected_revision
                    && rev != old.revision_id
                {
                    return Err(StoreError::RevisionMismatch);
                }
            }
            (None, true) => {}
        }
        let json = serde_json::to_string(&alias)?;
        db.execute(
            "INSERT INTO aliases (account, name, alias, config) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(account, name, alias) DO UPDATE SET config = excluded.config",
            params![account, name, alias.name, json],
        )?;
        let alias = Arc::new(alias);
        if let Some(e) = self.write()?.get_mut(account).and_then(|m| m.get_mut(name)) {
            e.aliases.insert(alias.name.clone(), alias.clone());
        }
        Ok(alias)
    }

    pub fn delete_alias(&self, account: &str, name: &str, alias: &str) -> Result<bool, StoreError> {
        let db = self.db()?;
        let n = db.execute(
            "DELETE FROM aliases WHERE account = ?1 AND name = ?2 AND alias = ?3",
            params![account, name, alias],
        )?;
        db.execute(
            "DELETE FROM provisioned WHERE account = ?1 AND name = ?2 AND qualifier = ?3",
            params![account, name, alias],
        )?;
        if let Some(e) = self.write()?.get_mut(account).and_then(|m| m.get_mut(name)) {
            e.aliases.remove(alias);
            e.provisioned.remove(alias);
        }
        Ok(n > 0)
    }

    /// Sets (`Some`) or removes (`None`) a function's reserved concurrency.
    pub fn set_reserved(
        &self,
        account: &str,
        name: &str,
        reserved: Option<u32>,
    ) -> Result<(), StoreError> {
        let db = self.db()?;
        let n = db.execute(
            "UPDATE functions SET reserved = ?1 WHERE account = ?2 AND name = ?3",
            params![reserved, account, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        if let Some(e) = self.write()?.get_mut(account).and_then(|m| m.get_mut(name)) {
            e.reserved = reserved;
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a provisioned-concurrency configuration.
    pub fn set_provisioned(
        &self,
        account: &str,
        name: &str,
        qualifier: &str,
        config: Option<ProvisionedConfig>,
    ) -> Result<(), StoreError> {
        let db = self.db()?;
        match &config {
            Some(c) => db.execute(
                "INSERT INTO provisioned (account, name, qualifier, config) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(account, name, qualifier) DO UPDATE SET config = excluded.config",
                params![account, name, qualifier, serde_json::to_string(c)?],
            )?,
            None => db.execute(
                "DELETE FROM provisioned WHERE account = ?1 AND name = ?2 AND qualifier = ?3",
                params![account, name, qualifier],
            )?,
        };
        if let Some(e) = self.write()?.get_mut(account).and_then(|m| m.get_mut(name)) {
            match config {
                Some(c) => e.provisioned.insert(qualifier.to_string(), c),
                None => e.provisioned.remove(qualifier),
            };
        }
        Ok(())
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

    /// Removes a code package once no version of any function refers to it any more.
    fn release_code(&self, sha256_hex: &str) {
        let in_use = self.functions.read().is_ok_and(|m| {
            m.values().flat_map(|f| f.values()).any(|e| {
                e.latest.code_sha256_hex == sha256_hex
                    || e.versions.values().any(|v| v.code_sha256_hex == sha256_hex)
            })
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
    use crate::model::AliasConfig;

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
            vpc_subnet_ids: vec![],
            vpc_security_group_ids: vec![],
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
    fn publishing_unchanged_code_returns_the_existing_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create(sample("a"), &BTreeMap::new()).unwrap();
        let (v1, created) = store
            .publish("123456789012", "a", None, None, None, 1)
            .unwrap();
        assert!(created);
        assert_eq!(v1.version, "1");
        let (again, created) = store
            .publish("123456789012", "a", None, None, None, 2)
            .unwrap();
        assert!(!created);
        assert_eq!(again.version, "1");
        store
            .update::<StoreError>("123456789012", "a", None, |c| {
                c.timeout = 10;
                c.revision_id = "r2".into();
                Ok(())
            })
            .unwrap();
        let (v2, _) = store
            .publish("123456789012", "a", None, None, None, 3)
            .unwrap();
        assert_eq!(v2.version, "2");
        assert!(matches!(
            store.publish("123456789012", "a", None, Some("nope"), None, 4),
            Err(StoreError::Precondition(_))
        ));
    }

    #[test]
    fn versions_and_aliases_survive_reopening_and_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.create(sample("a"), &BTreeMap::new()).unwrap();
            store
                .publish("123456789012", "a", None, None, None, 1)
                .unwrap();
            store
                .put_alias(
                    "123456789012",
                    "a",
                    AliasConfig {
                        name: "live".into(),
                        function_version: "1".into(),
                        description: String::new(),
                        additional_weights: BTreeMap::new(),
                        revision_id: "x".into(),
                    },
                    true,
                    None,
                )
                .unwrap();
            store.set_reserved("123456789012", "a", Some(5)).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let e = store.entry("123456789012", "a").unwrap();
        assert_eq!(e.versions.len(), 1);
        assert_eq!(e.aliases["live"].function_version, "1");
        assert_eq!(e.reserved, Some(5));
        assert_eq!(store.reserved_total("123456789012"), 5);
        // The alias pins version 1.
        assert!(matches!(
            store.delete_version("123456789012", "a", 1),
            Err(StoreError::Conflict(_))
        ));
        store.delete_alias("123456789012", "a", "live").unwrap();
        store.delete_version("123456789012", "a", 1).unwrap();
        store
            .update::<StoreError>("123456789012", "a", None, |c| {
                c.timeout = 11;
                Ok(())
            })
            .unwrap();
        let (v, _) = store
            .publish("123456789012", "a", None, None, None, 5)
            .unwrap();
        assert_eq!(v.version, "2", "version numbers are never reused");
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
