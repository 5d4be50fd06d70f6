//! A label value rendered into a policy's target: either refused, or exactly one identifier in
//! the author's path (no glob, separator or `..` from input).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rollbackd::parsers::InputRules;

fuzz_target!(|value: &str| {
    let ctx = rollbackd::parsers::template_value(serde_json_value(value));
    let rules = InputRules::default();
    if let Ok(path) = rollbackd::parsers::render_expression("apps/{{ labels.service }}/prod/**", &ctx, &rules) {
        let inner = path.strip_prefix("apps/").and_then(|p| p.strip_suffix("/prod/**")).expect("shape kept");
        assert_eq!(inner, value);
        assert!(rollbackd::parsers::is_plain(inner));
    }
});

fn serde_json_value(v: &str) -> std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, String>> {
    std::collections::BTreeMap::from([("labels", std::collections::BTreeMap::from([("service", v.to_string())]))])
}
