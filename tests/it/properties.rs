//! Property tests of bad input:
//!
//! - any JSON value in any row field (and in `total_num`, and anything in
//!   `data_list`) never makes `parse_page` panic or fail the page, and every
//!   field comes back as the lenient rules of `hss::model` say: numbers from
//!   JSON numbers or numeric strings, null or missing as absent, anything
//!   unreadable as absent (0 for counts) and counted in `invalid_fields`;
//! - arbitrary bytes, and every cut-off prefix of a page, never panic;
//! - arbitrary text (quotes, backslashes, newlines, control characters, CJK)
//!   as namespace, instance, image, version, scan status and failure reason
//!   goes through the simulator and the exporter into an exposition that
//!   parses, with every label value given back as it was.
//!
//! The fuzz target in fuzz/ drives the parser with coverage guidance; these
//! run in the regular suite.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use hss_swr_exporter::hss::model::{Page, Row, parse_page};
use hss_swr_exporter::simulator::SimImage;
use proptest::prelude::*;
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------
// The lenient rules, written out independently of the parser.

#[derive(Debug, Clone, PartialEq)]
enum Loose<T> {
    Absent,
    Value(T),
    Invalid,
}

fn from_float(f: f64) -> Loose<i64> {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 {
        Loose::Value(f as i64)
    } else {
        Loose::Invalid
    }
}

/// An integer: a JSON number, or a string holding one (trimmed; an integral
/// float counts); null, missing or an empty string is absent.
fn int_of(v: &Value) -> Loose<i64> {
    match v {
        Value::Null => Loose::Absent,
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Loose::Value(i),
            (None, Some(_), _) => Loose::Invalid,
            (None, None, Some(f)) => from_float(f),
            _ => Loose::Invalid,
        },
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                Loose::Absent
            } else if let Ok(i) = t.parse::<i64>() {
                Loose::Value(i)
            } else {
                t.parse::<f64>().map_or(Loose::Invalid, from_float)
            }
        }
        Value::Bool(_) | Value::Array(_) | Value::Object(_) => Loose::Invalid,
    }
}

/// Text: a string as it is, a number or boolean as written; null is absent.
fn text_of(v: &Value) -> Loose<String> {
    match v {
        Value::Null => Loose::Absent,
        Value::String(s) => Loose::Value(s.clone()),
        Value::Bool(b) => Loose::Value(b.to_string()),
        Value::Number(n) => Loose::Value(match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (None, Some(i), _) => i.to_string(),
            (None, None, Some(f)) => f.to_string(),
            _ => n.to_string(),
        }),
        Value::Array(_) | Value::Object(_) => Loose::Invalid,
    }
}

/// A boolean: `true`/`false`, the strings `true`/`false` in three spellings,
/// or the integers 0 and 1.
fn bool_of(v: &Value) -> Loose<bool> {
    match v {
        Value::Null => Loose::Absent,
        Value::Bool(b) => Loose::Value(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Loose::Value(false),
            Some(1) => Loose::Value(true),
            _ => Loose::Invalid,
        },
        Value::String(s) => match s.trim() {
            "true" | "TRUE" | "True" => Loose::Value(true),
            "false" | "FALSE" | "False" => Loose::Value(false),
            "" => Loose::Absent,
            _ => Loose::Invalid,
        },
        Value::Array(_) | Value::Object(_) => Loose::Invalid,
    }
}

/// The row fields the exporter reads.
const TEXT_FIELDS: [&str; 7] = [
    "namespace",
    "image_name",
    "image_version",
    "image_digest",
    "scan_failed_desc",
    "instance_name",
    "instance_id",
];
const COUNT_FIELDS: [&str; 3] = ["vul_num", "unsafe_setting_num", "malicious_file_num"];
const OTHER_FIELDS: [&str; 4] = ["id", "scan_status", "latest_scan_time", "latest_version"];
/// Fields the rules below do not cover (unread, or read by newer code):
/// only "never panics" is checked for them.
const EXTRA_FIELDS: [&str; 8] = [
    "image_size",
    "image_id",
    "image_type",
    "domain_name",
    "scannable",
    "latest_update_time",
    "registry_name",
    "severity_level",
];

/// What the rules say a row object parses to, and which fields are
/// unreadable.
fn expected_row(object: &Map<String, Value>) -> (Row, Vec<&'static str>) {
    let mut row = Row::default();
    let mut invalid = Vec::new();
    for field in TEXT_FIELDS {
        let Some(v) = object.get(field) else { continue };
        let text = match text_of(v) {
            Loose::Value(s) => s,
            Loose::Absent => String::new(),
            Loose::Invalid => {
                invalid.push(field);
                String::new()
            }
        };
        match field {
            "namespace" => row.namespace = text,
            "image_name" => row.image_name = text,
            "image_version" => row.image_version = text,
            "image_digest" => row.image_digest = text,
            "scan_failed_desc" => row.scan_failed_desc = text,
            "instance_name" => row.instance_name = text,
            _ => row.instance_id = text,
        }
    }
    for field in COUNT_FIELDS {
        let Some(v) = object.get(field) else { continue };
        let count = match int_of(v) {
            Loose::Value(n) if n >= 0 => n as u64,
            Loose::Absent => 0,
            _ => {
                invalid.push(field);
                0
            }
        };
        match field {
            "vul_num" => row.vul_num = count,
            "unsafe_setting_num" => row.unsafe_setting_num = count,
            _ => row.malicious_file_num = count,
        }
    }
    if let Some(v) = object.get("id") {
        match int_of(v) {
            Loose::Value(n) if n >= 0 => row.id = Some(n as u64),
            Loose::Absent => {}
            _ => invalid.push("id"),
        }
    }
    if let Some(v) = object.get("scan_status") {
        match text_of(v) {
            Loose::Value(s) if !s.is_empty() => row.scan_status = Some(s),
            Loose::Value(_) | Loose::Absent => {}
            Loose::Invalid => invalid.push("scan_status"),
        }
    }
    if let Some(v) = object.get("latest_scan_time") {
        match int_of(v) {
            Loose::Value(n) if n > 0 => row.latest_scan_time = Some(n),
            Loose::Value(0) | Loose::Absent => {}
            _ => invalid.push("latest_scan_time"),
        }
    }
    if let Some(v) = object.get("latest_version") {
        match bool_of(v) {
            Loose::Value(b) => row.latest_version = Some(b),
            Loose::Absent => {}
            Loose::Invalid => invalid.push("latest_version"),
        }
    }
    (row, invalid)
}

/// The parsed row, restricted to the fields the rules cover (a newer
/// parser may read more).
fn covered(row: &Row) -> Row {
    Row {
        id: row.id,
        namespace: row.namespace.clone(),
        image_name: row.image_name.clone(),
        image_version: row.image_version.clone(),
        image_digest: row.image_digest.clone(),
        scan_status: row.scan_status.clone(),
        scan_failed_desc: row.scan_failed_desc.clone(),
        latest_scan_time: row.latest_scan_time,
        vul_num: row.vul_num,
        unsafe_setting_num: row.unsafe_setting_num,
        malicious_file_num: row.malicious_file_num,
        instance_name: row.instance_name.clone(),
        instance_id: row.instance_id.clone(),
        latest_version: row.latest_version,
        ..Row::default()
    }
}

// ---------------------------------------------------------------------------
// Strategies.

/// Text that looks like a number, or nearly: what a loosely typed API sends.
fn numeric_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| format!(" {n}\t")),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        (0i64..10_000).prop_map(|n| format!("{n}.0")),
        (0i64..10_000).prop_map(|n| format!("{n}(私有镜像举例)")),
        prop::sample::select(vec![
            "",
            " ",
            "0",
            "1",
            "-1",
            "+7",
            "-0",
            "1e3",
            "1.5",
            "1E300",
            "NaN",
            "inf",
            "-infinity",
            "0x10",
            "9007199254740993",
            "18446744073709551616",
            "true",
            "TRUE",
            "False",
            "null",
        ])
        .prop_map(str::to_string),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        any::<f64>().prop_filter_map("a JSON number", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        numeric_text().prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ]
}

/// Any JSON value, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A row object: some of every kind of field, each with any value.
fn row_object() -> impl Strategy<Value = Map<String, Value>> {
    let names: Vec<&'static str> = TEXT_FIELDS
        .iter()
        .chain(&COUNT_FIELDS)
        .chain(&OTHER_FIELDS)
        .chain(&EXTRA_FIELDS)
        .copied()
        .collect();
    prop::collection::vec(prop::option::weighted(0.6, json_value()), names.len()).prop_map(
        move |values| {
            names
                .iter()
                .zip(values)
                .filter_map(|(name, v)| v.map(|v| (name.to_string(), v)))
                .collect()
        },
    )
}

/// An entry of `data_list`: mostly rows, sometimes anything else.
fn list_entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => row_object().prop_map(Value::Object),
        1 => json_value(),
    ]
}

fn invalid_map(page: &Page) -> BTreeMap<&'static str, u64> {
    let covered: BTreeSet<&str> = TEXT_FIELDS
        .iter()
        .chain(&COUNT_FIELDS)
        .chain(&OTHER_FIELDS)
        .chain(&["total_num", "data_list"])
        .copied()
        .collect();
    page.invalid_fields
        .iter()
        .filter(|(field, _)| covered.contains(field))
        .map(|(field, n)| (*field, *n))
        .collect()
}

/// `cases` cases; failures are reported, not written to files.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_value_in_any_field_parses_by_the_lenient_rules(
        total in prop::option::of(json_value()),
        entries in prop::collection::vec(list_entry(), 0..6),
    ) {
        let mut page = Map::new();
        if let Some(total) = &total {
            page.insert("total_num".into(), total.clone());
        }
        page.insert("data_list".into(), Value::Array(entries.clone()));
        let body = serde_json::to_vec(&Value::Object(page)).unwrap();
        let parsed = parse_page(&body).expect("a page with a row list always parses");
        // The rules apply to the JSON text as read back (an extreme float
        // need not come back bit for bit).
        let page: Value = serde_json::from_slice(&body).unwrap();
        let total = page.get("total_num").cloned();
        let entries = page["data_list"].as_array().unwrap().clone();

        let mut want_invalid: BTreeMap<&'static str, u64> = BTreeMap::new();
        let want_total = match total.as_ref().map_or(Loose::Absent, int_of) {
            Loose::Value(n) if n >= 0 => Some(n as u64),
            Loose::Absent => None,
            _ => {
                *want_invalid.entry("total_num").or_default() += 1;
                None
            }
        };
        prop_assert_eq!(parsed.total_num, want_total);
        let mut want_rows = Vec::new();
        for entry in &entries {
            match entry {
                Value::Object(object) => {
                    let (row, invalid) = expected_row(object);
                    for field in invalid {
                        *want_invalid.entry(field).or_default() += 1;
                    }
                    want_rows.push(row);
                }
                _ => *want_invalid.entry("data_list").or_default() += 1,
            }
        }
        let got_rows: Vec<Row> = parsed.to_rows().iter().map(covered).collect();
        prop_assert_eq!(got_rows, want_rows);
        prop_assert_eq!(invalid_map(&parsed), want_invalid);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_page(&body);
    }

    #[test]
    fn a_page_cut_off_anywhere_is_an_error(
        entries in prop::collection::vec(row_object().prop_map(Value::Object), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let body = serde_json::to_vec(&serde_json::json!({
            "total_num": entries.len(),
            "data_list": entries,
        }))
        .unwrap();
        let cut = cut.index(body.len());
        prop_assert!(parse_page(&body[..cut]).is_err(), "a strict prefix is never a page");
        prop_assert!(parse_page(&body).is_ok());
    }
}

// ---------------------------------------------------------------------------
// Label values through the whole pipeline.

/// Text that is hard to put in a label value.
fn label_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        r#"[\\"\n\r\t a-z{}=,#/:支付团队漢字\x00-\x1f\x7f\x{2028}\x{feff}]{0,16}"#,
        Just(r#"q"uote\back\nline"#.to_string()),
        Just("\\\"\n".to_string()),
    ]
}

#[derive(Debug, Clone)]
struct LabelRow {
    instance_name: String,
    namespace: String,
    image_name: String,
    image_version: String,
    scan_status: String,
    scan_failed_desc: String,
    vul_num: i64,
}

fn label_row() -> impl Strategy<Value = LabelRow> {
    (
        prop_oneof![3 => Just(String::new()), 1 => label_text()],
        label_text(),
        label_text(),
        label_text(),
        prop_oneof![
            Just("success".to_string()),
            Just("failed".to_string()),
            label_text().prop_filter("a status", |s| !s.is_empty()),
        ],
        label_text(),
        0i64..500,
    )
        .prop_map(
            |(
                instance_name,
                namespace,
                image_name,
                image_version,
                scan_status,
                scan_failed_desc,
                vul_num,
            )| LabelRow {
                instance_name,
                namespace,
                image_name,
                image_version,
                scan_status,
                scan_failed_desc,
                vul_num,
            },
        )
}

fn sim_rows(rows: &[LabelRow]) -> Vec<SimImage> {
    // One row per (instance, namespace, image, version): two images with
    // the same labels would be two series with one label set.
    let mut seen = BTreeSet::new();
    rows.iter()
        .filter(|r| {
            seen.insert((
                r.instance_name.clone(),
                r.namespace.clone(),
                r.image_name.clone(),
                r.image_version.clone(),
            ))
        })
        .enumerate()
        .map(|(i, r)| SimImage {
            id: 1000 + i as u64,
            namespace: r.namespace.clone(),
            image_name: r.image_name.clone(),
            image_version: r.image_version.clone(),
            image_digest: format!("sha256:{i:064x}"),
            image_type: "private_image".to_string(),
            latest_version: true,
            scan_status: r.scan_status.clone(),
            scan_failed_desc: r.scan_failed_desc.clone(),
            vul_num: r.vul_num,
            unsafe_setting_num: r.vul_num % 7,
            instance_name: r.instance_name.clone(),
            enterprise_project_id: "0".to_string(),
            ..SimImage::default()
        })
        .collect()
}

#[test]
fn any_label_text_comes_out_escaped_and_back() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = runtime.block_on(start_simulator(sim_config(0, 1)));
    let yaml = config_yaml(
        &sim.endpoint,
        "image_metrics: true\nmalicious_interval: 0\n",
        "    enterprise_project_ids: ['0']\n    image_types: [private_image]\n",
    );
    let exporter = hss_swr_exporter::app::Exporter::new(parse_config(&yaml)).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config(64));
    runner
        .run(&prop::collection::vec(label_row(), 1..5), |rows| {
            let images = sim_rows(&rows);
            sim.sim.set_images(images.clone());
            prop_assert!(runtime.block_on(exporter.run_once()), "the sweep succeeds");
            // Parsing checks every line: a raw newline or quote in a label
            // value breaks it.
            let exposition = Exposition::parse(&exporter.metrics().render());
            let want = expected(&images, "private_image", "0");
            assert_scope_matches(&exposition, "test", "0", "private_image", &want);
            for image in &images {
                let labels = [
                    ("instance_name", image.instance_name.as_str()),
                    ("namespace", image.namespace.as_str()),
                    ("image", image.image_name.as_str()),
                    ("version", image.image_version.as_str()),
                ];
                prop_assert_eq!(
                    exposition.value("hss_swr_image_vulnerabilities", &labels),
                    image.vul_num as f64
                );
            }
            Ok(())
        })
        .unwrap();
}
