//! Store specs: parsing, round trips through `Display`, refused schema names. No server.

use bulk_policy_postgres::{DEFAULT_SCHEMA, MAX_SCHEMA_LEN, PostgresSpec, PostgresStoreError};

#[test]
fn specs_parse_and_round_trip() {
    let cases = [
        (
            "postgresql://bulk@127.0.0.1:5432/postgres",
            "postgresql://bulk@127.0.0.1:5432/postgres",
            DEFAULT_SCHEMA,
        ),
        (
            "postgres://bulk@localhost/db?schema=pop_1",
            "postgres://bulk@localhost/db",
            "pop_1",
        ),
        (
            "postgresql://u:secret@h:1/d?connect_timeout=3&schema=s&application_name=x",
            "postgresql://u:secret@h:1/d?connect_timeout=3&application_name=x",
            "s",
        ),
        ("postgresql://h/d?", "postgresql://h/d", DEFAULT_SCHEMA),
    ];
    for (text, url, schema) in cases {
        let spec = PostgresSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            (spec.url.as_str(), spec.schema.as_str()),
            (url, schema),
            "{text}"
        );
        let again = PostgresSpec::parse(&spec.to_string()).expect("Display parses");
        assert_eq!(again, spec, "{text} -> {spec}");
        assert_eq!(again.to_string(), spec.to_string());
        // The password stays out of Debug output.
        assert!(!format!("{spec:?}").contains("secret"));
    }
    assert_eq!(
        PostgresSpec::parse("postgresql://h/d?schema=x")
            .unwrap()
            .to_string(),
        "postgresql://h/d?schema=x"
    );
}

#[test]
fn bad_schema_names_are_refused() {
    let long = "a".repeat(MAX_SCHEMA_LEN + 1);
    let just_right = "a".repeat(MAX_SCHEMA_LEN);
    assert!(PostgresSpec::parse(&format!("postgresql://h/d?schema={just_right}")).is_ok());
    for schema in [
        "",
        "Upper",
        "1digit",
        "has-dash",
        "semi;colon",
        "quote\"",
        "sp ace",
        "x%20y",
        "pg_catalog",
        "pg_mine",
        "information_schema",
        "public",
        "é",
        long.as_str(),
    ] {
        let text = format!("postgresql://h/d?schema={schema}");
        match PostgresSpec::parse(&text) {
            Err(PostgresStoreError::BadSchema { schema: named, .. }) => assert_eq!(named, schema),
            other => panic!("{text}: expected BadSchema, got {other:?}"),
        }
    }
}

#[test]
fn bad_specs_are_refused() {
    for text in [
        "",
        "bulk@127.0.0.1/postgres",
        "host=127.0.0.1 user=bulk",
        "lmdb:/tmp/x",
        "postgresql://h/d?schema",
        "postgresql://h/d?schema=a&schema=b",
        "postgresql://h:notaport/d",
        "postgresql://h/d?bogus_option=1",
    ] {
        match PostgresSpec::parse(text) {
            Err(PostgresStoreError::BadSpec { reason }) => {
                assert!(!reason.is_empty(), "{text}");
            }
            other => panic!("{text:?}: expected BadSpec, got {other:?}"),
        }
    }
}
