//! [`RedisStore`]: objects as Redis string values, on one server or a cluster.
//!
//! One server goes through redis-rs' `ConnectionManager`, which reconnects after a dropped
//! connection (a bare multiplexed connection would stay broken). A cluster goes through the
//! async cluster client, which follows slot moves. Both sit behind our own timeout on every
//! call, because a cluster call can hang indefinitely during a topology change and a
//! reconnecting manager can wait a long time.
//!
//! Every object lives at key `key_prefix + name`. Listing uses `SCAN` (never `KEYS`,
//! which blocks the server for the whole keyspace), on every primary of a cluster in turn,
//! then `STRLEN` for the sizes. Redis keeps no modification time we can read cheaply, so
//! listed objects have `modified: None`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};

use super::{
    DEFAULT_OP_TIMEOUT_MS, ObjectMeta, ObjectStore, Op, StoreError, check_name, check_prefix,
    slice_range, with_timeout,
};

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// One `redis://host:port[/db]` URL for a single server; several URLs, or URLs with the
    /// scheme `redis+cluster://`, for the seed nodes of a cluster.
    pub urls: Vec<String>,
    /// Prepended to every name to form the key, so teemsfs can share a database.
    /// May contain `:`; must not contain glob characters or spaces.
    pub key_prefix: String,
    /// Bound on one call; see [`DEFAULT_OP_TIMEOUT_MS`].
    pub timeout_ms: u64,
}

impl RedisConfig {
    pub fn single(url: &str) -> RedisConfig {
        RedisConfig {
            urls: vec![url.to_owned()],
            key_prefix: "teemsfs:".to_owned(),
            timeout_ms: DEFAULT_OP_TIMEOUT_MS,
        }
    }

    pub fn cluster(urls: &[&str]) -> RedisConfig {
        RedisConfig {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            key_prefix: "teemsfs:".to_owned(),
            timeout_ms: DEFAULT_OP_TIMEOUT_MS,
        }
    }
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

pub struct RedisStore {
    connection: Connection,
    key_prefix: String,
    label: String,
    timeout_ms: u64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("label", &self.label)
            .finish()
    }
}

/// `SCAN ... COUNT` hint: keys examined per round trip.
const SCAN_BATCH: usize = 1_000;
/// Upper bound on SCAN round trips per node, so a misbehaving server that never returns
/// cursor 0 cannot keep us looping.
const MAX_SCAN_ROUNDS: usize = 1_000_000;

/// A URL for display: the part after the last `@`, so a password never reaches a log.
fn redact(url: &str) -> &str {
    match url.rsplit_once('@') {
        Some((_, host)) => host,
        None => url.split_once("://").map_or(url, |(_, rest)| rest),
    }
}

impl RedisStore {
    pub async fn connect(config: RedisConfig) -> Result<RedisStore, StoreError> {
        let cluster = config.urls.len() > 1
            || config
                .urls
                .iter()
                .any(|u| u.starts_with("redis+cluster://"));
        let hosts: Vec<&str> = config.urls.iter().map(|u| redact(u)).collect();
        let label = format!(
            "redis{}://{}/{}",
            if cluster { "+cluster" } else { "" },
            hosts.join(","),
            config.key_prefix
        );
        let config_error = |detail: String| StoreError::Config {
            store: label.clone(),
            detail,
        };
        if config.urls.is_empty() {
            return Err(config_error("no Redis URL given".into()));
        }
        if config
            .key_prefix
            .chars()
            .any(|c| matches!(c, '*' | '?' | '[' | ']' | '\\') || c.is_whitespace())
        {
            return Err(config_error(format!(
                "key prefix {:?} contains a glob character or space",
                config.key_prefix
            )));
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let connection = if cluster {
            let urls: Vec<String> = config
                .urls
                .iter()
                .map(|u| match u.strip_prefix("redis+cluster://") {
                    Some(rest) => format!("redis://{rest}"),
                    None => u.clone(),
                })
                .collect();
            let client = redis::cluster::ClusterClientBuilder::new(urls)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()
                .map_err(|e| config_error(e.to_string()))?;
            let connection = with_timeout(&label, Op::Connect, "", config.timeout_ms, async {
                client
                    .get_async_connection()
                    .await
                    .map_err(|e| StoreError::backend(&label, Op::Connect, "", e))
            })
            .await?;
            Connection::Cluster(connection)
        } else {
            let url = config.urls.first().map(String::as_str).unwrap_or_default();
            let client = redis::Client::open(url).map_err(|e| config_error(e.to_string()))?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(3);
            let manager = with_timeout(&label, Op::Connect, "", config.timeout_ms, async {
                ConnectionManager::new_with_config(client, manager_config)
                    .await
                    .map_err(|e| StoreError::backend(&label, Op::Connect, "", e))
            })
            .await?;
            Connection::Single(manager)
        };
        Ok(RedisStore {
            connection,
            key_prefix: config.key_prefix,
            label,
            timeout_ms: config.timeout_ms,
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{}", self.key_prefix, name)
    }

    /// Runs one command on a fresh handle to the shared connection (handles are cheap
    /// clones of one multiplexed pipe), under our timeout.
    async fn query<T: redis::FromRedisValue>(
        &self,
        op: Op,
        name: &str,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let label = &self.label;
        with_timeout(label, op, name, self.timeout_ms, async {
            let result = match self.connection.clone() {
                Connection::Single(mut c) => command.query_async(&mut c).await,
                Connection::Cluster(mut c) => command.query_async(&mut c).await,
            };
            result.map_err(|e| StoreError::backend(label, op, name, e))
        })
        .await
    }

    /// Addresses of the nodes to SCAN: the one server, or every cluster primary.
    async fn scan_targets(&self, prefix: &str) -> Result<Vec<Option<(String, u16)>>, StoreError> {
        let Connection::Cluster(cluster) = &self.connection else {
            return Ok(vec![None]);
        };
        let label = &self.label;
        let mut cluster = cluster.clone();
        // With no response policy, a command sent to all primaries answers with a map
        // from each primary's address to its reply: that map is the list of primaries.
        let reply = with_timeout(label, Op::List, prefix, self.timeout_ms, async {
            cluster
                .route_command(
                    redis::cmd("PING"),
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                )
                .await
                .map_err(|e| StoreError::backend(label, Op::List, prefix, e))
        })
        .await?;
        let redis::Value::Map(entries) = reply else {
            return Err(StoreError::backend(
                label,
                Op::List,
                prefix,
                format!("unexpected reply listing cluster primaries: {reply:?}"),
            ));
        };
        let mut targets = Vec::new();
        for (address, _) in entries {
            let address: String = redis::from_redis_value(address)
                .map_err(|e| StoreError::backend(label, Op::List, prefix, e))?;
            let parsed = address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)));
            match parsed {
                Some(target) => targets.push(Some(target)),
                None => {
                    return Err(StoreError::backend(
                        label,
                        Op::List,
                        prefix,
                        format!("cannot parse cluster node address {address:?}"),
                    ));
                }
            }
        }
        Ok(targets)
    }

    /// All keys matching `pattern` on one node (`None`: the single server).
    async fn scan_node(
        &self,
        target: Option<(String, u16)>,
        prefix: &str,
        pattern: &str,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let label = &self.label;
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        for _round in 0..MAX_SCAN_ROUNDS {
            let mut command = redis::cmd("SCAN");
            command
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let (next, batch): (u64, Vec<Vec<u8>>) = match (&target, self.connection.clone()) {
                (Some((host, port)), Connection::Cluster(mut c)) => {
                    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    });
                    let reply = with_timeout(label, Op::List, prefix, self.timeout_ms, async {
                        c.route_command(command, routing)
                            .await
                            .map_err(|e| StoreError::backend(label, Op::List, prefix, e))
                    })
                    .await?;
                    redis::from_redis_value(reply)
                        .map_err(|e| StoreError::backend(label, Op::List, prefix, e))?
                }
                _ => self.query(Op::List, prefix, &command).await?,
            };
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
        Err(StoreError::backend(
            label,
            Op::List,
            prefix,
            format!("SCAN did not finish within {MAX_SCAN_ROUNDS} rounds"),
        ))
    }

    /// `STRLEN` of each key: pipelined in batches on a single server; one call per key on
    /// a cluster, where the keys of one batch may live on different primaries.
    async fn sizes(&self, prefix: &str, keys: &[String]) -> Result<Vec<u64>, StoreError> {
        let label = &self.label;
        let mut sizes = Vec::with_capacity(keys.len());
        match &self.connection {
            Connection::Single(manager) => {
                for chunk in keys.chunks(SCAN_BATCH) {
                    let mut pipe = redis::pipe();
                    for key in chunk {
                        pipe.cmd("STRLEN").arg(key);
                    }
                    let mut c = manager.clone();
                    let batch: Vec<u64> =
                        with_timeout(label, Op::List, prefix, self.timeout_ms, async {
                            pipe.query_async(&mut c)
                                .await
                                .map_err(|e| StoreError::backend(label, Op::List, prefix, e))
                        })
                        .await?;
                    sizes.extend(batch);
                }
            }
            Connection::Cluster(_) => {
                for key in keys {
                    let mut command = redis::cmd("STRLEN");
                    command.arg(key);
                    sizes.push(self.query(Op::List, prefix, &command).await?);
                }
            }
        }
        Ok(sizes)
    }
}

#[async_trait]
impl ObjectStore for RedisStore {
    fn describe(&self) -> String {
        self.label.clone()
    }

    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        check_name(&self.label, name)?;
        let mut command = redis::cmd("SET");
        command.arg(self.key(name)).arg(bytes.as_ref());
        self.query::<()>(Op::Put, name, &command).await
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        check_name(&self.label, name)?;
        let mut command = redis::cmd("GET");
        command.arg(self.key(name));
        let value: Option<Vec<u8>> = self.query(Op::Get, name, &command).await?;
        Ok(value.map(Bytes::from))
    }

    /// `GETRANGE key first last` (both ends inclusive). GETRANGE answers an empty string
    /// alike for a missing key, a range past the end, and an empty object, so an empty
    /// answer (and `len == 0`, which GETRANGE cannot express) is settled with `EXISTS`. The
    /// two calls are not atomic: an object put or deleted between them is seen as the
    /// second call finds it (teemsfs writes a fragment name once, before anything reads it).
    async fn get_range(
        &self,
        name: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        check_name(&self.label, name)?;
        let key = self.key(name);
        if len > 0 {
            // GETRANGE offsets are signed, and negative ones count from the end: clamp into
            // i64, far beyond any Redis string (at most 512 MiB).
            let first = i64::try_from(start).unwrap_or(i64::MAX);
            let last = i64::try_from(start.saturating_add(len - 1)).unwrap_or(i64::MAX);
            let mut command = redis::cmd("GETRANGE");
            command.arg(&key).arg(first).arg(last);
            let value: Vec<u8> = self.query(Op::GetRange, name, &command).await?;
            if !value.is_empty() {
                // Clipped again, so a server answering more than asked cannot break the contract.
                return Ok(Some(slice_range(&Bytes::from(value), 0, len)));
            }
        }
        let mut command = redis::cmd("EXISTS");
        command.arg(&key);
        let exists: u64 = self.query(Op::GetRange, name, &command).await?;
        Ok((exists > 0).then(Bytes::new))
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name(&self.label, name)?;
        let mut command = redis::cmd("DEL");
        command.arg(self.key(name));
        self.query::<u64>(Op::Delete, name, &command)
            .await
            .map(|_| ())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        check_prefix(&self.label, prefix)?;
        // Neither the key prefix nor a valid name prefix contains a glob character, so
        // this pattern matches exactly the keys that start with them.
        let pattern = format!("{}*", self.key(prefix));
        let mut names = Vec::new();
        for target in self.scan_targets(prefix).await? {
            for key in self.scan_node(target, prefix, &pattern).await? {
                let Ok(key) = String::from_utf8(key) else {
                    continue;
                };
                if let Some(name) = key.strip_prefix(self.key_prefix.as_str())
                    && name.starts_with(prefix)
                    && super::validate_name(name).is_ok()
                {
                    names.push(name.to_owned());
                }
            }
        }
        // SCAN may return a key more than once (it guarantees at-least-once).
        names.sort();
        names.dedup();
        let keys: Vec<String> = names.iter().map(|n| self.key(n)).collect();
        let sizes = self.sizes(prefix, &keys).await?;
        Ok(names
            .into_iter()
            .zip(sizes)
            .map(|(name, size)| ObjectMeta {
                name,
                // A key deleted between SCAN and STRLEN reads as 0 bytes; listing is a
                // snapshot only for stores that offer one, and gc re-checks before deleting.
                size_bytes: size,
                modified: None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_the_label() {
        assert_eq!(
            redact("redis://user:secret@10.0.0.1:6379/0"),
            "10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "127.0.0.1:6379");
    }
}
