//! Validation per kind (series v1 and v2, distribution points, logs, v1
//! and v2 events, service checks): the field checks and their messages,
//! the request limits, what is dropped or cut as Datadog does (stale
//! points and items, a log over 1 MB), compaction and nesting, and
//! property tests that the framer accepts exactly what serde_json accepts.

use serde_json::{Value, json};

use super::context::span;
use super::frame::compact_value;
use super::*;

const NOW_MS: i64 = 1_700_000_000_000;
const NOW_S: i64 = NOW_MS / 1000;

fn ok(endpoint: Endpoint, body: &Value) -> Validated {
    validate(endpoint, body.to_string().as_bytes(), NOW_MS).unwrap()
}

fn errors(endpoint: Endpoint, body: &Value) -> Vec<String> {
    match validate(endpoint, body.to_string().as_bytes(), NOW_MS) {
        Err(e @ Invalid::Items { .. }) => e.messages(),
        other => panic!("expected item errors, got {other:?}"),
    }
}

fn items(v: &Validated) -> Vec<Value> {
    v.payload
        .split(|b| *b == b'\n')
        .map(|i| serde_json::from_slice(i).unwrap())
        .collect()
}

fn series(metric: &str, ts: i64) -> Value {
    json!({"metric": metric, "type": 3, "points": [{"timestamp": ts, "value": 1.5}],
           "tags": ["env:prod", "a:b"], "resources": [{"name": "h", "type": "host"}]})
}

#[test]
fn compaction_respects_strings() {
    let src = r#" { "a" : [ 1 , 2 ] , "b c" : "x \" y \\" , "d":"\\" , "e" : { } } "#;
    let mut out = String::new();
    assert_eq!(compact_value(src, 1, &mut out, 0).unwrap(), src.len() - 1);
    assert_eq!(out, r#"{"a":[1,2],"b c":"x \" y \\","d":"\\","e":{}}"#);
    // Two tokens are never glued into one.
    for (bad, kept) in [
        ("[1 2]", "[1 2]"),
        ("[tr ue]", "[tr ue]"),
        ("[- 1]", "[- 1]"),
        ("[1\n\t2]", "[1 2]"),
    ] {
        let mut out = String::new();
        compact_value(bad, 0, &mut out, 0).unwrap();
        assert_eq!(out, kept);
    }
}

/// Found by `tests/hostile.rs`: values the visitors skip were not depth
/// limited, so a log nested 5,000 levels deep was accepted and forwarded.
/// Now every body is refused past `MAX_DEPTH` levels, counted from the
/// body's root; anything accepted parses with serde_json's defaults.
#[test]
fn nesting_is_bounded() {
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    // A log array (1 level) holding an object (1) whose message nests 126.
    let body = format!(r#"[{{"message":{}}}]"#, nested(126));
    let v = validate(Endpoint::Logs, body.as_bytes(), NOW_MS).unwrap();
    assert!(serde_json::from_slice::<Value>(&v.payload).is_ok());
    let body = format!(r#"[{{"message":{}}}]"#, nested(127));
    let err = validate(Endpoint::Logs, body.as_bytes(), NOW_MS).unwrap_err();
    assert!(err.to_string().contains("deeper than 128 levels"), "{err}");
    for (endpoint, body) in [
        (Endpoint::Logs, format!(r#"[{{"m":{}}}]"#, nested(5000))),
        (
            Endpoint::Events,
            format!(r#"{{"title":"t","text":"x","y":{}}}"#, nested(200)),
        ),
        (
            Endpoint::SeriesV2,
            format!(r#"{{"series":[],"other":{}}}"#, nested(200)),
        ),
        (
            Endpoint::SeriesV2,
            format!(r#"{{"series":[{{"metric":"m","x":{}}}]}}"#, nested(200)),
        ),
        (Endpoint::CheckRun, "[".repeat(1 << 20)),
    ] {
        let err = validate(endpoint, body.as_bytes(), NOW_MS).unwrap_err();
        assert!(err.to_string().contains("deeper than"), "{endpoint}: {err}");
    }
}

#[test]
fn series_v2_pretty_body_becomes_compact_lines() {
    let body = json!({"series": [series("a.b", NOW_S - 30), series("c_d", NOW_S + 60)]});
    let pretty = serde_json::to_string_pretty(&body).unwrap();
    let v = validate(Endpoint::SeriesV2, pretty.as_bytes(), NOW_MS).unwrap();
    assert_eq!(v.items, 2);
    assert_eq!(items(&v), body["series"].as_array().unwrap().clone());
    assert!(!v.payload.contains(&b' '));
    assert_eq!(
        (v.oldest_ms, v.newest_ms),
        (NOW_MS - 30_000, NOW_MS + 60_000)
    );
}

#[test]
fn unknown_fields_are_kept() {
    let mut s = series("a", NOW_S);
    s["future_field"] = json!({"x": [1, "two", null]});
    s["points"][0]["extra"] = json!(true);
    let body = json!({"series": [s.clone()], "other": 1});
    assert_eq!(items(&ok(Endpoint::SeriesV2, &body)), vec![s]);
}

#[test]
fn series_v2_field_checks() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].metric: is required",
        ),
        (
            json!({"metric": 5, "points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].metric: must be a string, got a number",
        ),
        (
            json!({"metric": "1abc", "points": [{"timestamp": NOW_S, "value": 1}]}),
            "must start with a letter",
        ),
        (
            json!({"metric": "", "points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].metric: must not be empty",
        ),
        (
            json!({"metric": "a".repeat(201), "points": [{"timestamp": NOW_S, "value": 1}]}),
            "201 characters; Datadog accepts at most 200",
        ),
        (json!({"metric": "a"}), "series[0].points: is required"),
        (
            json!({"metric": "a", "points": []}),
            "series[0].points: must not be empty",
        ),
        (
            json!({"metric": "a", "points": {"timestamp": NOW_S}}),
            "series[0].points: must be an array",
        ),
        (
            json!({"metric": "a", "points": [[NOW_S, 1]]}),
            "series[0].points[0]: must be a {\"timestamp\",\"value\"} object, got an array",
        ),
        (
            json!({"metric": "a", "points": [{"timestamp": NOW_S}]}),
            "series[0].points[0].value: is required",
        ),
        (
            json!({"metric": "a", "points": [{"value": 1}]}),
            "series[0].points[0].timestamp: is required",
        ),
        (
            json!({"metric": "a", "points": [{"timestamp": NOW_S as f64 + 0.5, "value": 1}]}),
            "must be an integer (seconds since the epoch), got a number",
        ),
        (
            json!({"metric": "a", "points": [{"timestamp": NOW_S, "value": "1"}]}),
            "series[0].points[0].value: must be a number, got a string",
        ),
        (
            json!({"metric": "a", "type": 4, "points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].type: must be between 0 and 3, got 4",
        ),
        (
            json!({"metric": "a", "tags": ["ok", 3], "points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].tags[1]: must be a string, got a number",
        ),
        (
            json!({"metric": "a", "tags": ["x".repeat(201)], "points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].tags[0]: 201 characters",
        ),
        (
            json!({"metric": "a", "tags": "env:prod", "points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].tags: must be an array of strings, got a string",
        ),
        (
            json!({"metric": "a", "resources": [{"name": 1}], "points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].resources[0].name: must be a string",
        ),
        (
            json!({"metric": "a", "metadata": [], "points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].metadata: must be an object, got an array",
        ),
        (
            json!({"metric": "a", "unit": 1, "points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].unit: must be a string",
        ),
        (
            json!("nope"),
            "item 0: series[0]: must be a JSON object, got a string",
        ),
    ];
    for (item, want) in cases {
        let errs = errors(Endpoint::SeriesV2, &json!({ "series": [item.clone()] }));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{item}: {errs:?} lacks {want}"
        );
    }
    // Tolerated: other characters in names (Datadog converts them), nulls for
    // optional fields, multibyte tags of 200 characters.
    ok(
        Endpoint::SeriesV2,
        &json!({"series": [{"metric": "my-app.req count", "type": null, "unit": null, "tags": ["é".repeat(200)],
                            "points": [{"timestamp": NOW_S, "value": -1e300}]}]}),
    );
}

#[test]
fn errors_are_capped() {
    let list: Vec<Value> = (0..150).map(|_| json!({"metric": "a"})).collect();
    match validate(
        Endpoint::SeriesV2,
        json!({ "series": list }).to_string().as_bytes(),
        NOW_MS,
    ) {
        Err(e @ Invalid::Items { .. }) => {
            let m = e.messages();
            assert_eq!(m.len(), MAX_ERRORS + 1);
            assert_eq!(m.last().unwrap(), "+50 more");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bodies_of_the_wrong_shape() {
    for (endpoint, body) in [
        (Endpoint::SeriesV2, &b"not json"[..]),
        (Endpoint::SeriesV2, b"[]"),
        (Endpoint::SeriesV2, b"{}"),
        (Endpoint::SeriesV2, br#"{"series": {}}"#),
        (Endpoint::SeriesV2, br#"{"series": [1, }"#),
        (Endpoint::SeriesV1, b""),
        (Endpoint::Logs, b"\"a log\""),
        (Endpoint::Logs, b"[{}"),
        (Endpoint::Logs, b"{} {}"),
        (Endpoint::Events, b"[{}]"),
        (Endpoint::CheckRun, b"3"),
    ] {
        let r = validate(endpoint, body, NOW_MS);
        assert!(
            matches!(r, Err(Invalid::Body(_))),
            "{endpoint} {:?}: {r:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(ok(Endpoint::SeriesV2, &json!({"series": []})).items, 0);
}

#[test]
fn series_v1() {
    let item = json!({"metric": "system.load.1", "points": [[NOW_S, 0.7], [NOW_S as f64 - 10.5, 1]],
                      "type": "gauge", "host": "h", "tags": ["environment:test"], "interval": 20});
    let v = ok(Endpoint::SeriesV1, &json!({"series": [item.clone()]}));
    assert_eq!(items(&v), vec![item]);
    assert_eq!(v.oldest_ms, NOW_MS - 10_500);
    for (item, want) in [
        (
            json!({"metric": "a", "points": [[NOW_S, 1, 2]]}),
            "series[0].points[0]: must be a [timestamp, value] pair, got 3 elements",
        ),
        (
            json!({"metric": "a", "points": [[NOW_S, null]]}),
            "series[0].points[0][1]: value must be a number, got null",
        ),
        (
            json!({"metric": "a", "type": "histogram", "points": [[NOW_S, 1]]}),
            "series[0].type: must be one of , count, gauge, rate, got \"histogram\"",
        ),
        (
            json!({"metric": "a", "points": [{"timestamp": NOW_S, "value": 1}]}),
            "series[0].points[0]: must be a [timestamp, value] pair, got an object",
        ),
    ] {
        let errs = errors(Endpoint::SeriesV1, &json!({ "series": [item.clone()] }));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{item}: {errs:?} lacks {want}"
        );
    }
}

#[test]
fn logs() {
    let log = json!({"message": "hello\nworld \"quoted\"", "ddsource": "app", "ddtags": "env:prod,a:b",
                     "hostname": "h", "service": "s", "status": "info", "timestamp": NOW_MS - 3_600_000,
                     "nested": {"deep": [1, 2, {"x": "y"}]}});
    let v = ok(
        Endpoint::Logs,
        &json!([log.clone(), {"no_message": true}, {"timestamp": "2023-11-14T22:13:20Z"}]),
    );
    assert_eq!(v.items, 3);
    assert_eq!(
        items(&v),
        vec![
            log.clone(),
            json!({"no_message": true}),
            json!({"timestamp": "2023-11-14T22:13:20Z"})
        ]
    );
    assert_eq!((v.oldest_ms, v.newest_ms), (NOW_MS - 3_600_000, NOW_MS));
    // One object alone.
    let v = ok(Endpoint::Logs, &log);
    assert_eq!(items(&v), vec![log]);
    assert_eq!(ok(Endpoint::Logs, &json!([])).items, 0);

    for (body, want) in [
        (
            json!([{"message": "a"}, "b"]),
            "item 1: must be a JSON object, got a string",
        ),
        (
            json!([{"status": 3}]),
            "item 0: status: must be a string, got a number",
        ),
        (
            json!({"ddtags": ["a"]}),
            "ddtags: must be a string, got an array",
        ),
        (
            json!([{"timestamp": true}]),
            "item 0: timestamp: must be milliseconds since the epoch or a date string",
        ),
    ] {
        let errs = errors(Endpoint::Logs, &body);
        assert!(
            errs.iter().any(|e| e == want || e.starts_with(want)),
            "{body}: {errs:?} lacks {want}"
        );
    }
}

#[test]
fn logs_request_limits() {
    let many: Vec<Value> = (0..1001).map(|i| json!({"message": i})).collect();
    assert_eq!(
        validate(Endpoint::Logs, json!(many).to_string().as_bytes(), NOW_MS),
        Err(Invalid::TooManyItems {
            items: 1001,
            limit: 1000
        })
    );
    assert_eq!(ok(Endpoint::Logs, &json!(many[..1000])).items, 1000);

    // 1,000,000 bytes is the largest log; the size counts after compaction.
    let pad = 1_000_000 - r#"{"message":""}"#.len();
    let exact = json!({ "message": "x".repeat(pad) });
    let body = format!(
        "[ {{ \"ok\" : 1 }} ,\n {} ]",
        serde_json::to_string_pretty(&exact).unwrap()
    );
    assert_eq!(
        validate(Endpoint::Logs, body.as_bytes(), NOW_MS)
            .unwrap()
            .items,
        2
    );
}

#[test]
fn events() {
    let event = json!({"title": "Deploy", "text": "%%% \n**done** \n %%%", "date_happened": NOW_S - 3600,
                       "priority": "low", "alert_type": "success", "aggregation_key": "k", "tags": ["a:b"],
                       "host": "h", "source_type_name": "s", "device_name": "d", "related_event_id": 42, "x": 1});
    let v = ok(Endpoint::Events, &event);
    assert_eq!((v.items, items(&v)), (1, vec![event]));
    assert_eq!(v.oldest_ms, NOW_MS - 3_600_000);
    for (body, want) in [
        (json!({"text": "t"}), "title: is required"),
        (json!({"title": "t"}), "text: is required"),
        (
            json!({"title": "t", "text": "x".repeat(4001)}),
            "text: 4001 characters; Datadog accepts at most 4000",
        ),
        (
            json!({"title": "t", "text": "x", "priority": "high"}),
            "priority: must be one of normal, low, got \"high\"",
        ),
        (
            json!({"title": "t", "text": "x", "alert_type": "fatal"}),
            "alert_type: must be one of error, warning",
        ),
        (
            json!({"title": "t", "text": "x", "aggregation_key": "k".repeat(101)}),
            "aggregation_key: 101 characters",
        ),
        (
            json!({"title": "t", "text": "x", "related_event_id": "1"}),
            "related_event_id: must be an integer, got a string",
        ),
        (
            json!({"title": null, "text": "x"}),
            "title: must be a string, got null",
        ),
    ] {
        let errs = errors(Endpoint::Events, &body);
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{body}: {errs:?} lacks {want}"
        );
    }
    ok(
        Endpoint::Events,
        &json!({"title": "t", "text": "é".repeat(4000)}),
    );
}

#[test]
fn check_run() {
    let check = json!({"check": "app.ok", "host_name": "h", "status": 0, "tags": ["a:b"],
                       "message": "m", "timestamp": NOW_S - 60});
    let v = ok(
        Endpoint::CheckRun,
        &json!([check.clone(), {"check": "c", "host_name": "h", "status": 3}]),
    );
    assert_eq!(
        items(&v),
        vec![
            check.clone(),
            json!({"check": "c", "host_name": "h", "status": 3, "tags": []})
        ]
    );
    assert_eq!((v.oldest_ms, v.newest_ms), (NOW_MS - 60_000, NOW_MS));
    assert_eq!(items(&ok(Endpoint::CheckRun, &check)), vec![check]);
    for (body, want) in [
        (
            json!([{"host_name": "h", "status": 0}]),
            "item 0: check: is required",
        ),
        (
            json!([{"check": "c", "status": 0}]),
            "item 0: host_name: is required",
        ),
        (
            json!([{"check": "c", "host_name": "h"}]),
            "item 0: status: is required",
        ),
        (
            json!([{"check": "c", "host_name": "h", "status": 4}]),
            "item 0: status: must be between 0 and 3, got 4",
        ),
        (
            json!([{"check": "c", "host_name": "h", "status": 0, "tags": null}]),
            "item 0: tags: must be an array of strings, got null",
        ),
    ] {
        let errs = errors(Endpoint::CheckRun, &body);
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{body}: {errs:?} lacks {want}"
        );
    }
}

#[test]
fn escaped_keys_and_strings_are_understood() {
    // `\u0073tatus` is `status`: the check sees through escapes.
    let body = br#"[{"\u0073tatus": 1, "message": "tab\there"}]"#;
    match validate(Endpoint::Logs, body, NOW_MS) {
        Err(Invalid::Items { errors, .. }) => assert_eq!(errors[0].field, "status"),
        other => panic!("{other:?}"),
    }
}

fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        ".*".prop_map(Value::String),
        "[ \"\\\\\n\t\r{}\\[\\],:a-z]*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[ \"a-z\\\\\n]*", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// Compaction of pretty-printed JSON is exactly serde_json's compact form.
    #[test]
    fn compaction_equals_compact_serialization(v in arb_json()) {
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        let mut out = String::new();
        proptest::prop_assert_eq!(compact_value(&pretty, 0, &mut out, 0).unwrap(), pretty.len());
        proptest::prop_assert_eq!(out, v.to_string());
    }

    /// Any array of objects is a valid logs body (without reserved
    /// attributes), and the payload gives back each object, one per line.
    #[test]
    fn any_objects_are_logs(items in proptest::collection::vec(arb_json(), 0..8)) {
        let items: Vec<Value> = items
            .into_iter()
            .map(|v| {
                let mut o = match v { Value::Object(o) => o, other => [("v".to_string(), other)].into_iter().collect() };
                for k in ["ddsource", "ddtags", "hostname", "service", "status", "timestamp"] {
                    o.remove(k);
                }
                Value::Object(o)
            })
            .collect();
        let body = serde_json::to_string_pretty(&items).unwrap();
        let v = validate(Endpoint::Logs, body.as_bytes(), NOW_MS).unwrap();
        proptest::prop_assert_eq!(v.items as usize, items.len());
        // Byte-exact: the payload is serde_json's compact form of each item
        // (compared as text, as float parsing does not round-trip exactly).
        let want: Vec<String> = items.iter().map(Value::to_string).collect();
        proptest::prop_assert_eq!(String::from_utf8(v.payload).unwrap(), want.join("\n"));
    }
}

fn mutate(mut body: Vec<u8>, at: usize, op: u8, byte: u8) -> Vec<u8> {
    const BYTES: &[u8] = b" \n{}[],:\"\\0-1.etrufalsn";
    let at = at % (body.len() + 1);
    let b = BYTES[byte as usize % BYTES.len()];
    match op % 4 {
        0 => body.insert(at, b),
        1 if at < body.len() => {
            body.remove(at);
        }
        2 if at < body.len() => body[at] = b,
        _ => body.truncate(at),
    }
    body
}

proptest::proptest! {
    /// The framer plus the per-item parse accept exactly the bodies
    /// serde_json accepts, and the payload holds the same values.
    #[test]
    fn agrees_with_serde_json_on_mangled_bodies(
        items in proptest::collection::vec(arb_json(), 0..5),
        single in proptest::prelude::any::<bool>(),
        edits in proptest::collection::vec((0usize..4096, 0u8..4, proptest::prelude::any::<u8>()), 0..3),
    ) {
        let items: Vec<Value> = items
            .into_iter()
            .map(|v| json!({ "v": v }))
            .collect();
        let mut body = if single && !items.is_empty() {
            serde_json::to_vec_pretty(&items[0]).unwrap()
        } else {
            serde_json::to_vec_pretty(&items).unwrap()
        };
        for (at, op, byte) in edits {
            body = mutate(body, at, op, byte);
        }
        let parsed = serde_json::from_slice::<Value>(&body);
        let result = validate(Endpoint::Logs, &body, NOW_MS);
        match (&parsed, &result) {
            (Err(_), Err(Invalid::Body(_))) => {}
            // Grammatical JSON that `Value` cannot hold (RFC 8259 lets a
            // parser limit number range); unknown values are skipped
            // without converting them, so validate keeps it as sent.
            (Err(e), Ok(_)) if e.to_string().starts_with("number out of range") => {}
            (Ok(v), _) if !v.is_array() && !v.is_object() => {
                proptest::prop_assert!(matches!(result, Err(Invalid::Body(_))), "{result:?}");
            }
            (Ok(v), Ok(ok)) => {
                let want: Vec<Value> = match v {
                    Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                let got: Vec<Value> = if ok.items == 0 {
                    vec![]
                } else {
                    super::tests::items(ok)
                };
                proptest::prop_assert_eq!(got, want);
            }
            // Valid JSON with non-object items, or reserved attributes of
            // the wrong type: refused per item, never as a body error.
            (Ok(_), Err(Invalid::Items { .. })) => {}
            _ => proptest::prop_assert!(
                false,
                "serde_json: {parsed:?}, validate: {result:?}, body {:?}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

proptest::proptest! {
    /// The same for the series framer (`{"series":[…]}` with other keys).
    #[test]
    fn series_framer_agrees_with_serde_json(
        other in arb_json(),
        n in 0usize..4,
        edits in proptest::collection::vec((0usize..2048, 0u8..4, proptest::prelude::any::<u8>()), 0..3),
    ) {
        let series: Vec<Value> = (0..n).map(|i| series(&format!("m{i}"), NOW_S)).collect();
        let mut body = serde_json::to_vec_pretty(&json!({"a": other, "series": series, "z": []})).unwrap();
        for (at, op, byte) in edits {
            body = mutate(body, at, op, byte);
        }
        let parsed = serde_json::from_slice::<Value>(&body);
        let result = validate(Endpoint::SeriesV2, &body, NOW_MS);
        let series_array = parsed.as_ref().ok().and_then(|v| v.get("series")).and_then(Value::as_array);
        match (&parsed, &result, series_array) {
            (Err(e), Ok(_), _) if e.to_string().starts_with("number out of range") => {}
            // A mutation made a point's value or timestamp overflow: serde_json
            // refuses the whole body, we refuse the item; both refuse.
            (Err(e), Err(Invalid::Items { .. }), _) if e.to_string().starts_with("number out of range") => {}
            (Err(_), Err(Invalid::Body(_)), _) => {}
            (Ok(_), Err(Invalid::Body(_)), None) => {}
            // A mutated timestamp left the window: those points were dropped.
            (Ok(_), Ok(ok), Some(want)) if ok.dropped.stale > 0 => {
                proptest::prop_assert!((ok.items as usize) <= want.len());
            }
            (Ok(_), Ok(ok), Some(want)) => {
                let got: Vec<Value> = if ok.items == 0 { vec![] } else { super::tests::items(ok) };
                proptest::prop_assert_eq!(&got, want);
            }
            (Ok(_), Err(Invalid::Items { .. }), Some(_)) => {}
            // A repeated `series` key: serde_json keeps the last, we refuse.
            (Ok(_), Err(Invalid::Body(m)), Some(_)) if m.contains("twice") => {}
            _ => proptest::prop_assert!(
                false,
                "serde_json: {parsed:?}, validate: {result:?}, body {:?}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

/// Datadog answers 202 and drops a point or item outside the acceptance
/// window; the relay refused the whole request with 400 before.
#[test]
fn stale_points_and_items_are_dropped_and_counted_not_refused() {
    let mut mixed = series("mixed", NOW_S);
    mixed["points"] = json!([{"timestamp": NOW_S - 2 * 3600, "value": 1},
                             {"timestamp": NOW_S - 30, "value": 2}]);
    let body = json!({"series": [mixed, series("late", NOW_S - 2 * 3600), series("ok", NOW_S)]});
    let v = ok(Endpoint::SeriesV2, &body);
    assert_eq!(v.items, 2);
    let kept = items(&v);
    assert_eq!(kept[0]["metric"], "mixed");
    assert_eq!(
        kept[0]["points"],
        json!([{"timestamp": NOW_S - 30, "value": 2}])
    );
    assert_eq!(kept[0]["tags"], json!(["env:prod", "a:b"]));
    assert_eq!(kept[1]["metric"], "ok");
    assert_eq!(
        v.dropped,
        Dropped {
            stale: 2,
            ..Dropped::default()
        }
    );
    assert_eq!((v.oldest_ms, v.newest_ms), (NOW_MS - 30_000, NOW_MS));
    assert_eq!(
        v.notes,
        [
            "item 0: series[0].points[0].timestamp: 2 hours in the past; Datadog accepts at most 1 hour: dropped",
            "item 1: series[1].points[0].timestamp: 2 hours in the past; Datadog accepts at most 1 hour: dropped",
        ]
    );
    // A point too far ahead is dropped too; the window's edges are inside.
    let v = ok(
        Endpoint::SeriesV2,
        &json!({"series": [series("a", NOW_S + 15 * 60), series("a", NOW_S - 3600), series("a", NOW_S + 600)]}),
    );
    assert_eq!((v.items, v.dropped.stale), (2, 1));
    assert_eq!(
        v.notes,
        [
            "item 0: series[0].points[0].timestamp: 15 minutes in the future; Datadog accepts at most 10 minutes: dropped"
        ]
    );
    let v1 = json!({"series": [{"metric": "a", "points": [[NOW_S - 7200, 1], [NOW_S, 2]]}]});
    let v = ok(Endpoint::SeriesV1, &v1);
    assert_eq!(items(&v)[0]["points"], json!([[NOW_S, 2]]));
    // Whole items of the other kinds.
    for (endpoint, body) in [
        (
            Endpoint::Logs,
            json!([{"timestamp": NOW_MS - 19 * 3_600_000}, {"message": "kept"}]),
        ),
        (
            Endpoint::Logs,
            json!([{"timestamp": NOW_MS + 3 * 3_600_000}, {"message": "kept"}]),
        ),
        (
            Endpoint::CheckRun,
            json!([{"check": "c", "host_name": "h", "status": 0, "timestamp": NOW_S - 11 * 60},
                   {"check": "kept", "host_name": "h", "status": 0}]),
        ),
    ] {
        let v = ok(endpoint, &body);
        assert_eq!((v.items, v.dropped.stale), (1, 1), "{body}");
        assert!(items(&v)[0].to_string().contains("kept"), "{body}");
    }
    let v = ok(
        Endpoint::Events,
        &json!({"title": "t", "text": "x", "date_happened": NOW_S - 19 * 3600}),
    );
    assert_eq!((v.items, v.payload.len(), v.dropped.stale), (0, 0, 1));
    assert_eq!(
        v.notes,
        ["date_happened: 19 hours in the past; Datadog accepts at most 18 hours: dropped"]
    );
}

/// Ages read as they are: 2 hours and a second was "3 hours", 3,601 s was
/// "61 minutes".
#[test]
fn ages_read_exactly() {
    assert_eq!(span(7_200_000), "2 hours");
    assert_eq!(span(7_200_500), "2 hours 1 second");
    assert_eq!(span(3_601_000), "1 hour 1 second");
    assert_eq!(span(3_660_000), "1 hour 1 minute");
    assert_eq!(span(900_000), "15 minutes");
    assert_eq!(span(65_000), "1 minute 5 seconds");
    assert_eq!(span(1), "1 second");
    assert_eq!(span(19 * 3_600_000), "19 hours");
    assert_eq!(span(3 * 86_400_000 + 5 * 3_600_000 + 7), "3 days 5 hours");
}

/// "Any log exceeding 1MB is accepted and truncated by Datadog": its
/// message is cut to fit, the batch is accepted. Before: 413 for the batch.
#[test]
fn an_oversized_log_is_truncated_not_refused() {
    let pad = 1_000_000 - r#"{"message":""}"#.len();
    let big = json!({"message": "é".repeat(pad), "service": "s"});
    let v = ok(Endpoint::Logs, &json!([{"message": "small"}, big]));
    assert_eq!(v.items, 2);
    let kept = items(&v);
    assert_eq!(kept[0]["message"], "small");
    let second = v.payload.split(|b| *b == b'\n').nth(1).unwrap();
    assert!(second.len() <= 1_000_000, "{}", second.len());
    assert!(
        second.len() > 999_000,
        "cut no more than needed: {}",
        second.len()
    );
    let message = kept[1]["message"].as_str().unwrap();
    assert!(
        message.starts_with("éé") && message.ends_with(TRUNCATED_MARK),
        "{}",
        &message[message.len() - 40..]
    );
    assert_eq!(kept[1]["service"], "s");
    assert_eq!(
        v.dropped,
        Dropped {
            truncated: 1,
            ..Dropped::default()
        }
    );
    assert_eq!(v.notes.len(), 1);
    assert!(v.notes[0].starts_with("item 1: "), "{:?}", v.notes);
    // Escapes count at their encoded size.
    let escaped = json!([{"message": "\"\n".repeat(600_000)}]);
    let v = ok(Endpoint::Logs, &escaped);
    assert!(v.payload.len() <= 1_000_000 && v.dropped.truncated == 1);
    serde_json::from_slice::<Value>(&v.payload).unwrap();
    // Too large without a message to cut: dropped and counted, the rest kept.
    let no_message = json!([{"blob": "x".repeat(1_000_001)}, {"message": "kept"}]);
    let v = ok(Endpoint::Logs, &no_message);
    assert_eq!((v.items, v.dropped.oversized), (1, 1));
    assert_eq!(items(&v)[0]["message"], "kept");
    // Other kinds still refuse an item over their limit, as Datadog does.
    let huge = json!({"series": [{"metric": "a", "points": [{"timestamp": NOW_S, "value": 1}], "x": "y".repeat(600_000)}]});
    assert!(matches!(
        validate(Endpoint::SeriesV2, huge.to_string().as_bytes(), NOW_MS),
        Err(Invalid::ItemTooLarge { .. })
    ));
}

#[test]
fn distribution_points() {
    let item = json!({"metric": "request.latency", "points": [[NOW_S, [1.0, 2.5, 3]], [NOW_S - 10, []]],
                      "type": "distribution", "host": "h", "tags": ["env:prod"]});
    let v = ok(Endpoint::Distribution, &json!({"series": [item.clone()]}));
    assert_eq!(items(&v), vec![item]);
    assert_eq!(v.oldest_ms, NOW_MS - 10_000);
    for (item, want) in [
        (
            json!({"metric": "a", "points": [[NOW_S, 1]]}),
            "series[0].points[0][1]: values must be an array of numbers, got a number",
        ),
        (
            json!({"metric": "a", "points": [[NOW_S, [1, "2"]]]}),
            "series[0].points[0][1][1]: must be a number, got a string",
        ),
        (
            json!({"metric": "a", "type": "gauge", "points": [[NOW_S, [1]]]}),
            "series[0].type: must be one of distribution, got \"gauge\"",
        ),
        (
            json!({"points": [[NOW_S, [1]]]}),
            "series[0].metric: is required",
        ),
    ] {
        let errs = errors(Endpoint::Distribution, &json!({ "series": [item.clone()] }));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{item}: {errs:?} lacks {want}"
        );
    }
    let stale = json!({"series": [{"metric": "a", "points": [[NOW_S - 7200, [1]], [NOW_S, [2]]]}]});
    let v = ok(Endpoint::Distribution, &stale);
    assert_eq!(
        (items(&v)[0]["points"].clone(), v.dropped.stale),
        (json!([[NOW_S, [2]]]), 1)
    );
}

fn event_v2(attributes: Value) -> Value {
    json!({"data": {"type": "event", "attributes": attributes}})
}

#[test]
fn events_v2() {
    let change = event_v2(json!({
        "title": "Flag flipped", "category": "change", "message": "m", "tags": ["env:prod"],
        "aggregation_key": "k", "host": "h", "integration_id": "custom-events",
        "timestamp": "2023-11-14T22:03:20Z",
        "attributes": {"changed_resource": {"name": "fast_checkout", "type": "feature_flag"},
                       "author": {"name": "a@example.com", "type": "user"}, "x": 1}
    }));
    let v = ok(Endpoint::EventsV2, &change);
    assert_eq!((v.items, items(&v)), (1, vec![change]));
    assert_eq!(v.oldest_ms, NOW_MS - 600_000);
    let alert = event_v2(
        json!({"title": "Down", "category": "alert", "attributes": {"status": "error", "priority": "1"}}),
    );
    assert_eq!(ok(Endpoint::EventsV2, &alert).items, 1);
    let change_attrs = json!({"changed_resource": {"name": "n", "type": "configuration"}});
    for (body, want) in [
        (json!({"title": "t"}), "data: is required"),
        (
            json!({"data": {"type": "event"}}),
            "data.attributes: is required",
        ),
        (
            json!({"data": {"type": "other", "attributes": {"title": "t", "category": "alert", "attributes": {"status": "ok"}}}}),
            "data.type: must be one of event, got \"other\"",
        ),
        (
            event_v2(json!({"category": "alert", "attributes": {"status": "ok"}})),
            "data.attributes.title: is required",
        ),
        (
            event_v2(
                json!({"title": "x".repeat(501), "category": "alert", "attributes": {"status": "ok"}}),
            ),
            "data.attributes.title: 501 characters; Datadog accepts 1 to 500",
        ),
        (
            event_v2(json!({"title": "t", "category": "info", "attributes": {}})),
            "data.attributes.category: must be one of change, alert, got \"info\"",
        ),
        (
            event_v2(json!({"title": "t", "category": "change", "attributes": {}})),
            "data.attributes.attributes.changed_resource: is required",
        ),
        (
            event_v2(
                json!({"title": "t", "category": "change", "attributes": {"changed_resource": {"name": " ", "type": "deploy"}}}),
            ),
            "data.attributes.attributes.changed_resource.type: must be one of feature_flag, configuration, got \"deploy\"",
        ),
        (
            event_v2(
                json!({"title": "t", "category": "alert", "attributes": {"status": "critical"}}),
            ),
            "data.attributes.attributes.status: must be one of warn, error, ok, got \"critical\"",
        ),
        (
            event_v2(
                json!({"title": "t", "category": "change", "attributes": change_attrs, "message": "m".repeat(4001)}),
            ),
            "data.attributes.message: 4001 characters; Datadog accepts 1 to 4000",
        ),
        (
            event_v2(
                json!({"title": "t", "category": "change", "attributes": change_attrs, "tags": vec!["a"; 101]}),
            ),
            "data.attributes.tags: 101 tags; Datadog accepts 1 to 100",
        ),
    ] {
        let errs = errors(Endpoint::EventsV2, &body);
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{body}: {errs:?} lacks {want}"
        );
    }
    let blank = event_v2(
        json!({"title": "t", "category": "change", "attributes": {"changed_resource": {"name": " ", "type": "configuration"}}}),
    );
    assert_eq!(
        errors(Endpoint::EventsV2, &blank),
        ["data.attributes.attributes.changed_resource.name: must not be blank"]
    );
    let stale = event_v2(
        json!({"title": "t", "category": "change", "attributes": change_attrs,
                                "timestamp": "2023-11-13T00:00:00Z"}),
    );
    let v = ok(Endpoint::EventsV2, &stale);
    assert_eq!((v.items, v.dropped.stale), (0, 1));
}
