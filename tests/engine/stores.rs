//! Test stores: object stores that misbehave on purpose.

use super::*;

/// Refuses every write under a prefix: an object store that says no.
#[derive(Debug)]
pub(crate) struct RefusingStore {
    pub(crate) inner: Arc<dyn ObjectStore>,
    /// Writes to paths containing this are refused.
    pub(crate) needle: &'static str,
}

impl std::fmt::Display for RefusingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefusingStore")
    }
}

impl RefusingStore {
    fn check(&self, location: &StorePath) -> object_store::Result<()> {
        if location.as_ref().contains(self.needle) {
            return Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "write refused by test store".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for RefusingStore {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &StorePath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
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
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }
    async fn rename_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.check(to)?;
        self.inner.rename_opts(from, to, options).await
    }
}
