//! A small checker of the JSON Schema subset utoipa emits (types, properties, required,
//! additionalProperties, items, prefixItems, oneOf, allOf, enum, pattern, `$ref`), for
//! checking the served OpenAPI document against its own examples and real responses.

#![allow(dead_code, unreachable_pub)]
use serde_json::Value;

/// Resolves `#/components/schemas/X`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            let target = &doc["components"]["schemas"][name];
            assert!(!target.is_null(), "dangling $ref {r}");
            resolve(doc, target)
        }
        None => schema,
    }
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type {other}"),
    }
}

/// Errors of `v` against `schema`, as `path: what` lines (empty: valid).
pub fn validate(doc: &Value, schema: &Value, v: &Value, at: &str) -> Vec<String> {
    let s = resolve(doc, schema);
    let mut errs = Vec::new();
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one
            .iter()
            .filter(|alt| validate(doc, alt, v, at).is_empty())
            .count();
        if n != 1 {
            errs.push(format!("{at}: matches {n} of oneOf"));
        }
    }
    for alt in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        errs.extend(validate(doc, alt, v, at));
    }
    match &s["type"] {
        Value::String(t) if !type_ok(t, v) => errs.push(format!("{at}: not {t}: {v}")),
        Value::Array(ts) if !ts.iter().any(|t| type_ok(t.as_str().unwrap_or(""), v)) => {
            errs.push(format!("{at}: none of {ts:?}: {v}"));
        }
        _ => {}
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array)
        && !values.contains(v)
    {
        errs.push(format!("{at}: {v} not in {values:?}"));
    }
    if let (Some(p), Some(text)) = (s.get("pattern").and_then(Value::as_str), v.as_str()) {
        let re = regex::Regex::new(p).unwrap_or_else(|e| panic!("{at}: pattern {p}: {e}"));
        if !re.is_match(text) {
            errs.push(format!("{at}: {text:?} does not match {p}"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                errs.push(format!("{at}: missing required {r}"));
            }
        }
        for (k, val) in obj {
            let sub = props.and_then(|p| p.get(k));
            match (sub, s.get("additionalProperties")) {
                (Some(sub), _) => errs.extend(validate(doc, sub, val, &format!("{at}.{k}"))),
                (None, Some(Value::Bool(false))) => {
                    errs.push(format!("{at}: unexpected property {k}"));
                }
                (None, Some(extra @ Value::Object(_))) => {
                    errs.extend(validate(doc, extra, val, &format!("{at}.{k}")));
                }
                (None, _) if props.is_some() => {
                    errs.push(format!("{at}: property {k} not in the schema"));
                }
                (None, _) => {}
            }
        }
    }
    if let Some(items) = v.as_array() {
        let prefix = s.get("prefixItems").and_then(Value::as_array);
        for (i, item) in items.iter().enumerate() {
            let sub = prefix
                .and_then(|p| p.get(i))
                .or_else(|| s.get("items").filter(|i| i.is_object()));
            if let Some(sub) = sub {
                errs.extend(validate(doc, sub, item, &format!("{at}[{i}]")));
            }
        }
        if let Some(p) = prefix
            && s.get("items") == Some(&Value::Bool(false))
            && items.len() != p.len()
        {
            errs.push(format!("{at}: {} items, tuple of {}", items.len(), p.len()));
        }
    }
    errs
}

/// Whether `schema` (after `$ref`s) says nothing about its value's shape: `{}`, or an
/// object without properties or `additionalProperties`.
pub fn free_form(doc: &Value, schema: &Value) -> bool {
    let s = resolve(doc, schema);
    let composed = ["oneOf", "anyOf", "allOf"]
        .iter()
        .any(|k| s.get(k).is_some());
    if composed {
        return false;
    }
    match &s["type"] {
        Value::Null => s.get("enum").is_none() && s.get("const").is_none(),
        t => {
            let object =
                t == "object" || t.as_array().is_some_and(|a| a.contains(&"object".into()));
            object
                && s.get("properties").is_none()
                && !s.get("additionalProperties").is_some_and(Value::is_object)
        }
    }
}

/// Every schema reachable from `schema`, depth first (each component once).
pub fn walk<'a>(
    doc: &'a Value,
    schema: &'a Value,
    seen: &mut std::collections::BTreeSet<String>,
    out: &mut Vec<(String, &'a Value)>,
    at: &str,
) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        if !seen.insert(r.to_owned()) {
            return;
        }
        let name = r.trim_start_matches("#/components/schemas/");
        walk(doc, &doc["components"]["schemas"][name], seen, out, name);
        return;
    }
    out.push((at.to_owned(), schema));
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            walk(doc, p, seen, out, &format!("{at}.{k}"));
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = schema.get(key).filter(|s| s.is_object()) {
            walk(doc, sub, seen, out, &format!("{at}[]"));
        }
    }
    for key in ["prefixItems", "oneOf", "anyOf", "allOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(doc, sub, seen, out, at);
        }
    }
}

/// Panics unless `body` is valid against the documented `200` JSON response of `method`
/// `path` (as the document spells them: `get`, `/api/v1/status/agents/{id}`).
pub fn assert_response(doc: &Value, method: &str, path: &str, body: &Value) {
    let schema =
        &doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path}: no documented 200 JSON schema"
    );
    let errs = validate(doc, schema, body, "body");
    assert!(
        errs.is_empty(),
        "{method} {path}: the response does not match the document:\n{}\n{body}",
        errs.join("\n")
    );
}

/// Every JSON response schema of every operation that says nothing about its shape (`{}`
/// or a property-less object anywhere inside), except the document's own.
pub fn free_form_responses(doc: &Value) -> Vec<String> {
    let mut loose = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if path == "/api/v1/openapi.json" {
            continue;
        }
        for (method, op) in item.as_object().expect("path item") {
            for (status, r) in op["responses"].as_object().expect("responses") {
                let Some(schema) = r["content"].get("application/json").map(|c| &c["schema"])
                else {
                    continue;
                };
                let mut seen = std::collections::BTreeSet::new();
                let mut all = Vec::new();
                walk(doc, schema, &mut seen, &mut all, "body");
                for (at, s) in all {
                    if free_form(doc, s) {
                        loose.push(format!("{method} {path} {status}: {at} is {s}"));
                    }
                }
            }
        }
    }
    loose
}

/// Errors of every component example against its own schema, and how many were checked.
pub fn invalid_examples(doc: &Value) -> (usize, Vec<String>) {
    let mut bad = Vec::new();
    let mut checked = 0;
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        if let Some(example) = schema.get("example") {
            checked += 1;
            bad.extend(validate(doc, schema, example, name));
        }
    }
    (checked, bad)
}
