//! [`RedisSpec`]: where a store lives, parsed from and displayed as `redis://` URLs.

use std::fmt;

use crate::RedisStoreError;

/// The prefix used when a spec names none.
pub const DEFAULT_PREFIX: &str = "bulkbench";

/// Longest prefix accepted.
pub const MAX_PREFIX_LEN: usize = 64;

/// Where the store lives: one Redis, or a Redis Cluster (its seed nodes), and the key
/// prefix, so several populations share one server.
///
/// Written `redis://HOST:PORT[/DB][?prefix=P]` for one server and
/// `redis://H:P1,redis://H:P2,...[?prefix=P]` (the `redis://` may be left out) for a
/// cluster. The `prefix` query parameter is this crate's: it is taken out of the URL before
/// the URL reaches the Redis client; other parameters (`protocol=resp3`) are left to the
/// client. A prefix is 1 to [`MAX_PREFIX_LEN`] characters among `A-Z a-z 0-9 . _ - :`, so
/// it needs no escaping in a URL and cannot hold a `{` that would change which part of a
/// key Redis Cluster hashes. [`Display`](fmt::Display) writes a spec back in the form that
/// [`parse_single`](Self::parse_single) or [`parse_cluster`](Self::parse_cluster) reads.
///
/// ```
/// use bulk_policy_redis::RedisSpec;
///
/// let spec = RedisSpec::parse_single("redis://127.0.0.1:6379/2?prefix=run-7")?;
/// assert_eq!((spec.nodes.as_slice(), spec.prefix.as_str()), (&["redis://127.0.0.1:6379/2".to_string()][..], "run-7"));
/// assert_eq!(spec.to_string(), "redis://127.0.0.1:6379/2?prefix=run-7");
///
/// let cluster = RedisSpec::parse_cluster("127.0.0.1:7000,127.0.0.1:7001")?;
/// assert!(cluster.cluster);
/// assert_eq!(cluster.prefix, "bulkbench");
/// assert_eq!(RedisSpec::parse_cluster(&cluster.to_string())?, cluster);
/// # Ok::<(), bulk_policy_redis::RedisStoreError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSpec {
    /// `redis://` URLs: the server, or the cluster's seed nodes.
    pub nodes: Vec<String>,
    /// A Redis Cluster rather than one server.
    pub cluster: bool,
    /// The prefix of every key of the store.
    pub prefix: String,
}

impl RedisSpec {
    /// One server: `redis://HOST:PORT[/DB][?prefix=P]` (or `HOST:PORT...`).
    pub fn parse_single(s: &str) -> Result<RedisSpec, RedisStoreError> {
        let bad = |reason: &str| RedisStoreError::Spec {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        if s.contains(',') {
            return Err(bad(
                "a comma separates cluster nodes: give one server, or use a cluster spec",
            ));
        }
        let (nodes, prefix) = parse_nodes(s)?;
        Ok(RedisSpec {
            nodes,
            cluster: false,
            prefix: prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string()),
        })
    }

    /// A Redis Cluster: its seed nodes, comma-separated, each `redis://HOST:PORT` (or
    /// `HOST:PORT`), the `?prefix=P` after any of them (once). Redis Cluster has only
    /// database 0, so a node naming another is refused.
    pub fn parse_cluster(s: &str) -> Result<RedisSpec, RedisStoreError> {
        let (nodes, prefix) = parse_nodes(s)?;
        for node in &nodes {
            let info = redis::IntoConnectionInfo::into_connection_info(node.as_str());
            if info.is_ok_and(|info| info.redis_settings().db() != 0) {
                return Err(RedisStoreError::Spec {
                    spec: s.to_string(),
                    reason: format!("{node}: Redis Cluster has only database 0"),
                });
            }
        }
        Ok(RedisSpec {
            nodes,
            cluster: true,
            prefix: prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string()),
        })
    }
}

impl fmt::Display for RedisSpec {
    /// The nodes comma-separated, `prefix=P` added to the last one's query.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (last, rest) = match self.nodes.split_last() {
            Some(split) => split,
            None => return write!(f, "?prefix={}", self.prefix),
        };
        for node in rest {
            write!(f, "{node},")?;
        }
        let separator = if last.contains('?') { '&' } else { '?' };
        write!(f, "{last}{separator}prefix={}", self.prefix)
    }
}

/// The nodes of a comma-separated list, each given `redis://` if it had no scheme and
/// checked by the Redis client, and the prefix if one of them carried `prefix=`.
fn parse_nodes(s: &str) -> Result<(Vec<String>, Option<String>), RedisStoreError> {
    let bad = |reason: String| RedisStoreError::Spec {
        spec: s.to_string(),
        reason,
    };
    let mut nodes = Vec::new();
    let mut prefix = None;
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad("empty node (expected redis://HOST:PORT)".into()));
        }
        let url = match part.split_once("://") {
            Some(("redis", _)) => part.to_string(),
            Some((scheme, _)) => {
                return Err(bad(format!(
                    "scheme `{scheme}://` is not supported (only redis://: no TLS, no Unix \
                     sockets)"
                )));
            }
            None => format!("redis://{part}"),
        };
        let (url, found) = take_prefix(&url).map_err(bad)?;
        if let Some(found) = found {
            if prefix.is_some() {
                return Err(bad("prefix given twice".into()));
            }
            prefix = Some(found);
        }
        redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|e| bad(format!("{url}: {e}")))?;
        nodes.push(url);
    }
    Ok((nodes, prefix))
}

/// `url` without its `prefix=` query parameter, and that parameter's checked value.
fn take_prefix(url: &str) -> Result<(String, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut prefix = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("prefix=") {
            Some(value) => {
                if prefix.is_some() {
                    return Err("prefix given twice".into());
                }
                check_prefix(value)?;
                prefix = Some(value.to_string());
            }
            None if pair == "prefix" => return Err("prefix= needs a value".into()),
            None => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, prefix))
}

/// Refuses a prefix that is empty, too long, or holds a character outside
/// `A-Z a-z 0-9 . _ - :`.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("the prefix is empty".into());
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "the prefix is {} characters long, the limit is {MAX_PREFIX_LEN}",
            prefix.len()
        ));
    }
    match prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
    {
        Some(c) => Err(format!(
            "character {c:?} is not allowed in a prefix (A-Z a-z 0-9 . _ - : only)"
        )),
        None => Ok(()),
    }
}
