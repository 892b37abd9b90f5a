//! Code packages, content-addressed by SHA-256: `code/<hex>.zip` (what was uploaded, served
//! back by GetFunction) and `code/<hex>/` (unpacked once, read-only, shared by every
//! environment of every version that uses it).
//!
//! Unpacking is where hostile input arrives, so it is strict: entries that would land outside
//! the root, links that point outside it, archives that inflate past Lambda's 250 MB limit,
//! and corrupt archives are rejected, and nothing is left behind when they are.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::model::limits;

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("Could not unzip uploaded file. Please check your file, then try to upload again.")]
    Corrupt,
    #[error("Unzipped size must be smaller than {} bytes", limits::UNZIPPED_MAX)]
    TooLargeUnzipped,
    #[error("Zipped size must be smaller than {} bytes", limits::ZIP_MAX)]
    TooLargeZipped,
    #[error(
        "Could not unzip uploaded file: the entry '{0}' would be written outside the function's code directory."
    )]
    EscapingEntry(String),
    #[error("Could not store the code package: {0}")]
    Io(#[from] io::Error),
}

/// What a stored package is known by.
#[derive(Debug, Clone)]
pub struct CodeInfo {
    pub sha256_hex: String,
    pub sha256_b64: String,
    pub size: u64,
}

/// The blob directory. Owns `DATA/code`.
#[derive(Debug, Clone)]
pub struct CodeStore {
    root: PathBuf,
}

const MAX_ENTRIES: usize = 100_000;

impl CodeStore {
    pub fn open(root: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&root)?;
        // Leftovers of an unpack interrupted by a crash.
        for entry in fs::read_dir(&root)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = make_writable_and_remove(&entry.path());
            }
        }
        Ok(CodeStore { root })
    }

    /// The unpacked directory of a package.
    pub fn dir(&self, sha256_hex: &str) -> PathBuf {
        self.root.join(sha256_hex)
    }

    /// The uploaded zip of a package.
    pub fn zip_path(&self, sha256_hex: &str) -> PathBuf {
        self.root.join(format!("{sha256_hex}.zip"))
    }

    /// Validates, stores and unpacks a zip. Idempotent: a package already stored is not
    /// unpacked again. Blocking.
    pub fn put_zip(&self, zip: &[u8]) -> Result<CodeInfo, CodeError> {
        if zip.len() as u64 > limits::ZIP_MAX {
            return Err(CodeError::TooLargeZipped);
        }
        let digest = Sha256::digest(zip);
        let info = CodeInfo {
            sha256_hex: hex::encode(digest),
            sha256_b64: base64::engine::general_purpose::STANDARD.encode(digest),
            size: zip.len() as u64,
        };
        let dir = self.dir(&info.sha256_hex);
        if dir.is_dir() && self.zip_path(&info.sha256_hex).is_file() {
            return Ok(info);
        }
        let tmp = self
            .root
            .join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let result = unpack(zip, &tmp).and_then(|()| {
            let zip_tmp = tmp.with_extension("zip");
            let mut f = fs::File::create(&zip_tmp)?;
            f.write_all(zip)?;
            f.sync_all()?;
            fs::rename(&zip_tmp, self.zip_path(&info.sha256_hex))?;
            if dir.exists() {
                make_writable_and_remove(&dir)?;
            }
            fs::rename(&tmp, &dir)?;
            Ok(())
        });
        if result.is_err() {
            let _ = make_writable_and_remove(&tmp);
            let _ = fs::remove_file(tmp.with_extension("zip"));
        }
        result.map(|()| info)
    }

    /// Removes a package no version refers to any more.
    pub fn remove(&self, sha256_hex: &str) {
        let _ = make_writable_and_remove(&self.dir(sha256_hex));
        let _ = fs::remove_file(self.zip_path(sha256_hex));
    }
}

fn make_writable_and_remove(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    // Unpacked trees are made read-only; directories must be writable to remove entries.
    for entry in walk(path)? {
        if entry.is_dir() {
            let _ = fs::set_permissions(&entry, fs::Permissions::from_mode(0o755));
        }
    }
    fs::remove_dir_all(path)
}

fn walk(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if p.is_dir() && !p.is_symlink() {
            for e in fs::read_dir(&p)?.flatten() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Joins a relative path to `root` lexically, refusing anything that leaves it.
fn safe_join(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for c in rel.components() {
        match c {
            Component::Normal(p) => {
                out.push(p);
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return None;
                }
                out.pop();
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whether a relative path passes *through* one of `links` (a proper prefix of it is a link).
fn through_link(rel: &Path, links: &HashSet<PathBuf>) -> bool {
    let mut prefix = PathBuf::new();
    let mut parts = rel.components().peekable();
    while let Some(c) = parts.next() {
        prefix.push(c);
        if parts.peek().is_some() && links.contains(&prefix) {
            return true;
        }
    }
    false
}

/// Resolves a link's target lexically against its directory and checks it stays inside the
/// package without passing through another link: `a -> ..` then `b -> a/..` would each look
/// inside on their own, yet `b` resolves above the root, because `..` after a link climbs
/// from where the link points, not from where it sits.
fn link_target_inside(link: &Path, target: &Path, links: &HashSet<PathBuf>) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut walked = PathBuf::new();
    let mut depth = 0usize;
    for c in link
        .parent()
        .unwrap_or(Path::new(""))
        .join(target)
        .components()
    {
        match c {
            Component::Normal(p) => {
                if links.contains(&walked) && !walked.as_os_str().is_empty() {
                    return false;
                }
                walked.push(p);
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 || links.contains(&walked) {
                    return false;
                }
                walked.pop();
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn is_symlink_mode(mode: u32) -> bool {
    mode & 0o170000 == 0o120000
}

fn unpack(zip: &[u8], dest: &Path) -> Result<(), CodeError> {
    let mut archive = zip::ZipArchive::new(io::Cursor::new(zip)).map_err(|_| CodeError::Corrupt)?;
    if archive.len() > MAX_ENTRIES {
        return Err(CodeError::TooLargeUnzipped);
    }
    // First pass, nothing written: declared sizes (cheap rejection of obvious bombs), every
    // entry's path, and which entries are links.
    let mut declared: u64 = 0;
    let mut links = HashSet::new();
    let mut paths = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let f = archive.by_index_raw(i).map_err(|_| CodeError::Corrupt)?;
        declared = declared.saturating_add(f.size());
        let Some(rel) = f.enclosed_name() else {
            return Err(CodeError::EscapingEntry(f.name().to_string()));
        };
        if is_symlink_mode(f.unix_mode().unwrap_or(0)) {
            links.insert(rel.clone());
        }
        paths.push((f.name().to_string(), rel));
    }
    if declared > limits::UNZIPPED_MAX {
        return Err(CodeError::TooLargeUnzipped);
    }
    // Nothing may be written beneath a link.
    for (name, rel) in &paths {
        if through_link(rel, &links) {
            return Err(CodeError::EscapingEntry(name.clone()));
        }
    }
    fs::create_dir_all(dest)?;
    let mut written: u64 = 0;
    let mut dirs = vec![dest.to_path_buf()];
    let mut pending_links = Vec::new();
    for (i, (raw_name, rel)) in paths.iter().enumerate() {
        let mut f = archive.by_index(i).map_err(|_| CodeError::Corrupt)?;
        let Some(path) = safe_join(dest, rel) else {
            return Err(CodeError::EscapingEntry(raw_name.clone()));
        };
        let mode = f.unix_mode().unwrap_or(0o644);
        if f.is_dir() {
            fs::create_dir_all(&path)?;
            dirs.push(path);
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        if is_symlink_mode(mode) {
            let mut target = String::new();
            f.by_ref()
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|_| CodeError::Corrupt)?;
            if !link_target_inside(rel, Path::new(&target), &links) {
                return Err(CodeError::EscapingEntry(raw_name.clone()));
            }
            pending_links.push((target, path));
            continue;
        }
        // No link exists yet (they are made last), and `create_new` never follows or reuses
        // an existing path: a file lands exactly where its name says.
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    CodeError::EscapingEntry(raw_name.clone())
                } else {
                    CodeError::Io(e)
                }
            })?;
        // The declared size can lie: count what actually inflates.
        let budget = limits::UNZIPPED_MAX - written + 1;
        let n = io::copy(&mut f.by_ref().take(budget), &mut out).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                CodeError::Corrupt
            } else {
                CodeError::Io(e)
            }
        })?;
        written += n;
        if written > limits::UNZIPPED_MAX {
            return Err(CodeError::TooLargeUnzipped);
        }
        // Everyone may read; the executable bit is kept (a `bootstrap` must stay executable).
        let perm = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
        fs::set_permissions(&path, fs::Permissions::from_mode(perm))?;
    }
    // Links last, once every file is in place: nothing is ever written through one.
    for (target, path) in pending_links {
        std::os::unix::fs::symlink(&target, &path)?;
    }
    // Directories last, deepest first, so their own entries could be created above.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in &dirs {
        fs::set_permissions(d, fs::Permissions::from_mode(0o555))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut buf = io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, data, mode) in entries {
            w.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode))
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn unpacks_read_only_and_keeps_the_executable_bit() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CodeStore::open(tmp.path().join("code")).unwrap();
        let zip = zip_of(&[
            ("bootstrap", b"#!/bin/sh\n", 0o755),
            ("lib/app.py", b"x = 1\n", 0o644),
        ]);
        let info = store.put_zip(&zip).unwrap();
        let dir = store.dir(&info.sha256_hex);
        let mode = fs::metadata(dir.join("bootstrap"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o555);
        let mode = fs::metadata(dir.join("lib/app.py"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        assert_eq!(info.size, zip.len() as u64);
        // Idempotent.
        let again = store.put_zip(&zip).unwrap();
        assert_eq!(again.sha256_b64, info.sha256_b64);
        store.remove(&info.sha256_hex);
        assert!(!dir.exists());
    }

    #[test]
    fn rejects_corrupt_archives_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("code");
        let store = CodeStore::open(root.clone()).unwrap();
        assert!(matches!(
            store.put_zip(b"not a zip at all"),
            Err(CodeError::Corrupt)
        ));
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn rejects_entries_escaping_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("code");
        let store = CodeStore::open(root.clone()).unwrap();
        let zip = zip_of(&[("../evil.txt", b"x", 0o644)]);
        assert!(matches!(
            store.put_zip(&zip),
            Err(CodeError::EscapingEntry(_))
        ));
        assert!(!tmp.path().join("evil.txt").exists());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn rejects_symlinks_pointing_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CodeStore::open(tmp.path().join("code")).unwrap();
        let mut buf = io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        w.add_symlink("link", "/etc/shadow", SimpleFileOptions::default())
            .unwrap();
        w.finish().unwrap();
        assert!(matches!(
            store.put_zip(&buf.into_inner()),
            Err(CodeError::EscapingEntry(_))
        ));
    }

    fn zip_with_links(entries: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut buf = io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, link, data) in entries {
            match link {
                Some(target) => w
                    .add_symlink(*name, *target, SimpleFileOptions::default())
                    .unwrap(),
                None => {
                    w.start_file(*name, SimpleFileOptions::default()).unwrap();
                    w.write_all(data).unwrap();
                }
            }
        }
        w.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn rejects_chained_links_that_climb_out_through_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CodeStore::open(tmp.path().join("code")).unwrap();
        // Each link looks inside lexically; l2 resolves above the root through l1.
        let zip = zip_with_links(&[
            ("d/l1", Some(".."), b""),
            ("d/l2", Some("l1/.."), b""),
            ("d/keep", None, b"x"),
        ]);
        assert!(matches!(
            store.put_zip(&zip),
            Err(CodeError::EscapingEntry(_))
        ));
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "only code/ exists"
        );
    }

    #[test]
    fn refuses_files_written_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CodeStore::open(tmp.path().join("code")).unwrap();
        let zip = zip_with_links(&[("d/up", Some(".."), b""), ("d/up/evil", None, b"x")]);
        assert!(matches!(
            store.put_zip(&zip),
            Err(CodeError::EscapingEntry(_))
        ));
        assert!(!tmp.path().join("code/evil").exists());
    }

    #[test]
    fn keeps_links_that_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CodeStore::open(tmp.path().join("code")).unwrap();
        let zip = zip_with_links(&[
            ("lib/real.py", None, b"x = 1\n"),
            ("app.py", Some("lib/real.py"), b""),
            ("lib/alias", Some("../lib/real.py"), b""),
        ]);
        let info = store.put_zip(&zip).unwrap();
        let dir = store.dir(&info.sha256_hex);
        assert_eq!(fs::read_to_string(dir.join("app.py")).unwrap(), "x = 1\n");
        assert_eq!(
            fs::read_to_string(dir.join("lib/alias")).unwrap(),
            "x = 1\n"
        );
    }

    #[test]
    fn rejects_archives_inflating_past_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CodeStore::open(tmp.path().join("code")).unwrap();
        let mut buf = io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        w.start_file("big", opts).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..260 {
            w.write_all(&chunk).unwrap();
        }
        w.finish().unwrap();
        let zip = buf.into_inner();
        assert!(zip.len() < 2 << 20, "the bomb itself is small");
        assert!(matches!(
            store.put_zip(&zip),
            Err(CodeError::TooLargeUnzipped)
        ));
    }
}
