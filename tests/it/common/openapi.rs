//! GitHub's REST description, trimmed to the calls rollbackd makes (tests/fixtures/github-openapi,
//! from the @octokit/openapi npm package), and the check the fake GitHub makes of every request
//! against it: the route and method exist; query parameters are known, of their type and within
//! their enums; the JSON body has its required fields, no field the description does not
//! know (GitHub would silently ignore a typo'd one), and values of their type, enum and size.
//! The fake's own answers are held to the same description ([`check_answer`]), and the webhooks
//! it sends to GitHub's webhooks description (tests/fixtures/github-webhooks, [`check_webhook`]).

use std::sync::OnceLock;

use serde_json::Value;

#[derive(Debug)]
struct Route {
    segments: Vec<String>,
    template: String,
    operations: Value,
}

fn routes() -> &'static Vec<Route> {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/github-openapi/api.github.com.trimmed.json");
        let spec: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        spec["paths"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(template, ops)| Route {
                segments: template.trim_start_matches('/').split('/').map(str::to_string).collect(),
                template: template.clone(),
                operations: ops.clone(),
            })
            .collect()
    })
}

/// Whether `method path?query` with `body` is a request GitHub's description allows.
pub fn check(method: &str, path: &str, query: Option<&str>, body: &[u8]) -> Result<(), String> {
    // The most literal match wins: `/pulls/{n}/merge` over `/pulls/{n}`.
    let route = route(path).ok_or_else(|| format!("{method} {path}: no such route in GitHub's REST description"))?;
    let op = &route.operations[method.to_ascii_lowercase()];
    if op.is_null() {
        return Err(format!("{method} {}: GitHub has no such method on this route", route.template));
    }
    let at = |e: String| format!("{method} {} ({}): {e}", route.template, op["operationId"].as_str().unwrap_or("?"));
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    for (name, value) in
        serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or("")).map_err(|e| at(e.to_string()))?
    {
        let p = params
            .iter()
            .find(|p| p["in"] == "query" && p["name"] == name.as_str())
            .ok_or_else(|| at(format!("unknown query parameter `{name}`")))?;
        let typed = match p["schema"]["type"].as_str() {
            Some("integer") => {
                value.parse::<i64>().map(Value::from).map_err(|_| at(format!("`{name}` is not an integer")))
            }
            Some("boolean") => {
                value.parse::<bool>().map(Value::from).map_err(|_| at(format!("`{name}` is not a boolean")))
            }
            _ => Ok(Value::from(value.clone())),
        }?;
        schema(&p["schema"], &typed, &name).map_err(at)?;
    }
    let wanted = &op["requestBody"];
    match (wanted.is_null(), body.is_empty()) {
        (_, true) if op["bodyRequired"] == true => Err(at("the body is required".into())),
        (true, false) => Err(at("this operation takes no body".into())),
        (false, false) => {
            let v: Value = serde_json::from_slice(body).map_err(|e| at(format!("the body is not JSON: {e}")))?;
            schema(wanted, &v, "body").map_err(at)
        }
        _ => Ok(()),
    }
}

fn route(path: &str) -> Option<&'static Route> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    routes()
        .iter()
        .filter(|r| {
            r.segments.len() == segments.len()
                && r.segments.iter().zip(&segments).all(|(t, s)| t.starts_with('{') || t == s)
        })
        .max_by_key(|r| r.segments.iter().filter(|t| !t.starts_with('{')).count())
}

/// Whether the fake's answer `status` with JSON `body` to `method path` is one GitHub's
/// description documents: a 2xx it lists, of its schema (every required field, no field it does
/// not know, every value of its type and nullability).
pub fn check_answer(method: &str, path: &str, status: u16, body: &[u8]) -> Result<(), String> {
    let Some(route) = route(path) else { return Ok(()) };
    let op = &route.operations[method.to_ascii_lowercase()];
    let at = |e: String| format!("answer {status} to {method} {}: {e}", route.template);
    if !(200..300).contains(&status) {
        return Ok(());
    }
    let answer = &op["answers"][status.to_string()];
    if answer.is_null() {
        return Err(at("GitHub documents no such status for this call".into()));
    }
    if answer["schema"].is_null() {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| at(format!("not JSON: {e}")))?;
    schema(&answer["schema"], &v, "answer").map_err(at)
}

/// The description's example answer to `method template` with `status`: what the fake builds its
/// answers from, so they carry every field GitHub's do. GitHub's examples carry a few fields
/// their schema does not know; those are left out, so the fake sends only what is documented.
pub fn example(method: &str, template: &str, status: u16) -> Value {
    let spec = routes().iter().find(|r| r.template == template).unwrap_or_else(|| panic!("no route {template}"));
    let answer = &spec.operations[method.to_ascii_lowercase()]["answers"][status.to_string()];
    let mut v = answer["example"].clone();
    assert!(!v.is_null(), "no example answer {status} to {method} {template}");
    prune(&answer["schema"], &mut v);
    // The pull request examples' teams lack their required `type`; the fake names its own.
    let no_teams = |pr: &mut Value| {
        if pr.get("requested_teams").is_some() {
            pr["requested_teams"] = Value::Array(Vec::new());
        }
    };
    match v.as_array_mut() {
        Some(list) => list.iter_mut().for_each(no_teams),
        None => no_teams(&mut v),
    }
    v
}

/// Drops from `v` the fields schema `s` does not know.
fn prune(s: &Value, v: &mut Value) {
    let s = &*merged(s);
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = s[key].as_array() {
            for o in options {
                let mut tried = v.clone();
                prune(o, &mut tried);
                if schema(o, &tried, "").is_ok() {
                    *v = tried;
                    return;
                }
            }
            return;
        }
    }
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| prune(&s["items"], i)),
        Value::Object(fields) => {
            let Some(known) = s["properties"].as_object() else { return };
            if s["additionalProperties"] == true || s["additionalProperties"].is_object() {
                return;
            }
            fields.retain(|k, _| known.contains_key(k));
            for (k, f) in fields.iter_mut() {
                prune(&known[k], f);
            }
            // A few examples leave out a required field that may be null: null it is.
            for required in s["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !fields.contains_key(required) && merged(&known[required])["nullable"] == true {
                    fields.insert(required.to_string(), Value::Null);
                }
            }
        }
        _ => {}
    }
}

fn webhooks() -> &'static Value {
    static HOOKS: OnceLock<Value> = OnceLock::new();
    HOOKS.get_or_init(|| {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/github-webhooks/webhooks.trimmed.json");
        let spec: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        spec["webhooks"].clone()
    })
}

/// Whether `payload` of `X-GitHub-Event: event` is one GitHub's webhooks description allows
/// (for the events and actions rollbackd reads; others are not checked).
pub fn check_webhook(event: &str, payload: &Value) -> Result<(), String> {
    let key = match payload["action"].as_str() {
        Some(action) if !matches!(event, "ping" | "push") => format!("{event}.{action}"),
        _ => event.to_string(),
    };
    let s = &webhooks()[&key];
    if s.is_null() {
        return Ok(());
    }
    checked(s, payload, "payload", false).map_err(|e| format!("{key} webhook: {e}"))
}

/// A recorded payload (tests/fixtures/github) brought up to the description of `event` and its
/// `action`: GitHub added required fields since some were recorded (`has_discussions`, ...); each
/// missing one gets null where it may be null, else an empty value of its type.
pub fn webhook_payload(event: &str, mut payload: Value) -> Value {
    let key = match payload["action"].as_str() {
        Some(action) if !matches!(event, "ping" | "push") => format!("{event}.{action}"),
        _ => event.to_string(),
    };
    fill(&webhooks()[&key], &mut payload);
    payload
}

fn fill(s: &Value, v: &mut Value) {
    let s = &*merged(s);
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = s[key].as_array() {
            if let Some(o) = options.iter().find(|o| o["type"] != "null" && checked(o, v, "", false).is_err()) {
                let mut tried = v.clone();
                fill(o, &mut tried);
                if checked(o, &tried, "", false).is_ok() {
                    *v = tried;
                }
            }
            return;
        }
    }
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| fill(&s["items"], i)),
        Value::Object(fields) => {
            let Some(known) = s["properties"].as_object() else { return };
            for required in s["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !fields.contains_key(required) {
                    fields.insert(required.to_string(), empty(&known[required]));
                }
            }
            for (k, f) in fields.iter_mut() {
                if let Some(p) = known.get(k) {
                    fill(p, f);
                }
            }
        }
        _ => {}
    }
}

fn empty(s: &Value) -> Value {
    let s = &*merged(s);
    let kinds: Vec<&str> = match &s["type"] {
        Value::String(k) => vec![k.as_str()],
        Value::Array(k) => k.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if s["nullable"] == true || kinds.contains(&"null") {
        return Value::Null;
    }
    if let Some(first) = s["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match kinds.first().copied() {
        Some("string") => Value::from(""),
        Some("integer" | "number") => Value::from(0),
        Some("boolean") => Value::from(false),
        Some("array") => Value::Array(Vec::new()),
        Some("object") => {
            let mut v = Value::Object(serde_json::Map::new());
            fill(s, &mut v);
            v
        }
        _ => Value::Null,
    }
}

/// `allOf` as one schema: the properties and required fields of all its parts (GitHub's
/// descriptions use it to extend an object).
fn merged(s: &Value) -> std::borrow::Cow<'_, Value> {
    let Some(parts) = s["allOf"].as_array() else { return std::borrow::Cow::Borrowed(s) };
    let mut out = serde_json::Map::new();
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for part in parts {
        let part = merged(part);
        for (k, v) in part.as_object().into_iter().flatten() {
            match k.as_str() {
                "properties" => properties.extend(v.as_object().cloned().unwrap_or_default()),
                "required" => required.extend(v.as_array().cloned().unwrap_or_default()),
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out.insert("properties".into(), properties.into());
    out.insert("required".into(), required.into());
    std::borrow::Cow::Owned(Value::Object(out))
}

/// `strict`: a field the schema does not know is an error (requests, the fake's answers); not for
/// webhooks, which GitHub grows fields in without notice (rollbackd must read past them).
fn schema(s: &Value, v: &Value, at: &str) -> Result<(), String> {
    checked(s, v, at, true)
}

fn checked(s: &Value, v: &Value, at: &str, strict: bool) -> Result<(), String> {
    let s = &*merged(s);
    if v.is_null() && s["nullable"] == true {
        return Ok(());
    }
    // OpenAPI 3.1 (the webhooks): `type` may list several, `null` among them.
    if let Some(kinds) = s["type"].as_array() {
        let names: Vec<&str> = kinds.iter().filter_map(Value::as_str).collect();
        if v.is_null() {
            return if names.contains(&"null") { Ok(()) } else { Err(format!("{at}: null is not allowed")) };
        }
        let one = names.iter().find(|k| **k != "null" && checked(&json_type(k), v, at, strict).is_ok());
        let Some(kind) = one else { return Err(format!("{at}: expected one of {names:?}, got {v}")) };
        let mut single = s.clone();
        single["type"] = Value::from(*kind);
        return checked(&single, v, at, strict);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = s[key].as_array() {
            if !options.iter().any(|o| checked(o, v, at, strict).is_ok()) {
                return Err(format!("{at}: matches none of the {key} forms: {v}"));
            }
            // The forms may only add to what the schema says beside them.
            if s["properties"].is_null() && s["type"].is_null() {
                return Ok(());
            }
        }
    }
    let kind = s["type"].as_str();
    if v.is_null() && kind == Some("null") {
        return Ok(());
    }
    if kind == Some("null") || (v.is_null() && kind.is_some()) {
        return Err(format!("{at}: null is not allowed (expected {})", kind.unwrap_or("?")));
    }
    let fits = match kind {
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("array") => v.is_array(),
        Some("object") => v.is_object(),
        _ => true,
    };
    if !fits {
        return Err(format!("{at}: expected {}, got {v}", kind.unwrap_or("?")));
    }
    if let Some(allowed) = s["enum"].as_array()
        && !allowed.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {}", Value::from(allowed.clone())));
    }
    if let (Some(max), Some(text)) = (s["maxLength"].as_u64(), v.as_str())
        && text.chars().count() as u64 > max
    {
        return Err(format!("{at}: longer than {max} characters"));
    }
    if let Some(items) = v.as_array() {
        if let Some(max) = s["maxItems"].as_u64()
            && items.len() as u64 > max
        {
            return Err(format!("{at}: more than {max} items"));
        }
        for (i, item) in items.iter().enumerate() {
            checked(&s["items"], item, &format!("{at}[{i}]"), strict)?;
        }
    }
    if let Some(fields) = v.as_object() {
        for required in s["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !fields.contains_key(required) {
                return Err(format!("{at}: `{required}` is required"));
            }
        }
        let known = s["properties"].as_object();
        for (name, value) in fields {
            match known.and_then(|k| k.get(name)) {
                Some(p) => checked(p, value, &format!("{at}.{name}"), strict)?,
                None if s["additionalProperties"].is_object() => {
                    checked(&s["additionalProperties"], value, &format!("{at}.{name}"), strict)?
                }
                None if strict && known.is_some() && s["additionalProperties"] != true => {
                    return Err(format!("{at}: unknown field `{name}`"));
                }
                None => {}
            }
        }
    }
    Ok(())
}

fn json_type(kind: &str) -> Value {
    serde_json::json!({ "type": kind })
}

#[test]
fn answers_and_webhooks_are_held_to_the_descriptions() {
    // pull-request-simple has no `mergeable`: a list that carries it is not what GitHub sends.
    let mut pr = example("get", "/repos/{owner}/{repo}/pulls", 200);
    assert_eq!(check_answer("GET", "/repos/acme/config/pulls", 200, pr.to_string().as_bytes()), Ok(()));
    pr[0]["mergeable"] = true.into();
    let e = check_answer("GET", "/repos/acme/config/pulls", 200, pr.to_string().as_bytes()).unwrap_err();
    assert!(e.contains("mergeable"), "{e}");
    let mut full = example("get", "/repos/{owner}/{repo}/pulls/{pull_number}", 200);
    full["mergeable"] = Value::Null;
    assert_eq!(check_answer("GET", "/repos/acme/config/pulls/1", 200, full.to_string().as_bytes()), Ok(()));
    full.as_object_mut().unwrap().remove("head");
    assert!(check_answer("GET", "/repos/acme/config/pulls/1", 200, full.to_string().as_bytes()).is_err());
    // `merged: null` is allowed on a push to a pull request, not once it is closed; a missing
    // `number` never is; a field GitHub added since is no error.
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github");
    let mut pr: Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("pull_request.opened.payload.json")).unwrap()).unwrap();
    pr["action"] = "synchronize".into();
    pr["before"] = "a".repeat(40).into();
    pr["after"] = "b".repeat(40).into();
    pr["pull_request"]["merged"] = Value::Null;
    pr["pull_request"]["added_later"] = true.into();
    assert!(check_webhook("pull_request", &pr).unwrap_err().contains("has_discussions"), "recorded before it existed");
    let mut pr = webhook_payload("pull_request", pr);
    assert_eq!(check_webhook("pull_request", &pr), Ok(()));
    pr["action"] = "closed".into();
    assert!(check_webhook("pull_request", &pr).unwrap_err().contains("merged"));
    pr["action"] = "synchronize".into();
    pr["pull_request"]["merged"] = "yes".into();
    assert!(check_webhook("pull_request", &pr).is_err());
    pr["pull_request"]["merged"] = Value::Null;
    pr.as_object_mut().unwrap().remove("number");
    assert!(check_webhook("pull_request", &pr).unwrap_err().contains("number"));
}

#[test]
fn the_check_knows_good_requests_from_typos() {
    let merge = r#"{"merge_method":"squash","sha":"abc","commit_title":"t","commit_message":"m"}"#;
    assert_eq!(check("PUT", "/repos/acme/config/pulls/7/merge", None, merge.as_bytes()), Ok(()));
    let typo = r#"{"merge_methd":"squash"}"#;
    assert!(
        check("PUT", "/repos/acme/config/pulls/7/merge", None, typo.as_bytes()).unwrap_err().contains("merge_methd")
    );
    let bad_enum = r#"{"merge_method":"fast-forward"}"#;
    assert!(check("PUT", "/repos/acme/config/pulls/7/merge", None, bad_enum.as_bytes()).is_err());
    assert!(check("GET", "/repos/acme/config/pulls", Some("state=opened"), b"").is_err());
    assert_eq!(check("GET", "/repos/acme/config/pulls", Some("state=open&head=acme%3Ax&per_page=100"), b""), Ok(()));
    assert!(check("DELETE", "/repos/acme/config/pulls/7", None, b"").is_err());
    assert!(check("GET", "/repos/acme/config/pullz", None, b"").is_err());
    let run = r#"{"name":"n","head_sha":"a","output":{"title":"t","summary":"s","annotations":[{"path":"p","start_line":1,"end_line":1,"annotation_level":"error","message":"m"}]}}"#;
    assert!(
        check("POST", "/repos/acme/config/check-runs", None, run.as_bytes()).unwrap_err().contains("annotation_level")
    );
}
