//! Static checks of the Grafana dashboard, grafana/dashboards/hss-swr-exporter.json.
//!
//! Every panel query, annotation query and variable query must parse as PromQL
//! (after Grafana's `$__rate_interval`, `$__range`... and the dashboard's
//! variables are substituted as Grafana would), use only the exporter's
//! documented metrics and filter each by the dashboard variables matching its
//! labels; every variable reference must resolve; panels need a title, the
//! `${datasource}` data source and unique ids. The schema itself is checked by
//! grafana/check (TypeScript against @grafana/schema) and the data by
//! grafana/check/panel-queries.py against a real Prometheus.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/grafana/dashboards/hss-swr-exporter.json"
);

/// The variables every query filters by, in chaining order: `job` (the
/// Prometheus job, to pick an exporter or shards) first.
const FILTER_VARIABLES: [&str; 6] = [
    "job",
    "target",
    "enterprise_project_id",
    "image_type",
    "registry_name",
    "namespace",
];

/// Marks a panel or variable (in its description) whose data only exists when
/// some target uses `api: registry-images`: grafana/check/panel-queries.py
/// lets its queries return nothing unless such a target exports namespaces
/// (the same text is there).
const REGISTRY_IMAGES_ONLY: &str = "Empty unless a target uses api: registry-images.";

/// Metrics only targets on `api: registry-images` export, and the variables
/// whose values come from a label only they set.
const REGISTRY_IMAGES_ONLY_METRICS: &[&str] = &["hss_swr_images_by_severity"];
const REGISTRY_IMAGES_ONLY_VARIABLES: &[&str] = &["registry_name"];

/// Grafana's built-in variables that may appear in a query, with the values
/// this test gives them.
const QUERY_BUILTINS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__rate_interval_ms", "60000"),
    ("__interval", "1m"),
    ("__interval_ms", "60000"),
    ("__range", "1h"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
];

/// Built-ins allowed elsewhere (data links, variable values).
const OTHER_BUILTINS: &[&str] = &["__all", "__url_time_range", "__from", "__to", "__dashboard"];
const OTHER_BUILTIN_PREFIXES: &[&str] = &["__data.", "__field.", "__series.", "__value."];

/// Which dashboard variables a metric's labels call for (README, Metrics).
fn metric_filters(name: &str) -> Option<&'static [&'static str]> {
    // registry_name: set under api: registry-images, absent (empty) under
    // swr-repository; `=~"$registry_name"` with All = `.*` matches both.
    const NAMESPACE: &[&str] = &[
        "job",
        "target",
        "enterprise_project_id",
        "image_type",
        "registry_name",
        "namespace",
    ];
    const SCOPE: &[&str] = &["job", "target", "enterprise_project_id", "image_type"];
    const TARGET: &[&str] = &["job", "target"];
    const JOB: &[&str] = &["job"];
    Some(match name {
        "hss_swr_images"
        | "hss_swr_vulnerabilities"
        | "hss_swr_malicious_files"
        | "hss_swr_unsafe_settings"
        | "hss_swr_vulnerable_images"
        | "hss_swr_malicious_images"
        | "hss_swr_unsafe_images"
        | "hss_swr_scan_failures"
        | "hss_swr_oldest_scan_timestamp_seconds"
        | "hss_swr_malicious_images_detected_total"
        | "hss_swr_image_vulnerabilities"
        | "hss_swr_image_malicious_files"
        | "hss_swr_image_unsafe_settings"
        | "hss_swr_images_by_severity" => NAMESPACE,
        "hss_swr_image_series_dropped"
        | "hss_swr_up"
        | "hss_swr_last_success_timestamp_seconds"
        | "hss_swr_poll_duration_seconds"
        | "hss_swr_polls_total"
        | "hss_swr_poll_failures_total"
        | "hss_swr_duplicate_rows_total"
        | "hss_swr_total_changes_total"
        | "hss_swr_rows_applied_total"
        | "hss_swr_changes_watermark_age_seconds" => SCOPE,
        "hss_swr_api_requests_total"
        | "hss_swr_api_request_duration_seconds_bucket"
        | "hss_swr_api_request_duration_seconds_sum"
        | "hss_swr_api_request_duration_seconds_count"
        | "hss_swr_api_retries_total"
        | "hss_swr_api_throttled_total"
        | "hss_swr_api_budget_wait_seconds_total"
        | "hss_swr_invalid_fields_total"
        | "hss_swr_target_info" => TARGET,
        "hss_swr_build_info" | "hss_swr_poll_interval_seconds" => JOB,
        _ => return None,
    })
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: not JSON: {e}"))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Every panel, rows and the panels inside rows included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels is an array") {
        out.push(p);
        if let Some(nested) = p.get("panels").and_then(Value::as_array) {
            out.extend(nested);
        }
    }
    out
}

fn variables(d: &Value) -> Vec<&Value> {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list is an array")
        .iter()
        .collect()
}

fn variable<'a>(d: &'a Value, name: &str) -> Option<&'a Value> {
    variables(d).into_iter().find(|v| str_of(v, "name") == name)
}

/// The query text of a variable: a string, or `{"query": "..."}`.
fn variable_query(v: &Value) -> &str {
    match &v["query"] {
        Value::String(s) => s,
        other => str_of(other, "query"),
    }
}

/// A variable reference in a string: `$name`, `${name}`, `${name:format}`,
/// `[[name]]` or `[[name:format]]`. Returns (start, end, name).
fn references(s: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let close = if rest.starts_with("${") {
            "}"
        } else if rest.starts_with("[[") {
            "]]"
        } else if let Some(after) = rest.strip_prefix('$') {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            if len > 0 {
                out.push((i, i + 1 + len, after[..len].to_string()));
            }
            i += 1 + len;
            continue;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        // Both openings are two bytes long.
        match rest[2..].find(close) {
            Some(end) => {
                let name = rest[2..2 + end].split(':').next().unwrap_or("");
                out.push((i, i + 2 + end + close.len(), name.to_string()));
                i += 2 + end + close.len();
            }
            None => i += 2,
        }
    }
    out
}

/// How a dashboard variable is replaced in a query.
enum Fill {
    /// Every value (`.*`), what "All" interpolates to.
    All,
    /// A marker naming the variable, to see which label it filters.
    Marker,
}

/// `expr` with Grafana's built-ins and the dashboard's variables replaced.
fn substitute(d: &Value, expr: &str, fill: &Fill) -> Result<String, String> {
    let mut out = String::new();
    let mut last = 0;
    for (start, end, name) in references(expr) {
        out.push_str(&expr[last..start]);
        let value = if let Some((_, v)) = QUERY_BUILTINS.iter().find(|(n, _)| *n == name) {
            v.to_string()
        } else if let Some(var) = variable(d, &name) {
            match str_of(var, "type") {
                "query" | "custom" if var["multi"] == true || var["includeAll"] == true => {
                    match fill {
                        Fill::All => ".*".to_string(),
                        Fill::Marker => format!("__var_{name}__"),
                    }
                }
                "textbox" | "constant" | "custom" | "interval" => variable_query(var)
                    .split(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
                "datasource" => "prometheus".to_string(),
                other => return Err(format!("variable ${name} of type {other:?} in a query")),
            }
        } else {
            return Err(format!("undefined variable ${name}"));
        };
        out.push_str(&value);
        last = end;
    }
    out.push_str(&expr[last..]);
    Ok(out)
}

#[derive(Debug)]
enum Kind {
    Panel,
    Annotation,
    /// A variable query; the index of the variable among FILTER_VARIABLES
    /// (None for others).
    Variable(Option<usize>),
}

struct Query {
    place: String,
    expr: String,
    kind: Kind,
}

/// `label_values(selector, label)` -> (Some(selector), label).
fn label_values(q: &str) -> Option<(Option<&str>, &str)> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let mut depth = 0i32;
    let mut split = None;
    let mut quoted = false;
    for (i, c) in inner.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' | '{' | '[' if !quoted => depth += 1,
            ')' | '}' | ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => split = Some(i),
            _ => {}
        }
    }
    Some(match split {
        Some(i) => (Some(inner[..i].trim()), inner[i + 1..].trim()),
        None => (None, inner.trim()),
    })
}

/// Every PromQL expression of the dashboard with where it comes from.
fn queries(d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p
            .get("targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(Query {
                place: format!(
                    "panel {:?} query {}",
                    str_of(p, "title"),
                    str_of(t, "refId")
                ),
                expr: str_of(t, "expr").to_string(),
                kind: Kind::Panel,
            });
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if a["datasource"]["type"] == "prometheus" {
            let expr = a["target"].get("expr").or_else(|| a.get("expr"));
            out.push(Query {
                place: format!("annotation {:?}", str_of(a, "name")),
                expr: expr.and_then(Value::as_str).unwrap_or("").to_string(),
                kind: Kind::Annotation,
            });
        }
    }
    for v in variables(d) {
        if str_of(v, "type") != "query" {
            continue;
        }
        let name = str_of(v, "name");
        let q = variable_query(v);
        let expr = match label_values(q) {
            Some((Some(selector), _)) => selector.to_string(),
            Some((None, _)) => continue, // label_values(label): no PromQL
            None => match q
                .trim()
                .strip_prefix("query_result(")
                .and_then(|s| s.strip_suffix(')'))
            {
                Some(inner) => inner.to_string(),
                None => q.to_string(),
            },
        };
        out.push(Query {
            place: format!("variable {name:?}"),
            expr,
            kind: Kind::Variable(FILTER_VARIABLES.iter().position(|f| *f == name)),
        });
    }
    out
}

fn selectors<'a>(e: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
    match e {
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::VectorSelector(v) => out.push(v),
        Expr::MatrixSelector(m) => out.push(&m.vs),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn metric_name(v: &VectorSelector) -> Option<String> {
    v.name.clone().or_else(|| {
        v.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone())
    })
}

fn fail_if_any(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s) in {DASHBOARD}:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn every_query_parses_as_promql() {
    let d = dashboard();
    let qs = queries(&d);
    assert!(qs.len() > 20, "only {} queries found", qs.len());
    let mut problems = Vec::new();
    for q in &qs {
        if q.expr.trim().is_empty() {
            problems.push(format!("{}: empty query", q.place));
            continue;
        }
        match substitute(&d, &q.expr, &Fill::All) {
            Err(e) => problems.push(format!("{}: {e}", q.place)),
            Ok(expr) => {
                if let Err(e) = parser::parse(&expr) {
                    problems.push(format!("{}: {e}\n    query: {expr}", q.place));
                }
            }
        }
    }
    fail_if_any("PromQL parse", problems);
}

#[test]
fn every_query_filters_by_the_dashboard_variables() {
    let d = dashboard();
    let mut problems = Vec::new();
    for q in queries(&d) {
        let Ok(expr) = substitute(&d, &q.expr, &Fill::Marker) else {
            continue; // reported by every_query_parses_as_promql
        };
        let Ok(ast) = parser::parse(&expr) else {
            continue;
        };
        let mut found = Vec::new();
        selectors(&ast, &mut found);
        if found.is_empty() && !matches!(q.kind, Kind::Panel) {
            problems.push(format!("{}: no metric selector", q.place));
        }
        for sel in found {
            let Some(name) = metric_name(sel) else {
                problems.push(format!(
                    "{}: selector without a metric name: {sel}",
                    q.place
                ));
                continue;
            };
            let Some(labels) = metric_filters(&name) else {
                problems.push(format!(
                    "{}: {name} is not a metric of the exporter (tests/dashboard.rs lists them)",
                    q.place
                ));
                continue;
            };
            // A variable query filters by the variables before it in the chain.
            let required: Vec<&str> = match q.kind {
                Kind::Variable(Some(i)) => labels
                    .iter()
                    .copied()
                    .filter(|l| {
                        FILTER_VARIABLES
                            .iter()
                            .position(|f| f == l)
                            .is_some_and(|j| j < i)
                    })
                    .collect(),
                Kind::Variable(None) => Vec::new(),
                Kind::Panel | Kind::Annotation => labels.to_vec(),
            };
            for label in required {
                let marker = format!("__var_{label}__");
                let ok = sel.matchers.matchers.iter().any(|m| {
                    m.name == label && matches!(m.op, MatchOp::Re(_)) && m.value == marker
                });
                if !ok {
                    problems.push(format!(
                        "{}: {name} is not filtered by {label}=~\"${label}\"",
                        q.place
                    ));
                }
            }
        }
    }
    fail_if_any("variable filters", problems);
}

#[test]
fn every_variable_reference_resolves() {
    let d = dashboard();
    let defined: BTreeSet<&str> = variables(&d).iter().map(|v| str_of(v, "name")).collect();
    let mut problems = Vec::new();
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::String(s) => {
                for (_, _, name) in references(s) {
                    out.push((path.to_string(), name));
                }
            }
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| walk(x, &format!("{path}[{i}]"), out)),
            Value::Object(o) => o
                .iter()
                .for_each(|(k, x)| walk(x, &format!("{path}.{k}"), out)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(&d, "$", &mut refs);
    for (path, name) in refs {
        let builtin = QUERY_BUILTINS.iter().any(|(n, _)| *n == name)
            || OTHER_BUILTINS.contains(&name.as_str())
            || OTHER_BUILTIN_PREFIXES.iter().any(|p| name.starts_with(p));
        if !builtin && !defined.contains(name.as_str()) {
            problems.push(format!(
                "{path}: ${{{name}}} is not a variable of the dashboard"
            ));
        }
    }
    fail_if_any("variable references", problems);
}

#[test]
fn variables_are_the_documented_chain() {
    let d = dashboard();
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for v in variables(&d) {
        if !names.insert(str_of(v, "name")) {
            problems.push(format!("variable {:?} defined twice", str_of(v, "name")));
        }
    }
    match variable(&d, "datasource") {
        Some(v) if str_of(v, "type") == "datasource" && variable_query(v) == "prometheus" => {}
        _ => problems.push("no `datasource` variable of type datasource, query prometheus".into()),
    }
    for (i, name) in FILTER_VARIABLES.iter().enumerate() {
        let Some(v) = variable(&d, name) else {
            problems.push(format!("variable {name:?} is missing"));
            continue;
        };
        if str_of(v, "type") != "query" || v["multi"] != true || v["includeAll"] != true {
            problems.push(format!(
                "variable {name:?}: want a multi-value query variable with All"
            ));
        }
        // Without allValue, All interpolates to the list of known values,
        // which misses series without the label (registry_name under
        // api: swr-repository); `.*` also matches the empty value.
        if v["allValue"] != ".*" {
            problems.push(format!("variable {name:?}: allValue is not \".*\""));
        }
        if v["datasource"]["uid"] != "${datasource}" {
            problems.push(format!(
                "variable {name:?}: data source is not ${{datasource}}"
            ));
        }
        match label_values(variable_query(v)) {
            Some((Some(selector), label)) if label == *name => {
                if !selector.starts_with("hss_swr_") {
                    problems.push(format!("variable {name:?}: label_values of {selector}"));
                }
                for earlier in &FILTER_VARIABLES[..i] {
                    if !selector.contains(&format!("{earlier}=~\"${earlier}\"")) {
                        problems.push(format!("variable {name:?} is not chained on ${earlier}"));
                    }
                }
            }
            _ => problems.push(format!(
                "variable {name:?}: query is not label_values(<hss_swr_ selector>, {name})"
            )),
        }
    }
    fail_if_any("variables", problems);
}

#[test]
fn panels_are_well_formed() {
    let d = dashboard();
    let mut problems = Vec::new();
    if d["uid"] != "hss-swr-exporter" {
        problems.push(format!("uid is {}, not hss-swr-exporter", d["uid"]));
    }
    if d["schemaVersion"].as_u64().unwrap_or(0) < 39 {
        problems.push(format!("schemaVersion {} < 39", d["schemaVersion"]));
    }
    let mut ids = BTreeMap::new();
    let panels = all_panels(&d);
    for p in &panels {
        let title = str_of(p, "title");
        if title.trim().is_empty() {
            problems.push(format!("panel id {} has no title", p["id"]));
        }
        match p["id"].as_u64() {
            Some(id) => {
                if let Some(other) = ids.insert(id, title) {
                    problems.push(format!("panels {other:?} and {title:?} share id {id}"));
                }
            }
            None => problems.push(format!("panel {title:?} has no numeric id")),
        }
        if str_of(p, "type") == "row" {
            continue;
        }
        if p["datasource"]["uid"] != "${datasource}" || p["datasource"]["type"] != "prometheus" {
            problems.push(format!(
                "panel {title:?}: data source is not ${{datasource}}"
            ));
        }
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no query"));
        }
        let mut refs = BTreeSet::new();
        for t in targets {
            if t["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "panel {title:?} query {}: data source is not ${{datasource}}",
                    t["refId"]
                ));
            }
            if !refs.insert(str_of(t, "refId")) {
                problems.push(format!("panel {title:?}: refId {} used twice", t["refId"]));
            }
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        let builtin = a["builtIn"] == 1;
        if !builtin
            && (a["datasource"]["uid"] != "${datasource}"
                || a["datasource"]["type"] != "prometheus")
        {
            problems.push(format!(
                "annotation {:?}: data source is not ${{datasource}}",
                str_of(a, "name")
            ));
        }
    }
    // Grid: 24 columns, no overlaps.
    let boxes: Vec<(&str, [i64; 4])> = panels
        .iter()
        .map(|p| {
            let g = &p["gridPos"];
            let n = |k: &str| g[k].as_i64().unwrap_or(-1);
            (str_of(p, "title"), [n("x"), n("y"), n("w"), n("h")])
        })
        .collect();
    for (i, (title, [x, y, w, h])) in boxes.iter().enumerate() {
        if *x < 0 || *y < 0 || *w <= 0 || *h <= 0 || x + w > 24 {
            problems.push(format!("panel {title:?}: bad gridPos {x},{y} {w}x{h}"));
        }
        for (other, [x2, y2, w2, h2]) in &boxes[i + 1..] {
            if x < &(x2 + w2) && x2 < &(x + w) && y < &(y2 + h2) && y2 < &(y + h) {
                problems.push(format!("panels {title:?} and {other:?} overlap"));
            }
        }
    }
    fail_if_any("panels", problems);
}

#[test]
fn dashboard_covers_the_spec() {
    let d = dashboard();
    let text = |v: &Value| v.to_string();
    let mut problems = Vec::new();
    let all = queries(&d)
        .into_iter()
        .map(|q| q.expr)
        .collect::<Vec<_>>()
        .join("\n");
    for metric in [
        "hss_swr_images",
        "hss_swr_vulnerabilities",
        "hss_swr_malicious_files",
        "hss_swr_unsafe_settings",
        "hss_swr_scan_failures",
        "hss_swr_malicious_images{",
        "hss_swr_malicious_images_detected_total",
        "hss_swr_oldest_scan_timestamp_seconds",
        "hss_swr_up",
        "hss_swr_last_success_timestamp_seconds",
        "hss_swr_poll_duration_seconds",
        "hss_swr_api_requests_total",
        "hss_swr_api_throttled_total",
        "hss_swr_api_budget_wait_seconds_total",
        "hss_swr_images_by_severity",
        "hss_swr_target_info",
        "hss_swr_poll_interval_seconds",
        "hss_swr_changes_watermark_age_seconds",
        "hss_swr_rows_applied_total",
    ] {
        if !all.contains(metric) {
            problems.push(format!("no query uses {metric}"));
        }
    }
    // The annotation marks detections.
    let annotations = text(&d["annotations"]);
    if !annotations.contains("hss_swr_malicious_images_detected_total") {
        problems.push("no annotation query on hss_swr_malicious_images_detected_total".into());
    }
    // The per-namespace table: every namespace metric, and a link filtering the
    // dashboard to the row's namespace.
    let tables: Vec<&Value> = all_panels(&d)
        .into_iter()
        .filter(|p| p["type"] == "table")
        .collect();
    let table = tables.iter().find(|t| {
        let s = text(&t["targets"]);
        [
            "hss_swr_images{",
            "hss_swr_vulnerabilities{",
            "hss_swr_vulnerable_images{",
            "hss_swr_malicious_files{",
            "hss_swr_malicious_images{",
            "hss_swr_malicious_images_detected_total{",
            "hss_swr_unsafe_settings{",
            "hss_swr_unsafe_images{",
            "hss_swr_scan_failures{",
            "hss_swr_oldest_scan_timestamp_seconds{",
        ]
        .iter()
        .all(|m| s.contains(m))
    });
    match table {
        None => problems.push("no table panel with every namespace metric".into()),
        Some(t) => {
            if !text(&t["fieldConfig"]).contains("var-namespace=${__data.fields.namespace}") {
                problems.push(
                    "the namespace table has no var-namespace=${__data.fields.namespace} link"
                        .into(),
                );
            }
            let targets = t["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            for q in targets {
                let expr = str_of(q, "expr");
                if expr.contains(" by (") && !expr.contains("registry_name, namespace)") {
                    problems.push(format!(
                        "the namespace table's query {} does not keep registry_name: {expr}",
                        q["refId"]
                    ));
                }
            }
            if !text(&t["transformations"]).contains("\"registry_name\"")
                || !text(&t["fieldConfig"]).contains("\"registry_name\"")
            {
                problems.push("the namespace table has no registry_name column".into());
            }
            if t["transformations"].as_array().is_none_or(|a| a.is_empty()) {
                problems.push(
                    "the namespace table does not join its queries (no transformation)".into(),
                );
            }
        }
    }
    fail_if_any("coverage", problems);
}

/// The registry-images-only marker (see REGISTRY_IMAGES_ONLY) is on exactly
/// the panels that need a registry-images target, so panel-queries.py cannot
/// be told to accept an empty panel that should have data.
#[test]
fn registry_images_only_marker_matches_the_queries() {
    let d = dashboard();
    let mut problems = Vec::new();
    let mut marked_panels = 0;
    for p in all_panels(&d) {
        if str_of(p, "type") == "row" {
            continue;
        }
        let title = str_of(p, "title");
        let marked = str_of(p, "description").contains(REGISTRY_IMAGES_ONLY);
        marked_panels += usize::from(marked);
        for t in p["targets"].as_array().into_iter().flatten() {
            let Ok(expr) = substitute(&d, str_of(t, "expr"), &Fill::All) else {
                continue;
            };
            let Ok(ast) = parser::parse(&expr) else {
                continue;
            };
            let mut found = Vec::new();
            selectors(&ast, &mut found);
            let names: Vec<String> = found.iter().filter_map(|s| metric_name(s)).collect();
            let only = names
                .iter()
                .filter(|n| REGISTRY_IMAGES_ONLY_METRICS.contains(&n.as_str()))
                .count();
            if marked && (names.is_empty() || only != names.len()) {
                problems.push(format!(
                    "panel {title:?} query {} is marked {REGISTRY_IMAGES_ONLY:?} but uses {names:?}",
                    t["refId"]
                ));
            }
            if !marked && only > 0 {
                problems.push(format!(
                    "panel {title:?} query {} uses {names:?} without {REGISTRY_IMAGES_ONLY:?} in the panel description",
                    t["refId"]
                ));
            }
        }
    }
    if marked_panels == 0 {
        problems.push("no panel is marked registry-images only".into());
    }
    for v in variables(&d) {
        let name = str_of(v, "name");
        let marked = str_of(v, "description").contains(REGISTRY_IMAGES_ONLY);
        if marked != REGISTRY_IMAGES_ONLY_VARIABLES.contains(&name) {
            problems.push(format!(
                "variable {name:?}: marked {marked}, want {}",
                !marked
            ));
        }
    }
    fail_if_any("registry-images only", problems);
}

/// The lanes' intervals come from the exporter (hss_swr_poll_interval_seconds),
/// not from a box the user keeps in sync with the configuration by hand.
#[test]
fn intervals_come_from_the_exporter() {
    let d = dashboard();
    let mut problems = Vec::new();
    for v in variables(&d) {
        if matches!(str_of(v, "type"), "textbox" | "constant") {
            problems.push(format!(
                "variable {:?} is a {} the user must keep in sync",
                str_of(v, "name"),
                str_of(v, "type")
            ));
        }
    }
    for (title, lane) in [
        ("Sweep duration vs poll interval", "sweep"),
        ("Malicious lane duration vs malicious_interval", "malicious"),
    ] {
        let Some(panel) = all_panels(&d)
            .into_iter()
            .find(|p| str_of(p, "title") == title)
        else {
            problems.push(format!("no panel {title:?}"));
            continue;
        };
        let exprs = panel["targets"].to_string();
        for want in [
            format!(r#"hss_swr_poll_interval_seconds{{job=~\"$job\",lane=\"{lane}\"}}"#),
            r#"hss_swr_poll_duration_seconds{job=~\"$job\""#.to_string(),
            format!(r#"lane=\"{lane}\""#),
        ] {
            if !exprs.contains(&want) {
                problems.push(format!("panel {title:?} has no query with {want}"));
            }
        }
    }
    fail_if_any("intervals", problems);
}

/// Links: the dashboard links to the README and the runbooks (files that
/// exist), and every link to this dashboard keeps every filter variable.
#[test]
fn links_lead_to_the_docs_and_keep_the_selection() {
    const REPO_URL: &str = "https://github.com/hss-swr-exporter/hss-swr-exporter/blob/main/";
    let d = dashboard();
    let mut problems = Vec::new();
    let links = d["links"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (file, anchor) in [
        ("README.md", Some("## Grafana dashboard")),
        ("docs/runbooks/README.md", None),
    ] {
        let found = links.iter().any(|l| {
            str_of(l, "type") == "link"
                && str_of(l, "url").starts_with(&format!("{REPO_URL}{file}"))
        });
        if !found {
            problems.push(format!("no dashboard link to {REPO_URL}{file}"));
        }
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if let Some(heading) = anchor
                    && !text.lines().any(|l| l == heading)
                {
                    problems.push(format!("{file} has no heading {heading:?} to link to"));
                }
            }
            Err(e) => problems.push(format!("{path}: {e}")),
        }
    }
    // Every link into the repository leads to a file that exists.
    let mut everything = Vec::new();
    urls(&d, &mut everything);
    let mut runbooks = 0;
    for url in everything {
        if let Some(rest) = url.strip_prefix(REPO_URL) {
            let file = rest.split('#').next().unwrap_or(rest);
            runbooks += usize::from(file.starts_with("docs/runbooks/Hss"));
            let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
            if !std::path::Path::new(&path).is_file() {
                problems.push(format!("link {url}: no file {file} in the repository"));
            }
        }
    }
    if runbooks == 0 {
        problems.push("no panel links to the runbook of its alert".into());
    }
    fn urls<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(u)) = o.get("url") {
                    out.push(u);
                }
                o.values().for_each(|x| urls(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| urls(x, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    urls(&d["panels"], &mut found);
    let own: Vec<&str> = found
        .into_iter()
        .filter(|u| u.contains("/d/hss-swr-exporter"))
        .collect();
    if own.is_empty() {
        problems.push("no data link to this dashboard".into());
    }
    for url in own {
        for name in FILTER_VARIABLES.iter().chain(&["datasource"]) {
            if !url.contains(&format!("${{{name}:queryparam}}"))
                && !url.contains(&format!("var-{name}="))
            {
                problems.push(format!("link {url} drops the variable {name}"));
            }
        }
    }
    fail_if_any("links", problems);
}

/// deploy/kubernetes/grafana-dashboard.yaml carries this dashboard byte for
/// byte, labelled for kube-prometheus-stack's Grafana sidecar, and is applied
/// by the kustomization (deploy/kubernetes/generate-dashboard-configmap.py
/// writes it).
#[test]
fn kubernetes_configmap_carries_the_dashboard() {
    let root = env!("CARGO_MANIFEST_DIR");
    let path = format!("{root}/deploy/kubernetes/grafana-dashboard.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let cm: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(cm["kind"].as_str(), Some("ConfigMap"), "{path}");
    assert_eq!(
        cm["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1"),
        "{path}: the sidecar's label"
    );
    let json = std::fs::read_to_string(DASHBOARD).unwrap();
    let data = cm["data"].as_mapping().expect("data");
    assert_eq!(data.len(), 1, "{path}: one key");
    assert!(
        cm["data"]["hss-swr-exporter.json"].as_str() == Some(json.as_str()),
        "{path} differs from {DASHBOARD}: run deploy/kubernetes/generate-dashboard-configmap.py"
    );
    let kustomization =
        std::fs::read_to_string(format!("{root}/deploy/kubernetes/kustomization.yaml")).unwrap();
    let kustomization: serde_yaml_ng::Value = serde_yaml_ng::from_str(&kustomization).unwrap();
    assert!(
        kustomization["resources"].as_sequence().is_some_and(|r| r
            .iter()
            .any(|x| x.as_str() == Some("grafana-dashboard.yaml"))),
        "kustomization.yaml does not apply grafana-dashboard.yaml"
    );
}

#[test]
fn substitution_and_label_values_helpers() {
    assert_eq!(
        label_values(r#"label_values(hss_swr_images{target=~"$target"}, namespace)"#),
        Some((Some(r#"hss_swr_images{target=~"$target"}"#), "namespace"))
    );
    assert_eq!(label_values("label_values(target)"), Some((None, "target")));
    let refs: Vec<String> =
        references("a $x ${y:csv} [[z]] $__rate_interval ${__data.fields.n} $ 5")
            .into_iter()
            .map(|r| r.2)
            .collect();
    assert_eq!(refs, ["x", "y", "z", "__rate_interval", "__data.fields.n"]);
}
