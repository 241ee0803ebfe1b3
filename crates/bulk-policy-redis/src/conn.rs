//! One handle over the two kinds of connection: a single server's `ConnectionManager` or a
//! cluster's `ClusterConnection`, both multiplexed and cheap to clone.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, Value};

use crate::{RedisSpec, RedisStoreError};

/// A connection to the store's server(s). Clones share the underlying connections: every
/// lookup of a server's connections goes through one multiplexed TCP connection per Redis
/// node, its requests pipelined on the wire.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server. The manager reconnects after an I/O error; requests made while the
    /// server is down fail (after the response timeout at worst), they never wait for it.
    Single(ConnectionManager),
    /// A Redis Cluster: the client keeps the slot map, one multiplexed connection per node,
    /// and follows MOVED and ASK redirections itself.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects to `spec`'s server(s). `timeout` bounds each connection attempt and each
    /// response; `what` names the operation in errors.
    pub(crate) async fn open(
        spec: &RedisSpec,
        timeout: Duration,
        what: &'static str,
    ) -> Result<Conn, RedisStoreError> {
        let target = spec.to_string();
        let failed = |source| RedisStoreError::Redis {
            operation: what,
            target: target.clone(),
            source,
        };
        let connect = async {
            if spec.cluster {
                let client = ClusterClientBuilder::new(spec.nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()
                    .map_err(failed)?;
                let conn = client.get_async_connection().await.map_err(failed)?;
                Ok(Conn::Cluster(conn))
            } else {
                let [url] = spec.nodes.as_slice() else {
                    return Err(RedisStoreError::Spec {
                        spec: target.clone(),
                        reason: "a single-server spec names exactly one server".into(),
                    });
                };
                let client = redis::Client::open(url.as_str()).map_err(failed)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // Reconnecting happens in the background after a failure; a few
                    // attempts at startup, then the caller's error.
                    .set_number_of_retries(2)
                    .set_max_delay(timeout);
                let conn = client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(failed)?;
                Ok(Conn::Single(conn))
            }
        };
        // The client's own timeouts bound each attempt; this bounds them all together.
        within(timeout * 4, what, &target, connect).await?
    }

    /// Sends `pipeline` and returns one value per command. In a cluster, every command of
    /// the pipeline must be for keys of one slot (the client refuses others).
    pub(crate) async fn pipeline(&self, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
        match self {
            Conn::Single(conn) => pipeline.query_async(&mut conn.clone()).await,
            Conn::Cluster(conn) => pipeline.query_async(&mut conn.clone()).await,
        }
    }

    /// Sends one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(conn) => cmd.query_async(&mut conn.clone()).await,
            Conn::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
        }
    }

    /// Runs `script` with `keys` (of one slot) and `args`.
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> RedisResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        match self {
            Conn::Single(conn) => invocation.invoke_async(&mut conn.clone()).await,
            Conn::Cluster(conn) => invocation.invoke_async(&mut conn.clone()).await,
        }
    }
}

/// `future`, or a [`RedisStoreError::Timeout`] after `timeout`.
pub(crate) async fn within<T>(
    timeout: Duration,
    operation: &'static str,
    target: &str,
    future: impl Future<Output = T>,
) -> Result<T, RedisStoreError> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| RedisStoreError::Timeout {
            operation,
            target: target.to_string(),
            after: timeout,
        })
}
