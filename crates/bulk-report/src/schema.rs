//! Validation of JSON documents against the committed JSON Schema.
//!
//! The schema uses a small subset of JSON Schema 2020-12: `type` (a name or a list),
//! `properties`, `required`, `additionalProperties` (false or a schema), `items`, `enum`,
//! `minimum` and `maximum`. This validator implements exactly that subset, and refuses a schema that
//! uses any other keyword, so the schema cannot grow a rule that is silently not checked.

use serde_json::Value;

/// Keywords this validator understands; annotations are accepted and ignored.
const KEYWORDS: [&str; 8] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "maximum",
];
const ANNOTATIONS: [&str; 4] = ["$schema", "$id", "title", "description"];

/// Validates `document` against `schema`; returns every violation, each with its JSON path.
pub fn validate(schema: &Value, document: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check(schema, document, "$", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_u64() || value.is_i64(),
        _ => false,
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        errors.push(format!("{path}: schema is not an object"));
        return;
    };
    for key in schema.keys() {
        if !KEYWORDS.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
            errors.push(format!("{path}: schema keyword {key:?} is not supported"));
        }
    }
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !names.iter().any(|name| type_matches(name, value)) {
            errors.push(format!(
                "{path}: expected {}, found {value}",
                names.join(" or ")
            ));
            return;
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let (Some(minimum), Some(number)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && number < minimum
    {
        errors.push(format!("{path}: {number} is below the minimum {minimum}"));
    }
    if let (Some(maximum), Some(number)) = (
        schema.get("maximum").and_then(Value::as_f64),
        value.as_f64(),
    ) && number > maximum
    {
        errors.push(format!("{path}: {number} is above the maximum {maximum}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    errors.push(format!("{path}: missing required property {name:?}"));
                }
            }
        }
        for (name, item) in object {
            let child = format!("{path}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check(sub, item, &child, errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{path}: unexpected property {name:?}"));
                    }
                    Some(sub @ Value::Object(_)) => check(sub, item, &child, errors),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(items, item, &format!("{path}[{i}]"), errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_rule_rejects_what_it_should() {
        let schema = json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 0},
                "share": {"type": "number", "minimum": 0, "maximum": 1},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "maybe": {"type": ["string", "null"]},
                "list": {"type": "array", "items": {"type": "number"}},
                "map": {"type": "object", "additionalProperties": {"type": "integer"}}
            },
            "required": ["n", "kind"],
            "additionalProperties": false
        });
        let good = json!({"n": 1, "kind": "a", "maybe": null, "list": [1.5], "map": {"x": 2}});
        assert_eq!(validate(&schema, &good), Ok(()));
        let cases = [
            (json!({"kind": "a"}), "missing required property \"n\""),
            (json!({"n": -1, "kind": "a"}), "below the minimum"),
            (
                json!({"n": 1, "kind": "a", "share": 1.5}),
                "above the maximum",
            ),
            (json!({"n": 1.5, "kind": "a"}), "expected integer"),
            (json!({"n": 1, "kind": "c"}), "is not one of"),
            (
                json!({"n": 1, "kind": "a", "extra": 1}),
                "unexpected property \"extra\"",
            ),
            (
                json!({"n": 1, "kind": "a", "maybe": 3}),
                "expected string or null",
            ),
            (
                json!({"n": 1, "kind": "a", "list": ["x"]}),
                "$.list[0]: expected number",
            ),
            (
                json!({"n": 1, "kind": "a", "map": {"x": "y"}}),
                "$.map.x: expected integer",
            ),
            (json!([1]), "expected object"),
        ];
        for (document, needle) in cases {
            let errors = validate(&schema, &document).expect_err("must be rejected");
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "{document}: {errors:?}"
            );
        }
    }

    #[test]
    fn unknown_keywords_are_refused_not_ignored() {
        let schema = json!({"type": "string", "pattern": "^a"});
        let errors = validate(&schema, &json!("b")).unwrap_err();
        assert!(errors[0].contains("\"pattern\" is not supported"));
    }

    #[test]
    fn the_committed_summary_schema_uses_only_supported_keywords() {
        let schema: Value = serde_json::from_str(crate::summary::SCHEMA).unwrap();
        // An empty object fails only on content, never on an unsupported keyword.
        let errors = validate(&schema, &json!({})).unwrap_err();
        assert!(
            errors.iter().all(|e| !e.contains("not supported")),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.contains("schema_version")));
    }
}
