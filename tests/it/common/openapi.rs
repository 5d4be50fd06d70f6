//! GitHub's REST description, trimmed to the calls rollbackd makes (tests/fixtures/github-openapi,
//! from the @octokit/openapi npm package), and the check the fake GitHub makes of every request
//! against it: the route and method exist; query parameters are known, of their type and within
//! their enums; the JSON body has its required fields, no field the description does not
//! know (GitHub would silently ignore a typo'd one), and values of their type, enum and size.

use std::sync::OnceLock;

use serde_json::Value;

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
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // The most literal match wins: `/pulls/{n}/merge` over `/pulls/{n}`.
    let route = routes()
        .iter()
        .filter(|r| {
            r.segments.len() == segments.len()
                && r.segments.iter().zip(&segments).all(|(t, s)| t.starts_with('{') || t == s)
        })
        .max_by_key(|r| r.segments.iter().filter(|t| !t.starts_with('{')).count())
        .ok_or_else(|| format!("{method} {path}: no such route in GitHub's REST description"))?;
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

fn schema(s: &Value, v: &Value, at: &str) -> Result<(), String> {
    if v.is_null() && s["nullable"] == true {
        return Ok(());
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = s[key].as_array() {
            return if options.iter().any(|o| schema(o, v, at).is_ok()) {
                Ok(())
            } else {
                Err(format!("{at}: matches none of the {key} forms: {v}"))
            };
        }
    }
    let kind = s["type"].as_str();
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
            schema(&s["items"], item, &format!("{at}[{i}]"))?;
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
                Some(p) => schema(p, value, &format!("{at}.{name}"))?,
                None if known.is_some() && s["additionalProperties"] != true => {
                    return Err(format!("{at}: unknown field `{name}`"));
                }
                None => {}
            }
        }
    }
    Ok(())
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
