//! Local files (`file://` roots): object_store's `LocalFileSystem`, with a listing that asks the
//! file system for each file's metadata once instead of four times.
//!
//! `LocalFileSystem::list` walks with `walkdir` following links, then checks each entry for a
//! broken link, asks again whether it is a file, and reads its metadata a fourth time, each time
//! resolving the whole path. A raw lake of daily folders is listed once per source per run, and
//! those calls were most of the time spent planning the first job that reads the sources. This
//! walk reads each folder's entries with their types, and one `stat` relative to the folder for
//! each file. The answer is the same `ObjectMeta` (location, size, modification time, ETag), so
//! caches keyed by it still match what `LocalFileSystem` itself reports. A tree holding a
//! symbolic link to a folder is listed by `LocalFileSystem` itself.
//!
//! A read of at most `READ_IN_PLACE` bytes (a daily raw file the read cache takes whole, a
//! footer, a Delta log entry) is read on the task that asked for it: from the page cache that
//! takes microseconds, less than `LocalFileSystem`'s second hand-off to a blocking thread.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// The local file system under `/`, listed with one metadata call per file.
#[derive(Debug)]
pub struct LocalFiles {
    inner: Arc<LocalFileSystem>,
}

impl std::fmt::Display for LocalFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalFiles({})", self.inner)
    }
}

impl Default for LocalFiles {
    fn default() -> Self {
        LocalFiles {
            inner: Arc::new(LocalFileSystem::new()),
        }
    }
}

/// Why the fast walk hands a listing back to `LocalFileSystem`.
enum Walk {
    /// A symbolic link to a folder: `LocalFileSystem` follows it (and detects loops).
    LinkedFolder,
    Failed(object_store::Error),
}

impl From<object_store::Error> for Walk {
    fn from(e: object_store::Error) -> Self {
        Walk::Failed(e)
    }
}

/// Every file under `root`, as `LocalFileSystem` would list it.
fn walk(root: &FsPath) -> Result<Vec<ObjectMeta>, Walk> {
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            // Gone, or the prefix names no folder: nothing under it (as `LocalFileSystem`).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue, // a file
            Err(e) => return Err(Walk::Failed(walk_error(&folder, e))),
        };
        for entry in entries {
            let entry = entry.map_err(|e| walk_error(&folder, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| walk_error(&path, e))?;
            let metadata = if kind.is_dir() {
                folders.push(path);
                continue;
            } else if kind.is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_dir() => return Err(Walk::LinkedFolder),
                    Ok(m) => m,
                    Err(_) => continue, // a broken link is skipped
                }
            } else {
                match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Walk::Failed(walk_error(&path, e))),
                }
            };
            if !metadata.is_file() {
                continue;
            }
            let location =
                StorePath::from_absolute_path(&path).map_err(object_store::Error::from)?;
            if !is_listed(&location) {
                continue;
            }
            files.push(object_meta(location, &metadata));
        }
    }
    Ok(files)
}

fn walk_error(path: &FsPath, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFiles",
        source: format!("cannot list {}: {source}", path.display()).into(),
    }
}

/// Whether `LocalFileSystem` lists a file: not one without a name, nor a multipart upload it
/// stages as `name#<digits>`.
fn is_listed(location: &StorePath) -> bool {
    let Some(name) = location.filename() else {
        return false;
    };
    match name.split_once('#') {
        Some((_, suffix)) => suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    }
}

/// The metadata `LocalFileSystem` reports for a file: its ETag is inode, modification time in
/// microseconds and size, in hexadecimal (`tests::a_walk_lists_what_local_file_system_lists`
/// holds the two to the same answer).
fn object_meta(location: StorePath, metadata: &std::fs::Metadata) -> ObjectMeta {
    use std::os::unix::fs::MetadataExt;
    let modified = metadata
        .modified()
        .expect("modification times are supported on this platform");
    let micros = modified
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    ObjectMeta {
        location,
        last_modified: modified.into(),
        size: metadata.len(),
        e_tag: Some(format!(
            "{:x}-{micros:x}-{:x}",
            metadata.ino(),
            metadata.len()
        )),
        version: None,
    }
}

/// A local read at most this large is read on the task that opened the file.
const READ_IN_PLACE: u64 = 1 << 20;

/// `result` with a small file's range read now (its payload then streams those bytes); a larger
/// one as `LocalFileSystem` opened it, read on a blocking thread when its bytes are asked for.
fn read_in_place(result: GetResult) -> object_store::Result<GetResult> {
    use std::io::{Read, Seek, SeekFrom};
    let range = result.range.clone();
    let GetResultPayload::File(mut file, path) = result.payload else {
        return Ok(result);
    };
    let len = range.end - range.start;
    if len > READ_IN_PLACE {
        return Ok(GetResult {
            payload: GetResultPayload::File(file, path),
            ..result
        });
    }
    let failed = |source: std::io::Error| object_store::Error::Generic {
        store: "LocalFiles",
        source: format!("cannot read {}: {source}", path.display()).into(),
    };
    file.seek(SeekFrom::Start(range.start)).map_err(failed)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes).map_err(failed)?;
    let bytes = bytes::Bytes::from(bytes);
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async { Ok(bytes) }).boxed()),
        ..result
    })
}

#[async_trait::async_trait]
impl ObjectStore for LocalFiles {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &StorePath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        if head {
            return Ok(result);
        }
        read_in_place(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let root: PathBuf = match self
            .inner
            .path_to_filesystem(&prefix.cloned().unwrap_or_default())
        {
            Ok(root) => root,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        let (inner, prefix) = (self.inner.clone(), prefix.cloned());
        futures::stream::once(async move {
            match tokio::task::spawn_blocking(move || walk(&root)).await {
                Ok(Ok(files)) => futures::stream::iter(files.into_iter().map(Ok)).boxed(),
                Ok(Err(Walk::Failed(e))) => futures::stream::once(async { Err(e) }).boxed(),
                Ok(Err(Walk::LinkedFolder)) => inner.list(prefix.as_ref()),
                Err(e) => futures::stream::once(async move {
                    Err(object_store::Error::JoinError { source: e })
                })
                .boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn listed(store: &dyn ObjectStore, prefix: &StorePath) -> Vec<ObjectMeta> {
        let mut files: Vec<ObjectMeta> = store.list(Some(prefix)).try_collect().await.unwrap();
        files.sort_by(|a, b| a.location.cmp(&b.location));
        files
    }

    /// Nested partition folders, a staged upload, a link to a file, a broken link, a name that
    /// needs encoding, an empty folder, a missing prefix and a file as the prefix: the same
    /// answers, ETags included, as `LocalFileSystem`.
    #[tokio::test]
    async fn a_walk_lists_what_local_file_system_lists() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("orders");
        for day in ["dt=2024-11-01", "dt=2024-11-02"] {
            std::fs::create_dir_all(root.join(day)).unwrap();
            std::fs::write(root.join(day).join("part-0.parquet"), day.as_bytes()).unwrap();
        }
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("dt=2024-11-01").join("part-1.parquet#12"), b"x").unwrap();
        std::fs::write(root.join("dt=2024-11-01").join("notes #a.txt"), b"kept").unwrap();
        std::fs::write(root.join("a%b.parquet"), b"encoded").unwrap();
        std::os::unix::fs::symlink(root.join("a%b.parquet"), root.join("link.parquet")).unwrap();
        std::os::unix::fs::symlink(root.join("gone"), root.join("broken.parquet")).unwrap();
        let (ours, theirs) = (LocalFiles::default(), LocalFileSystem::new());
        let prefix = StorePath::from_absolute_path(&root).unwrap();
        let expected = listed(&theirs, &prefix).await;
        assert_eq!(expected.len(), 5, "{expected:?}");
        assert_eq!(listed(&ours, &prefix).await, expected);
        for other in [
            root.join("missing"),
            root.join("empty"),
            root.join("a%b.parquet"),
            root.join("dt=2024-11-02"),
        ] {
            let prefix = StorePath::from_absolute_path(&other).unwrap();
            assert_eq!(
                listed(&ours, &prefix).await,
                listed(&theirs, &prefix).await,
                "{}",
                other.display()
            );
        }
    }

    /// Whole and ranged reads of a small file and of one past `READ_IN_PLACE`, and a HEAD: the
    /// same bytes, ranges and metadata as `LocalFileSystem`; only the small reads are already
    /// in memory.
    #[tokio::test]
    async fn reads_give_what_local_file_system_gives() {
        use object_store::{GetRange, ObjectStoreExt};
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.parquet");
        let large = dir.path().join("large.parquet");
        std::fs::write(&small, b"PAR1 a footer PAR1").unwrap();
        let big: Vec<u8> = (0..READ_IN_PLACE + 10).map(|i| (i % 251) as u8).collect();
        std::fs::write(&large, &big).unwrap();
        let (ours, theirs) = (LocalFiles::default(), LocalFileSystem::new());
        let asks = [
            (&small, None, true),
            (&small, Some(GetRange::Bounded(5..13)), true),
            (&small, Some(GetRange::Suffix(4)), true),
            (&large, None, false),
            (&large, Some(GetRange::Suffix(8)), true),
        ];
        for (file, range, in_memory) in asks {
            let location = StorePath::from_absolute_path(file).unwrap();
            let options = GetOptions {
                range: range.clone(),
                ..GetOptions::default()
            };
            let got = ours.get_opts(&location, options.clone()).await.unwrap();
            let want = theirs.get_opts(&location, options).await.unwrap();
            let streamed = matches!(got.payload, GetResultPayload::Stream(_));
            assert_eq!(streamed, in_memory, "{range:?} of {}", file.display());
            assert_eq!((&got.meta, &got.range), (&want.meta, &want.range));
            assert_eq!(got.bytes().await.unwrap(), want.bytes().await.unwrap());
            assert_eq!(
                ours.head(&location).await.unwrap(),
                theirs.head(&location).await.unwrap()
            );
        }
        let missing = StorePath::from_absolute_path(dir.path().join("gone.parquet")).unwrap();
        let e = ours.get_opts(&missing, GetOptions::default()).await;
        assert!(
            matches!(e, Err(object_store::Error::NotFound { .. })),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_linked_folder_is_listed_by_local_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("part-0.parquet"), b"day").unwrap();
        let root = dir.path().join("orders");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&target, root.join("dt=2024-11-01")).unwrap();
        let prefix = StorePath::from_absolute_path(&root).unwrap();
        let ours = listed(&LocalFiles::default(), &prefix).await;
        assert_eq!(ours.len(), 1);
        assert_eq!(ours, listed(&LocalFileSystem::new(), &prefix).await);
    }
}
