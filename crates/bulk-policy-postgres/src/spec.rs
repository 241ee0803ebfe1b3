//! [`PostgresSpec`]: where a store lives, as one string for a command line.

use std::fmt;
use std::str::FromStr;

use crate::error::{Chain, PostgresStoreError};

/// The schema a spec without `?schema=` names.
pub const DEFAULT_SCHEMA: &str = "bulkbench";

/// Longest schema name: PostgreSQL's 63-byte identifier limit, less the `__loading` suffix
/// of the schema a load fills before it takes the name.
pub const MAX_SCHEMA_LEN: usize = 63 - crate::load::STAGING_SUFFIX.len();

/// Where a store lives: a PostgreSQL URL and the schema holding this population, so several
/// populations share one database.
///
/// Written `postgresql://USER@HOST:PORT/DB?schema=S` (or `postgres://`); see
/// [`parse`](PostgresSpec::parse). Its [`Display`](fmt::Display) form parses back to an
/// equal spec, and so holds the password if the URL has one: do not log it.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSpec {
    /// The URL tokio-postgres connects to, without our `schema` parameter (other query
    /// parameters, such as `connect_timeout`, stay and are tokio-postgres's).
    pub url: String,
    /// The schema holding the store: a lowercase identifier of at most [`MAX_SCHEMA_LEN`]
    /// bytes, not starting with `pg_`, and not `public` or `information_schema`.
    pub schema: String,
}

impl fmt::Debug for PostgresSpec {
    // The URL may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSpec")
            .field("url", &"..")
            .field("schema", &self.schema)
            .finish()
    }
}

impl PostgresSpec {
    /// Parses `postgresql://USER@HOST:PORT/DB[?schema=S]` (also `postgres://`).
    ///
    /// The `schema` query parameter is ours: it is taken out before tokio-postgres checks
    /// the rest of the URL, and defaults to [`DEFAULT_SCHEMA`]. Schema names are checked
    /// with [`check_schema`], since they go into SQL.
    pub fn parse(s: &str) -> Result<PostgresSpec, PostgresStoreError> {
        let bad = |reason: String| PostgresStoreError::BadSpec { reason };
        if !(s.starts_with("postgresql://") || s.starts_with("postgres://")) {
            return Err(bad(
                "expected a URL starting with postgresql:// or postgres://".into(),
            ));
        }
        let (base, query) = match s.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (s, None),
        };
        let mut schema = None;
        let mut kept = Vec::new();
        for param in query.into_iter().flat_map(|q| q.split('&')) {
            if param.is_empty() {
                continue;
            }
            match param.split_once('=') {
                Some(("schema", value)) => {
                    if schema.replace(value).is_some() {
                        return Err(bad("the schema parameter is given twice".into()));
                    }
                }
                Some(_) => kept.push(param),
                None if param == "schema" => {
                    return Err(bad("the schema parameter has no value".into()));
                }
                None => kept.push(param),
            }
        }
        let schema = schema.unwrap_or(DEFAULT_SCHEMA);
        check_schema(schema)?;
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        // tokio-postgres's own checks, now, rather than at the first connect. Its message
        // does not repeat the URL (which may hold a password).
        tokio_postgres::Config::from_str(&url).map_err(|e| bad(Chain(&e).to_string()))?;
        Ok(PostgresSpec {
            url,
            schema: schema.to_string(),
        })
    }

    /// The tokio-postgres config of [`url`](PostgresSpec::url).
    pub(crate) fn config(&self) -> Result<tokio_postgres::Config, PostgresStoreError> {
        tokio_postgres::Config::from_str(&self.url).map_err(|e| PostgresStoreError::BadSpec {
            reason: Chain(&e).to_string(),
        })
    }
}

impl FromStr for PostgresSpec {
    type Err = PostgresStoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PostgresSpec::parse(s)
    }
}

impl fmt::Display for PostgresSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        write!(f, "{}{separator}schema={}", self.url, self.schema)
    }
}

/// Checks a schema name: `[a-z_][a-z0-9_]*`, at most [`MAX_SCHEMA_LEN`] bytes, not
/// PostgreSQL's own (`pg_*`, `information_schema`) and not `public`, which holds other
/// things (a load replaces its schema whole).
///
/// Names are lowercase so that they need no quoting in `psql` either.
pub fn check_schema(schema: &str) -> Result<(), PostgresStoreError> {
    let bad = |reason| PostgresStoreError::BadSchema {
        schema: schema.to_string(),
        reason,
    };
    let mut bytes = schema.bytes();
    match bytes.next() {
        None => return Err(bad("it is empty")),
        Some(b'a'..=b'z' | b'_') => {}
        Some(_) => return Err(bad("it must start with a lowercase letter or '_'")),
    }
    if !bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_')) {
        return Err(bad("only lowercase letters, digits and '_' are allowed"));
    }
    if schema.len() > MAX_SCHEMA_LEN {
        return Err(bad("it is longer than 54 bytes"));
    }
    if schema.starts_with("pg_") || schema == "information_schema" {
        return Err(bad("it is reserved by PostgreSQL"));
    }
    if schema == "public" {
        return Err(bad(
            "a load replaces its schema whole: give the store a schema of its own",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_limit_in_the_message_is_the_constant() {
        assert_eq!(MAX_SCHEMA_LEN, 54);
    }
}
