//! The content-addressed package store: every uploaded package is kept once, as
//! `{dir}/{sha256}.zip`, whatever app or version it was uploaded as.
//!
//! A package is written to a temporary file in the same directory (`.tmp-{random}.part`),
//! hashed while it is written, flushed to disk and then renamed to its hash's name, so a
//! reader never sees a partial package and storing the same bytes twice is harmless. A write
//! that is abandoned (dropped before [`PackageWriter::finish`], or failed) removes its
//! temporary file.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The directory of packages, named by the SHA-256 of their bytes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PackageStore {
    dir: PathBuf,
}

/// Whether `s` is a SHA-256 as this store names files: 64 lower-case hex characters.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl PackageStore {
    /// Opens the store in `dir`, creating the directory when missing.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<PackageStore> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create the package directory {}: {e}", dir.display()),
            )
        })?;
        Ok(PackageStore { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts writing a package; feed it with [`PackageWriter::write`], then
    /// [`PackageWriter::finish`].
    pub async fn writer(&self) -> io::Result<PackageWriter> {
        let tmp = self
            .dir
            .join(format!(".tmp-{}.part", elves_types::Id::random()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await?;
        Ok(PackageWriter {
            dir: self.dir.clone(),
            file,
            tmp: Some(tmp),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Stores everything `reader` yields. Returns the package's SHA-256 (lower-case hex) and
    /// size in bytes. Storing bytes that are already stored changes nothing.
    pub async fn put<R: AsyncRead + Unpin>(&self, mut reader: R) -> io::Result<(String, u64)> {
        let mut w = self.writer().await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).await?;
        }
        w.finish().await
    }

    /// Stores a copy of the file at `path` (see [`PackageStore::put`]).
    pub async fn put_file(&self, path: &Path) -> io::Result<(String, u64)> {
        let file = tokio::fs::File::open(path).await?;
        self.put(file).await
    }

    /// The file of the package with this SHA-256, when `sha256` is 64 hex characters (either
    /// case) and the package is stored.
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        let sha = sha256.to_ascii_lowercase();
        if !is_sha256_hex(&sha) {
            return None;
        }
        let path = self.dir.join(format!("{sha}.zip"));
        path.is_file().then_some(path)
    }
}

/// A package being written. Dropping it before [`PackageWriter::finish`] removes what was
/// written.
#[derive(Debug)]
pub struct PackageWriter {
    dir: PathBuf,
    file: tokio::fs::File,
    /// The temporary file, until it is renamed.
    tmp: Option<PathBuf>,
    hasher: Sha256,
    size: u64,
}

impl PackageWriter {
    /// Appends `chunk`.
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk).await?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// The bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the package to disk and names it by its hash. Returns the SHA-256 (lower-case
    /// hex) and the size.
    pub async fn finish(mut self) -> io::Result<(String, u64)> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        let sha = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let target = self.dir.join(format!("{sha}.zip"));
        let tmp = self.tmp.take().expect("finish runs once");
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            // Same name, same bytes: keep the stored copy.
            let _ = tokio::fs::remove_file(&tmp).await;
        } else if let Err(e) = tokio::fs::rename(&tmp, &target).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        } else {
            sync_dir(&self.dir).await;
        }
        Ok((sha, self.size))
    }
}

impl Drop for PackageWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Makes a rename in `dir` durable (best effort; not every platform can open a directory).
async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC_SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn put_names_packages_by_their_hash_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackageStore::open(dir.path().join("packages")).unwrap();
        let (sha, size) = store.put(&b"abc"[..]).await.unwrap();
        assert_eq!((sha.as_str(), size), (ABC_SHA, 3));
        let again = store.put(&b"abc"[..]).await.unwrap();
        assert_eq!(again, (sha.clone(), 3));
        let (empty, zero) = store.put(&b""[..]).await.unwrap();
        assert_eq!((empty.as_str(), zero), (EMPTY_SHA, 0));
        assert_eq!(
            entries(store.dir()),
            [format!("{ABC_SHA}.zip"), format!("{EMPTY_SHA}.zip")]
        );
        let path = store.path(ABC_SHA).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        assert_eq!(store.path(&ABC_SHA.to_uppercase()), Some(path));
    }

    #[tokio::test]
    async fn put_file_copies_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("demo_1.0.zip");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &bytes).unwrap();
        let store = PackageStore::open(dir.path().join("p")).unwrap();
        let (sha, size) = store.put_file(&src).await.unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(std::fs::read(store.path(&sha).unwrap()).unwrap(), bytes);
    }

    #[tokio::test]
    async fn path_refuses_anything_but_a_stored_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackageStore::open(dir.path()).unwrap();
        store.put(&b"abc"[..]).await.unwrap();
        std::fs::write(dir.path().join("x.zip"), b"x").unwrap();
        for bad in [
            "",
            "x",
            &ABC_SHA[..63],
            &format!("{ABC_SHA}0"),
            &format!("../{}", &ABC_SHA[3..]),
            "g".repeat(64).as_str(),
            EMPTY_SHA, // valid but not stored
        ] {
            assert_eq!(store.path(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_abandoned_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = PackageStore::open(dir.path()).unwrap();
        let mut w = store.writer().await.unwrap();
        w.write(b"half a package").await.unwrap();
        assert_eq!(w.size(), 14);
        assert_eq!(entries(dir.path()).len(), 1);
        drop(w);
        assert!(entries(dir.path()).is_empty());
    }
}
