//! Object stores: where `s3://`, `gs://` and `az://` locations are listed, read and written.
//!
//! ```text
//! sluice.toml [connections.<name>] kind = "s3"|"gcs"|"azure", bucket = …
//!        │
//!        ▼
//! Registry (DataFusion's ObjectStoreRegistry) ──get_store(s3://bucket)──▶ object_store client
//!        ▲                                        (configured bucket, else the provider's
//!        │                                         standard environment chain)
//! sources (listing, CSV reader), DataFusion scans, Delta targets
//! ```
//!
//! Every reader of a location goes through the one registry of its session, so a bucket's
//! settings and credentials are decided in one place. Credentials come only from references
//! (`${env:…}`, `${file:…}`), which register their values with the [`Redactor`], or from the
//! provider's chain (`AWS_*`, `GOOGLE_*`, `AZURE_*` variables); they never appear in messages.

use crate::invalid;
use crate::invalid::InvalidValue;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::config::interpolate::Redactor;
use crate::config::spec::{StoreKind, StoreSpec};

pub use crate::config::spec::{is_url, SCHEMES};

/// A file a job reads or writes: on the local disk, or an object in a store.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local file (absolute).
    Local(PathBuf),
    /// An object: its URL (`s3://bucket/key`) and the store that holds it.
    Object {
        /// `scheme://bucket/key`.
        url: Url,
        /// The bucket's client.
        store: Arc<dyn ObjectStore>,
    },
}

impl Location {
    /// What DataFusion reads: the local path, or the URL.
    pub fn to_data_fusion(&self) -> String {
        match self {
            Location::Local(p) => p.to_string_lossy().to_string(),
            Location::Object { url, .. } => url.to_string(),
        }
    }

    /// The file name's extension (`gz` of `a.csv.gz`), for compression by extension.
    pub fn extension(&self) -> Option<String> {
        match self {
            Location::Local(p) => p.extension().and_then(|e| e.to_str()).map(str::to_string),
            Location::Object { url, .. } => Path::new(url.path())
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_string),
        }
    }

    /// The local path, if local.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Object { .. } => None,
        }
    }

    /// Opens the file for reading from a blocking thread: the local file, or the object
    /// streamed in the chunks the store sends (never downloaded whole into memory).
    ///
    /// # Errors
    /// The I/O error of opening (an object store error as `io::Error`).
    pub fn open_blocking(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Location::Local(p) => Ok(Box::new(std::fs::File::open(p)?)),
            Location::Object { url, store } => {
                let path = object_path(url);
                let handle = tokio::runtime::Handle::current();
                let result = handle
                    .block_on(store.get(&path))
                    .map_err(io::Error::other)?;
                Ok(Box::new(ObjectReader {
                    stream: result.into_stream(),
                    chunk: Bytes::new(),
                    handle,
                }))
            }
        }
    }
}

/// The key of `url` in its bucket (`raw/a.csv` of `s3://lake/raw/a.csv`), percent-decoded.
pub fn object_path(url: &Url) -> ObjectPath {
    ObjectPath::from_url_path(url.path()).unwrap_or_else(|_| ObjectPath::from(url.path()))
}

/// A blocking reader over an object's byte stream.
struct ObjectReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    handle: tokio::runtime::Handle,
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// The object stores of one project: DataFusion's registry, with each bucket's client built
/// on first use from its `[connections.<name>]`, or from the provider's environment chain
/// when no connection names the bucket.
#[derive(Debug)]
pub struct Registry {
    inner: DefaultObjectStoreRegistry,
    /// Connections by `scheme://bucket`.
    specs: BTreeMap<String, StoreSpec>,
    root: PathBuf,
    redactor: Redactor,
}

impl Registry {
    /// The registry of a project's object-store connections (`stores` of its settings).
    pub fn new(stores: &BTreeMap<String, StoreSpec>, root: &Path, redactor: &Redactor) -> Registry {
        let specs = stores
            .values()
            .map(|s| {
                (
                    format!("{}://{}", s.kind.scheme(), s.bucket.get_ref()),
                    s.clone(),
                )
            })
            .collect();
        Registry {
            inner: DefaultObjectStoreRegistry::new(),
            specs,
            root: root.to_path_buf(),
            redactor: redactor.clone(),
        }
    }

    fn build(&self, url: &Url) -> std::result::Result<Arc<dyn ObjectStore>, String> {
        let bucket = url.host_str().unwrap_or_default();
        let key = format!("{}://{bucket}", url.scheme());
        let spec = self.specs.get(&key);
        let secret = |v: &Option<serde_spanned::Spanned<String>>| -> std::result::Result<Option<String>, String> {
            v.as_ref()
                .map(|t| {
                    self.redactor
                        .resolve(t.get_ref(), &self.root)
                        .map_err(String::from)
                })
                .transpose()
        };
        let built: object_store::Result<Arc<dyn ObjectStore>> = match url.scheme() {
            "s3" => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(s) = spec {
                    b = s3_settings(b, s, secret)?;
                }
                b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            "gs" => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
                if let Some(k) = secret(&spec.and_then(|s| s.service_account_key.clone()))? {
                    b = b.with_service_account_key(k);
                }
                b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            "az" => {
                let mut b = MicrosoftAzureBuilder::from_env().with_container_name(bucket);
                if let Some(s) = spec {
                    if let Some(a) = &s.account {
                        b = b.with_account(a.get_ref());
                    }
                    if let Some(k) = secret(&s.access_key)? {
                        b = b.with_access_key(k);
                    }
                    if let Some(e) = &s.endpoint {
                        b = b
                            .with_endpoint(e.get_ref().clone())
                            .with_allow_http(e.get_ref().starts_with("http://"));
                    }
                }
                b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            other => return Err(format!("`{other}://` is not an object store Sluice reads")),
        };
        built.map_err(|e| {
            let hint = match spec {
                Some(_) => "check the bucket's [connections.<name>] in sluice.toml".to_string(),
                None => format!(
                    "no [connections.<name>] in sluice.toml has `bucket = \"{bucket}\"`, so the provider's environment variables were used; add one"
                ),
            };
            self.redactor
                .redact(&format!("cannot set up the client of {key}: {e}; {hint}"))
        })
    }
}

/// The S3 client settings of a connection.
fn s3_settings(
    mut b: AmazonS3Builder,
    s: &StoreSpec,
    secret: impl Fn(
        &Option<serde_spanned::Spanned<String>>,
    ) -> std::result::Result<Option<String>, String>,
) -> std::result::Result<AmazonS3Builder, String> {
    if let Some(r) = &s.region {
        b = b.with_region(r);
    }
    if let Some(e) = &s.endpoint {
        b = b
            .with_endpoint(e.get_ref())
            .with_allow_http(e.get_ref().starts_with("http://"));
    }
    b = b.with_virtual_hosted_style_request(!s.path_style);
    if let Some(k) = secret(&s.access_key_id)? {
        b = b.with_access_key_id(k);
    }
    if let Some(k) = secret(&s.secret_access_key)? {
        b = b.with_secret_access_key(k);
    }
    if let Some(k) = secret(&s.session_token)? {
        b = b.with_token(k);
    }
    Ok(b)
}

impl ObjectStoreRegistry for Registry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(s) = self.inner.get_store(url) {
            return Ok(s);
        }
        if !SCHEMES.contains(&url.scheme()) {
            return self.inner.get_store(url);
        }
        let store = self
            .build(url)
            .map_err(datafusion::error::DataFusionError::Configuration)?;
        self.inner.register_store(url, store.clone());
        Ok(store)
    }
}

/// Parses an object-store URL as written (after `${…}` substitution).
///
/// # Errors
/// What is wrong with it.
pub fn parse_url(text: &str) -> std::result::Result<Url, InvalidValue> {
    // In a location `?` is a glob character and `#` part of a key, not a query or fragment.
    let escaped = text
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    let url = Url::parse(&escaped).map_err(|e| invalid!("`{text}` is not a URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid!(
            "`{text}` names no bucket (write `{}://<bucket>/<path>`)",
            url.scheme()
        ));
    }
    Ok(url)
}

/// The folder (table root, target prefix) at the object-store URL `resolved`, as a URL ending
/// in `/`, with its store from `ctx`'s registry (built from the project's connections).
///
/// # Errors
/// A URL that does not parse, or a store that cannot be set up (the message may name a
/// credential's reference, never its value).
pub fn folder_store(
    resolved: &str,
    ctx: &datafusion::prelude::SessionContext,
) -> std::result::Result<(Url, Arc<dyn ObjectStore>), InvalidValue> {
    let url = parse_url(&format!("{}/", resolved.trim_end_matches('/')))?;
    let store = ctx
        .runtime_env()
        .object_store_registry
        .get_store(&url)
        .map_err(|e| invalid!("{e}"))?;
    Ok((url, store))
}

/// The objects a source's URL names, sorted by key: one object, every object directly under a
/// "folder" (`s3://lake/raw/` or `s3://lake/raw`), or a glob over keys (`*`, `?`, `[…]`, and
/// `**` across `/`). Hidden objects (a name starting with `.` or `_`) are left out.
///
/// # Errors
/// [`ListError`]: an invalid glob, or the store's error (listing, permissions).
pub async fn list(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
) -> std::result::Result<Vec<Url>, ListError> {
    let key = percent_decode(url.path().trim_start_matches('/'));
    let base = format!("{}://{}/", url.scheme(), url.host_str().unwrap_or_default());
    let keys: Vec<String> = if key.contains(['*', '?', '[']) {
        let prefix = crate::config::guard::glob_base(&key);
        let prefix = prefix.to_string_lossy().to_string();
        let matcher = glob::Pattern::new(&key)?;
        let options = glob::MatchOptions {
            require_literal_separator: true,
            require_literal_leading_dot: true,
            ..Default::default()
        };
        let listed = list_all(
            store,
            (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str())),
        )
        .await?;
        listed
            .into_iter()
            .filter(|k| matcher.matches_with(k, options))
            .collect()
    } else {
        match store.head(&ObjectPath::from(key.as_str())).await {
            Ok(_) => vec![key.clone()],
            Err(object_store::Error::NotFound { .. }) => {
                let folder = ObjectPath::from(key.trim_end_matches('/'));
                store
                    .list_with_delimiter(Some(&folder))
                    .await?
                    .objects
                    .into_iter()
                    .map(|m| m.location.to_string())
                    .collect()
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut urls: Vec<Url> = keys
        .into_iter()
        .filter(|k| !is_hidden(k))
        .map(|k| Url::parse(&base).and_then(|b| b.join(&escape_key(&k))))
        .collect::<std::result::Result<_, _>>()?;
    urls.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(urls)
}

/// Why [`list`] could not list a URL's objects.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The URL's key is not a valid glob.
    #[error("invalid glob: {0}")]
    Glob(#[from] glob::PatternError),
    /// The store refused or failed (permissions, network, a missing bucket).
    #[error("{0}")]
    Store(#[from] object_store::Error),
    /// A listed key does not make a URL with the store's base.
    #[error("{0}")]
    Url(#[from] url::ParseError),
}

async fn list_all(
    store: &Arc<dyn ObjectStore>,
    prefix: Option<ObjectPath>,
) -> std::result::Result<Vec<String>, object_store::Error> {
    let mut out = Vec::new();
    let mut stream = store.list(prefix.as_ref());
    while let Some(meta) = stream.next().await {
        out.push(meta?.location.to_string());
    }
    Ok(out)
}

fn is_hidden(key: &str) -> bool {
    key.split('/')
        .any(|part| part.starts_with('.') || part.starts_with('_'))
}

/// `%XX` escapes decoded (`+` kept as it is), as in URL paths and Hive partition folders.
pub fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| s.to_string())
}

/// A key as a relative URL path (each segment percent-encoded, `/` kept).
fn escape_key(key: &str) -> String {
    key.split('/')
        .map(|seg| {
            url::form_urlencoded::byte_serialize(seg.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The store kind a URL scheme belongs to.
pub fn kind_of(url: &Url) -> Option<StoreKind> {
    match url.scheme() {
        "s3" => Some(StoreKind::S3),
        "gs" => Some(StoreKind::Gcs),
        "az" => Some(StoreKind::Azure),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("s3://lake/raw/*.csv"));
        assert!(is_url("gs://b/x"));
        assert!(is_url("az://c/x"));
        assert!(!is_url("data/s3://x"));
        assert!(!is_url("samples/flights.csv"));
        assert!(!is_url("s3://"));
    }

    #[test]
    fn hidden_objects_are_any_with_a_dot_or_underscore_segment() {
        assert!(is_hidden("t/_delta_log/0.json"));
        assert!(is_hidden(".staging/a.csv"));
        assert!(!is_hidden("raw/year=2024/a.csv"));
    }

    #[test]
    fn glob_characters_stay_in_the_key() {
        let url = parse_url("s3://lake/raw/day=0?/a#1 b%.csv").unwrap();
        assert_eq!(url.host_str(), Some("lake"));
        assert_eq!(object_path(&url).as_ref(), "raw/day=0?/a#1 b%.csv");
        assert!(parse_url("s3:///raw/a.csv").is_err());
    }

    #[test]
    fn keys_round_trip_through_urls() {
        let base = Url::parse("s3://lake/").unwrap();
        let url = base.join(&escape_key("raw/a b%c.csv")).unwrap();
        assert_eq!(object_path(&url).as_ref(), "raw/a b%c.csv");
    }
}
