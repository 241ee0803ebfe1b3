//! Specs: what parses into what, what is refused and why, and that a spec displays as
//! text that parses back into it.

use bulk_policy_redis::{RedisSpec, RedisStoreError};

fn spec(nodes: &[&str], cluster: bool, prefix: &str) -> RedisSpec {
    RedisSpec {
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        cluster,
        prefix: prefix.to_string(),
    }
}

#[test]
fn single_specs_parse() {
    let cases = [
        (
            "redis://127.0.0.1:6379",
            spec(&["redis://127.0.0.1:6379"], false, "bulkbench"),
        ),
        (
            "redis://127.0.0.1:6379/3?prefix=run-1",
            spec(&["redis://127.0.0.1:6379/3"], false, "run-1"),
        ),
        (
            "localhost:7000",
            spec(&["redis://localhost:7000"], false, "bulkbench"),
        ),
        // Other query parameters are the client's, and stay.
        (
            "redis://127.0.0.1:6379/?protocol=resp3&prefix=a.b:c_d",
            spec(
                &["redis://127.0.0.1:6379/?protocol=resp3"],
                false,
                "a.b:c_d",
            ),
        ),
        (
            "redis://127.0.0.1:6379?prefix=p&protocol=resp3",
            spec(&["redis://127.0.0.1:6379?protocol=resp3"], false, "p"),
        ),
    ];
    for (text, expected) in cases {
        let parsed = RedisSpec::parse_single(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed, expected, "{text}");
    }
}

#[test]
fn cluster_specs_parse() {
    let cases = [
        (
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001?prefix=x",
            spec(
                &["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"],
                true,
                "x",
            ),
        ),
        (
            "127.0.0.1:7000, 127.0.0.1:7001,127.0.0.1:7002",
            spec(
                &[
                    "redis://127.0.0.1:7000",
                    "redis://127.0.0.1:7001",
                    "redis://127.0.0.1:7002",
                ],
                true,
                "bulkbench",
            ),
        ),
        (
            "redis://127.0.0.1:7000?prefix=first,redis://127.0.0.1:7001",
            spec(
                &["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"],
                true,
                "first",
            ),
        ),
        (
            "redis://127.0.0.1:7000",
            spec(&["redis://127.0.0.1:7000"], true, "bulkbench"),
        ),
    ];
    for (text, expected) in cases {
        let parsed = RedisSpec::parse_cluster(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed, expected, "{text}");
    }
}

#[test]
fn bad_specs_are_refused_with_the_reason() {
    let single = [
        ("", "expected redis://HOST:PORT"),
        ("redis://a:1,redis://b:2", "a comma separates cluster nodes"),
        (
            "rediss://127.0.0.1:6379",
            "scheme `rediss://` is not supported",
        ),
        ("redis+unix:///tmp/r.sock", "scheme `redis+unix://`"),
        ("redis://127.0.0.1:6379?prefix=", "the prefix is empty"),
        ("redis://127.0.0.1:6379?prefix", "prefix= needs a value"),
        (
            "redis://127.0.0.1:6379?prefix={x}",
            "character '{' is not allowed",
        ),
        (
            "redis://127.0.0.1:6379?prefix=a%20b",
            "character '%' is not allowed",
        ),
        (
            "redis://127.0.0.1:6379?prefix=a&prefix=b",
            "prefix given twice",
        ),
        ("redis://127.0.0.1:notaport", "redis://127.0.0.1:notaport"),
    ];
    for (text, fragment) in single {
        check_refused(text, RedisSpec::parse_single(text), fragment);
    }
    let long = format!("redis://h:1?prefix={}", "p".repeat(65));
    check_refused(&long, RedisSpec::parse_single(&long), "the limit is 64");
    let cluster = [
        ("redis://a:1,,redis://b:2", "empty node"),
        (
            "redis://a:1?prefix=x,redis://b:2?prefix=y",
            "prefix given twice",
        ),
        (
            "redis://a:1/2,redis://b:2",
            "Redis Cluster has only database 0",
        ),
        ("redis://a:1,rediss://b:2", "scheme `rediss://`"),
    ];
    for (text, fragment) in cluster {
        check_refused(text, RedisSpec::parse_cluster(text), fragment);
    }
}

fn check_refused(text: &str, result: Result<RedisSpec, RedisStoreError>, fragment: &str) {
    match result {
        Ok(spec) => panic!("{text:?} parsed as {spec:?}"),
        Err(e) => {
            let message = e.to_string();
            assert!(
                matches!(e, RedisStoreError::Spec { .. }),
                "{text:?}: {message}"
            );
            assert!(
                message.contains(fragment),
                "{text:?}: `{message}` lacks `{fragment}`"
            );
        }
    }
}

#[test]
fn specs_display_as_text_that_parses_back() {
    let singles = [
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1:6379/5?prefix=p-1",
        "redis://127.0.0.1:6379/?protocol=resp3&prefix=q",
        "localhost:1",
    ];
    for text in singles {
        let parsed = RedisSpec::parse_single(text).unwrap();
        let shown = parsed.to_string();
        assert_eq!(RedisSpec::parse_single(&shown).unwrap(), parsed, "{shown}");
    }
    let clusters = [
        "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002?prefix=c",
        "redis://127.0.0.1:7000?protocol=resp3,redis://127.0.0.1:7001",
    ];
    for text in clusters {
        let parsed = RedisSpec::parse_cluster(text).unwrap();
        let shown = parsed.to_string();
        assert_eq!(RedisSpec::parse_cluster(&shown).unwrap(), parsed, "{shown}");
    }
    assert_eq!(
        spec(&["redis://h:1", "redis://h:2"], true, "z").to_string(),
        "redis://h:1,redis://h:2?prefix=z"
    );
}

/// The futures of the public API are `Send`, so a caller may spawn them (checked at
/// compile time; nothing is polled).
#[test]
fn futures_are_send() {
    use bulk_policy::{Population, Preference, Regime};
    use bulk_policy_redis::{RedisBackend, clear, load};

    fn send<T: Send>(_: &T) {}
    fn backend_futures(backend: &RedisBackend) {
        send(&backend.get("a@b"));
        send(&backend.set("a@b", Preference::In));
        send(&backend.set_regime("b", Regime::OptIn));
        send(&backend.regime("b"));
    }
    let _ = backend_futures;
    let spec = RedisSpec::parse_single("redis://127.0.0.1:1").unwrap();
    let population = Population::default();
    send(&load(&spec, &population, |_| {}));
    send(&clear(&spec));
    send(&RedisBackend::connect(&spec));
}
