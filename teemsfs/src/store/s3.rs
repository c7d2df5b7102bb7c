//! [`S3Store`]: any S3-compatible endpoint through `aws-sdk-s3`.
//!
//! Built without the aws-lc C library: the SDK's default HTTPS client is turned off and an
//! `aws-smithy-http-client` client with rustls on the *ring* provider is passed in instead
//! (BENCHMARKS.md "Object stores" has the build-time comparison). The same client speaks
//! plain `http://` to a loopback test server.
//!
//! Addressing is path-style (`endpoint/bucket/key`), which every S3-compatible server
//! understands and which needs no wildcard DNS. Credentials come from [`S3Config`] or, when
//! absent there, from the usual `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//! `AWS_SESSION_TOKEN` environment variables; nothing else (no profile files, no instance
//! metadata), so a mount never blocks on a metadata endpoint that is not there.
//!
//! Request checksums are only sent when an operation requires them: fragment integrity is
//! end-to-end (BLAKE3 in the `BlobRef`), and a store that lies about a checksum is in the
//! threat model anyway. For the same reason a put's payload is not signed (the header
//! says `UNSIGNED-PAYLOAD`): hashing every fragment with SHA-256 for the signature would
//! cost client CPU and protect nothing the fragment's BLAKE3 does not; the request itself
//! (bucket, key, length, time) is still signed.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use bytes::Bytes;

use super::{
    DEFAULT_OP_TIMEOUT_MS, ObjectMeta, ObjectStore, Op, StoreError, check_name, check_prefix,
    slice_range, with_timeout,
};

/// Where and how to reach one bucket.
#[derive(Clone)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:9000` or `https://s3.eu-west-1.amazonaws.com`.
    pub endpoint_url: String,
    pub bucket: String,
    pub region: String,
    /// Prepended to every object name inside the bucket, so several teemsfs
    /// instances (or tests) can share one bucket. Must itself be a valid name prefix.
    pub key_prefix: String,
    /// `None`: read `AWS_ACCESS_KEY_ID` from the environment.
    pub access_key_id: Option<String>,
    /// `None`: read `AWS_SECRET_ACCESS_KEY` from the environment.
    pub secret_access_key: Option<String>,
    /// `None`: read `AWS_SESSION_TOKEN` from the environment if set.
    pub session_token: Option<String>,
    /// Bound on one call (one attempt and its retries), see [`DEFAULT_OP_TIMEOUT_MS`].
    pub timeout_ms: u64,
}

impl S3Config {
    /// A config for `bucket` at `endpoint_url` with region `us-east-1`, no key prefix,
    /// credentials from the environment and the default timeout.
    pub fn new(endpoint_url: &str, bucket: &str) -> S3Config {
        S3Config {
            endpoint_url: endpoint_url.to_owned(),
            bucket: bucket.to_owned(),
            region: "us-east-1".to_owned(),
            key_prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            timeout_ms: DEFAULT_OP_TIMEOUT_MS,
        }
    }
}

// Hand-written so a logged config never shows the secret.
impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint_url", &self.endpoint_url)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("key_prefix", &self.key_prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    key_prefix: String,
    label: String,
    timeout_ms: u64,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("label", &self.label)
            .finish()
    }
}

/// Upper bound on list pages, so a server that keeps returning continuation tokens cannot
/// keep us looping: 100,000 pages of 1,000 keys is far beyond any bucket we create.
const MAX_LIST_PAGES: usize = 100_000;

impl S3Store {
    pub fn new(config: S3Config) -> Result<S3Store, StoreError> {
        let label = format!(
            "s3://{}/{}@{}",
            config.bucket, config.key_prefix, config.endpoint_url
        );
        let config_error = |detail: String| StoreError::Config {
            store: label.clone(),
            detail,
        };
        check_prefix(&label, &config.key_prefix)?;
        let from_env = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        let access_key_id = config
            .access_key_id
            .clone()
            .or_else(|| from_env("AWS_ACCESS_KEY_ID"))
            .ok_or_else(|| {
                config_error("no access key id in config or AWS_ACCESS_KEY_ID".into())
            })?;
        let secret_access_key = config
            .secret_access_key
            .clone()
            .or_else(|| from_env("AWS_SECRET_ACCESS_KEY"))
            .ok_or_else(|| {
                config_error("no secret access key in config or AWS_SECRET_ACCESS_KEY".into())
            })?;
        let session_token = config
            .session_token
            .clone()
            .or_else(|| from_env("AWS_SESSION_TOKEN"));
        let credentials = Credentials::new(
            access_key_id,
            secret_access_key,
            session_token,
            None,
            "teemsfs-config",
        );
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .operation_timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(5_000)))
            .build();
        let sdk_config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .endpoint_url(&config.endpoint_url)
            .force_path_style(true)
            .credentials_provider(credentials)
            .http_client(http_client)
            .timeout_config(timeouts)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(sdk_config),
            bucket: config.bucket,
            key_prefix: config.key_prefix,
            label,
            timeout_ms: config.timeout_ms,
        })
    }

    /// Creates the bucket if it does not exist yet (tests and first-time set-up).
    pub async fn create_bucket_if_missing(&self) -> Result<(), StoreError> {
        let label = &self.label;
        with_timeout(label, Op::Connect, "", self.timeout_ms, async {
            match self
                .client
                .create_bucket()
                .bucket(&self.bucket)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let owned = e.as_service_error().is_some_and(|s| {
                        s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
                    });
                    if owned {
                        Ok(())
                    } else {
                        Err(StoreError::backend(
                            label,
                            Op::Connect,
                            "",
                            DisplayErrorContext(&e),
                        ))
                    }
                }
            }
        })
        .await
    }

    fn key(&self, name: &str) -> String {
        format!("{}{}", self.key_prefix, name)
    }

    /// One GetObject of `name`, whole or only the HTTP byte `range` (`bytes=first-last`),
    /// under the store's timeout. `Ok(None)`: there is no such key. With a range, an
    /// unsatisfiable-range answer (416 `InvalidRange`: the range starts at or past the end,
    /// or the object is empty) is an existing object with nothing there.
    async fn get_object(
        &self,
        op: Op,
        name: &str,
        range: Option<String>,
    ) -> Result<Option<Fetched>, StoreError> {
        let label = &self.label;
        let ranged = range.is_some();
        with_timeout(label, op, name, self.timeout_ms, async {
            let response = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.key(name))
                .set_range(range)
                .send()
                .await
            {
                Ok(response) => response,
                Err(e) => {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    // Only a missing *key* is "not found". A missing bucket also answers
                    // 404, but treating it as an empty store would make every fragment
                    // look lost (and read repair write into the void): that is an error.
                    let missing = e.as_service_error().is_some_and(|s| s.is_no_such_key())
                        || (status == Some(404) && e.code().is_none_or(|code| code == "NoSuchKey"));
                    if missing {
                        return Ok(None);
                    }
                    // S3 checks that the key exists before the range, so this is an object.
                    let unsatisfiable =
                        ranged && (status == Some(416) || e.code() == Some("InvalidRange"));
                    if unsatisfiable {
                        return Ok(Some(Fetched {
                            bytes: Bytes::new(),
                            partial: true,
                        }));
                    }
                    return Err(StoreError::backend(
                        label,
                        op,
                        name,
                        DisplayErrorContext(&e),
                    ));
                }
            };
            let partial = response.content_range().is_some();
            let body = response
                .body
                .collect()
                .await
                .map_err(|e| StoreError::backend(label, op, name, DisplayErrorContext(&e)))?;
            Ok(Some(Fetched {
                bytes: body.into_bytes(),
                partial,
            }))
        })
        .await
    }
}

/// What one GetObject brought back.
struct Fetched {
    bytes: Bytes,
    /// The answer is a part of the object (it came with a `Content-Range`), not all of it.
    partial: bool,
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        self.label.clone()
    }

    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        let label = &self.label;
        check_name(label, name)?;
        with_timeout(label, Op::Put, name, self.timeout_ms, async {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(self.key(name))
                .body(ByteStream::from(bytes))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map(|_| ())
                .map_err(|e| StoreError::backend(label, Op::Put, name, DisplayErrorContext(&e)))
        })
        .await
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        check_name(&self.label, name)?;
        Ok(self
            .get_object(Op::Get, name, None)
            .await?
            .map(|fetched| fetched.bytes))
    }

    async fn get_range(
        &self,
        name: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        check_name(&self.label, name)?;
        // An HTTP range names at least one byte: for `len == 0` ask for one and drop it,
        // which still tells a missing object from an existing one.
        let last = start.saturating_add(len.max(1) - 1);
        let fetched = self
            .get_object(Op::GetRange, name, Some(format!("bytes={start}-{last}")))
            .await?;
        Ok(fetched.map(|fetched| {
            if fetched.partial {
                // Clipped again, so a server answering more than asked cannot break the
                // contract.
                slice_range(&fetched.bytes, 0, len)
            } else {
                // The server ignored the range (HTTP allows that) and sent everything.
                slice_range(&fetched.bytes, start, len)
            }
        }))
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let label = &self.label;
        check_name(label, name)?;
        with_timeout(label, Op::Delete, name, self.timeout_ms, async {
            // S3 answers 204 for a missing key too, which is the idempotence we promise.
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.key(name))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| StoreError::backend(label, Op::Delete, name, DisplayErrorContext(&e)))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let label = &self.label;
        check_prefix(label, prefix)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _page in 0..MAX_LIST_PAGES {
            let request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.key(prefix))
                .set_continuation_token(token.take());
            let page = with_timeout(label, Op::List, prefix, self.timeout_ms, async {
                request.send().await.map_err(|e| {
                    StoreError::backend(label, Op::List, prefix, DisplayErrorContext(&e))
                })
            })
            .await?;
            for object in page.contents() {
                let Some(name) = object
                    .key()
                    .and_then(|key| key.strip_prefix(self.key_prefix.as_str()))
                else {
                    continue;
                };
                // Keys written by something else in a shared bucket are not ours.
                if super::validate_name(name).is_err() || !name.starts_with(prefix) {
                    continue;
                }
                out.push(ObjectMeta {
                    name: name.to_owned(),
                    size_bytes: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    modified: object
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok()),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => {
                    out.sort_by(|a, b| a.name.cmp(&b.name));
                    out.dedup_by(|a, b| a.name == b.name);
                    return Ok(out);
                }
            }
        }
        Err(StoreError::backend(
            label,
            Op::List,
            prefix,
            format!("more than {MAX_LIST_PAGES} list pages"),
        ))
    }
}
