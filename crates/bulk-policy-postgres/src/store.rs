//! The store's layout in SQL: table definitions, the statements the backend prepares, and
//! how regimes, preferences and the meta table are encoded (the crate docs describe it).

use bulk_policy::NormalizeConfig;
use tokio_postgres::GenericClient;

use crate::error::PostgresStoreError;

/// The format tag in the `meta` table; a store with another tag is refused. Bump it when
/// the layout changes.
pub const FORMAT: &str = "bulkbench-postgres-1";

/// What every format tag of this crate starts with: a schema whose meta says otherwise is
/// not ours.
const FORMAT_FAMILY: &str = "bulkbench-postgres-";

/// `"schema"`: names are checked identifiers (`check_schema`), quoted all the same.
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Creates the tables of a store in `schema` (which exists and is empty), without their
/// primary keys: a load adds those after COPY, which builds each index in one sort.
pub(crate) fn create_tables(schema: &str) -> String {
    let s = quoted(schema);
    format!(
        "CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL);
         CREATE TABLE {s}.domains (
             domain text COLLATE \"C\" NOT NULL,
             regime \"char\" NOT NULL CHECK (regime IN ('i', 'o')));
         CREATE TABLE {s}.mailboxes (
             address text COLLATE \"C\" NOT NULL,
             preference \"char\" NOT NULL CHECK (preference IN ('i', 'o', 'd')));"
    )
}

/// Indexes and analyzes the tables of a freshly copied store.
pub(crate) fn index_tables(schema: &str) -> String {
    let s = quoted(schema);
    format!(
        "ALTER TABLE {s}.domains ADD PRIMARY KEY (domain);
         ALTER TABLE {s}.mailboxes ADD PRIMARY KEY (address);
         ANALYZE {s}.domains, {s}.mailboxes;"
    )
}

/// The lookup of one batch: `$1` the normalized addresses (NULL for one that can be no
/// mailbox), `$2` their domains; one row per key, in batch order: its position (from 1),
/// the domain's regime and the mailbox's preference, each NULL when there is none.
pub(crate) fn lookup_sql(schema: &str) -> String {
    let s = quoted(schema);
    format!(
        "SELECT k.n, d.regime, m.preference
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(address, domain, n)
         LEFT JOIN {s}.domains AS d ON d.domain = k.domain
         LEFT JOIN {s}.mailboxes AS m ON m.address = k.address
         ORDER BY k.n"
    )
}

/// The preference of one normalized address (`$1`).
pub(crate) fn get_sql(schema: &str) -> String {
    let s = quoted(schema);
    format!("SELECT preference FROM {s}.mailboxes WHERE address = $1")
}

/// Sets the preference (`$2`) of a normalized address (`$1`) if its domain (`$3`) is
/// served, in one statement so no concurrent change slips between check and write; it
/// touches no row when the domain is not served.
pub(crate) fn set_sql(schema: &str) -> String {
    let s = quoted(schema);
    format!(
        "INSERT INTO {s}.mailboxes (address, preference)
         SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM {s}.domains WHERE domain = $3)
         ON CONFLICT (address) DO UPDATE SET preference = excluded.preference"
    )
}

/// The rows of the `meta` table for a store normalized with `normalize`.
pub(crate) fn meta_rows(normalize: NormalizeConfig) -> [(&'static str, String); 3] {
    [
        ("format", FORMAT.to_string()),
        ("fold_local_case", normalize.fold_local_case.to_string()),
        (
            "recipient_delimiter",
            normalize
                .recipient_delimiter
                .map_or_else(|| "none".to_string(), |b| b.to_string()),
        ),
    ]
}

/// What a schema holds, as far as a load or a connect is concerned.
pub(crate) enum Found {
    /// No such schema, or an empty one.
    Nothing,
    /// A store of this crate's current format, normalized so.
    Store(NormalizeConfig),
    /// A store of another format version of this crate.
    OtherVersion(String),
}

/// Looks at `schema`: a store of ours (of this format or another), nothing, or something
/// else (an error naming what).
pub(crate) async fn inspect(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Found, PostgresStoreError> {
    let db = |source| PostgresStoreError::Database {
        operation: "inspect schema",
        schema: schema.to_string(),
        source,
    };
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1::text),
                    to_regclass(quote_ident($1) || '.meta') IS NOT NULL,
                    (SELECT string_agg(relname, ', ' ORDER BY relname) FROM pg_class
                     WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)
                       AND relkind IN ('r', 'v', 'm', 'p', 'f'))",
            &[&schema],
        )
        .await
        .map_err(db)?;
    let (exists, has_meta): (bool, bool) = (row.get(0), row.get(1));
    let relations: Option<String> = row.get(2);
    if !exists {
        return Ok(Found::Nothing);
    }
    if !has_meta {
        return match relations {
            None => Ok(Found::Nothing),
            Some(found) => Err(PostgresStoreError::Foreign {
                schema: schema.to_string(),
                found: format!("tables {found}"),
            }),
        };
    }
    let rows = client
        .query(
            &format!("SELECT key, value FROM {}.meta", quoted(schema)),
            &[],
        )
        .await
        .map_err(db)?;
    let meta: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let value = |key: &str| meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    match value("format") {
        Some(FORMAT) => parse_normalize(schema, value).map(Found::Store),
        Some(other) if other.starts_with(FORMAT_FAMILY) => Ok(Found::OtherVersion(other.into())),
        other => Err(PostgresStoreError::Foreign {
            schema: schema.to_string(),
            found: format!("a meta table whose format is {other:?}"),
        }),
    }
}

/// The normalization config recorded in a store's meta.
fn parse_normalize<'a>(
    schema: &str,
    value: impl Fn(&str) -> Option<&'a str>,
) -> Result<NormalizeConfig, PostgresStoreError> {
    let corrupt = |key: &str, found: Option<&str>| PostgresStoreError::Corrupt {
        schema: schema.to_string(),
        what: format!("meta {key} is {found:?}"),
    };
    let fold_local_case = match value("fold_local_case") {
        Some("true") => true,
        Some("false") => false,
        other => return Err(corrupt("fold_local_case", other)),
    };
    let recipient_delimiter = match value("recipient_delimiter") {
        Some("none") => None,
        Some(byte) => Some(
            byte.parse::<u8>()
                .map_err(|_| corrupt("recipient_delimiter", Some(byte)))?,
        ),
        None => return Err(corrupt("recipient_delimiter", None)),
    };
    Ok(NormalizeConfig {
        fold_local_case,
        recipient_delimiter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        for normalize in [
            NormalizeConfig::default(),
            NormalizeConfig {
                fold_local_case: false,
                recipient_delimiter: None,
            },
            NormalizeConfig {
                fold_local_case: true,
                recipient_delimiter: Some(b'-'),
            },
        ] {
            let rows = meta_rows(normalize);
            let value = |key: &str| {
                rows.iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(value("format"), Some(FORMAT));
            assert_eq!(parse_normalize("s", value).unwrap(), normalize);
        }
    }
}
