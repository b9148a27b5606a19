//! Test stores: object stores that misbehave on purpose.

use super::*;

/// Answers reads of paths containing `needle` with an S3-style 503 while `faults` lasts, and
/// refuses writes of paths containing `refuse` (when set) for good.
#[derive(Debug)]
pub(crate) struct FaultyStore {
    pub(crate) inner: Arc<dyn ObjectStore>,
    pub(crate) needle: &'static str,
    pub(crate) faults: std::sync::atomic::AtomicUsize,
    /// Writes to paths containing any of these are refused.
    pub(crate) refuse: &'static [&'static str],
    /// Every read of a path containing `needle` takes this long first (a slow store).
    pub(crate) delay: std::time::Duration,
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultyStore")
    }
}

impl FaultyStore {
    /// The first `faults` reads of paths containing `needle` fail with a 503.
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, needle: &'static str, faults: usize) -> Self {
        FaultyStore {
            inner,
            needle,
            faults: std::sync::atomic::AtomicUsize::new(faults),
            refuse: &[],
            delay: std::time::Duration::ZERO,
        }
    }

    /// Every write of a path containing `needle` is refused: an object store that says no.
    pub(crate) fn refusing(inner: Arc<dyn ObjectStore>, needles: &'static [&'static str]) -> Self {
        FaultyStore {
            refuse: needles,
            ..FaultyStore::new(inner, "", 0)
        }
    }

    fn read_fault(&self, location: &StorePath) -> object_store::Result<()> {
        use std::sync::atomic::Ordering;
        if !self.needle.is_empty()
            && location.as_ref().contains(self.needle)
            && self
                .faults
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: format!("Error performing GET http://127.0.0.1/{location} in 10ms - Server returned non-2xx status code: 503 Service Unavailable: SlowDown").into(),
            });
        }
        Ok(())
    }

    fn write_refused(&self, location: &StorePath) -> object_store::Result<()> {
        if self.refuse.iter().any(|n| location.as_ref().contains(n)) {
            return Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "write refused by test store".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.write_refused(location)?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.write_refused(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &StorePath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        if !self.delay.is_zero()
            && !self.needle.is_empty()
            && location.as_ref().contains(self.needle)
        {
            tokio::time::sleep(self.delay).await;
        }
        self.read_fault(location)?;
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<StorePath>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<StorePath>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.write_refused(to)?;
        self.inner.copy_opts(from, to, options).await
    }
    async fn rename_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.write_refused(to)?;
        self.inner.rename_opts(from, to, options).await
    }
}
