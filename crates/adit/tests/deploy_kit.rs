//! The deploy kit stays true to the code: every Grafana dashboard in
//! `deploy/grafana/dashboards/` parses, refers only to the provisioned data
//! sources, every QuestDB query names only tables and columns that
//! `deploy/questdb/schema.sql` creates, and every `adit_…` metric a dashboard
//! or a Prometheus rule file uses is one adit registers (its name appears as a
//! string in `crates/*/src`). The checkers are small on purpose; their own
//! tests below prove that they reject a misspelled column and metric.
//!
//! YAML (compose, provisioning, Alertmanager, Prometheus) is checked by
//! `deploy/validate.sh`, which has a YAML parser and the vendors' tools.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files under `dir` (recursively) whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

// ---- schema.sql ------------------------------------------------------------

/// Table name → column names, from the `CREATE TABLE` statements (comments
/// removed; the column list is the parenthesised part after the name; each
/// item's first word is the column).
fn parse_schema(sql: &str) -> BTreeMap<String, BTreeSet<String>> {
    let text: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let lower = text.to_ascii_lowercase();
    let mut tables = BTreeMap::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find("create table") {
        let start = from + at + "create table".len();
        let open = start + lower[start..].find('(').expect("CREATE TABLE without (");
        let head = lower[start..open].replace("if not exists", "");
        let name = head.trim().trim_matches('"').to_string();
        let mut depth = 0usize;
        let mut close = open;
        for (i, c) in text[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let mut columns = BTreeSet::new();
        let mut item = String::new();
        let mut depth = 0usize;
        for c in text[open + 1..close].chars().chain(std::iter::once(',')) {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    if let Some(col) = item.split_whitespace().next() {
                        columns.insert(col.trim_matches('"').to_ascii_lowercase());
                    }
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        tables.insert(name, columns);
        from = close;
    }
    tables
}

// ---- QuestDB SQL -----------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
}

/// Splits SQL into identifiers and punctuation. Dropped: string literals,
/// comments, numbers, Grafana macros and variables (`$__timeFilter`, `$bore`,
/// `${bore}`, and `${__interval_ms}T`: the unit glued to a variable belongs
/// to it). A macro's arguments stay: in `$__timeFilter(ts)`, `ts` is checked.
fn tokenize(sql: &str) -> Vec<Tok> {
    let chars: Vec<char> = sql.chars().collect();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '\'' {
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            }
            while i < chars.len() && word(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && (word(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c == '"' {
            let start = i + 1;
            i = start;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            out.push(Tok::Ident(
                chars[start..i.min(chars.len())].iter().collect::<String>(),
            ));
            i += 1;
        } else if word(c) {
            let start = i;
            while i < chars.len() && word(chars[i]) {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// SQL and QuestDB keywords, and type names (`cast(x AS LONG)`).
const KEYWORDS: &[&str] = &[
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "as",
    "in",
    "is",
    "null",
    "like",
    "ilike",
    "between",
    "case",
    "when",
    "then",
    "else",
    "end",
    "sample",
    "by",
    "fill",
    "prev",
    "linear",
    "none",
    "align",
    "to",
    "calendar",
    "first",
    "observation",
    "time",
    "zone",
    "with",
    "offset",
    "latest",
    "on",
    "partition",
    "order",
    "group",
    "asc",
    "desc",
    "limit",
    "distinct",
    "true",
    "false",
    "union",
    "all",
    "join",
    "left",
    "inner",
    "outer",
    "cross",
    "asof",
    "long",
    "int",
    "double",
    "float",
    "boolean",
    "string",
    "varchar",
    "symbol",
    "timestamp",
    "date",
];

/// Checks one query against the schema: every identifier that is not a
/// keyword, a function name (followed by `(`), an alias (after `AS`) or a
/// Grafana macro must be a table named after `FROM`/`JOIN` or a column of one
/// of those tables. Returns the problems, empty when the query is fine.
fn check_sql(sql: &str, schema: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let toks = tokenize(sql);
    let is_kw = |s: &str| KEYWORDS.contains(&s.to_ascii_lowercase().as_str());
    let mut tables = BTreeSet::new();
    let mut aliases = BTreeSet::new();
    let mut problems = Vec::new();
    for w in toks.windows(2) {
        if let [Tok::Ident(a), Tok::Ident(b)] = w {
            let a = a.to_ascii_lowercase();
            if (a == "from" || a == "join") && !is_kw(b) {
                tables.insert(b.to_ascii_lowercase());
            }
            if a == "as" && !is_kw(b) {
                aliases.insert(b.to_ascii_lowercase());
            }
        }
    }
    if tables.is_empty() {
        problems.push("names no table (no FROM <table>)".to_string());
    }
    let mut columns = BTreeSet::new();
    for t in &tables {
        match schema.get(t) {
            Some(cols) => columns.extend(cols.iter().cloned()),
            None => problems.push(format!("table `{t}` is not in schema.sql")),
        }
    }
    for (i, tok) in toks.iter().enumerate() {
        let Tok::Ident(id) = tok else { continue };
        let lower = id.to_ascii_lowercase();
        let is_function = toks.get(i + 1) == Some(&Tok::Punct('('));
        if is_kw(&lower)
            || is_function
            || aliases.contains(&lower)
            || tables.contains(&lower)
            || columns.contains(&lower)
        {
            continue;
        }
        let msg = format!(
            "`{id}` is no column of {} in schema.sql",
            tables.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        if !problems.contains(&msg) {
            problems.push(msg);
        }
    }
    problems
}

// ---- Prometheus metric names -----------------------------------------------

/// The Rust sources adit's metrics are registered in.
fn rust_sources() -> String {
    let mut all = String::new();
    let crates = root().join("crates");
    for entry in std::fs::read_dir(&crates).unwrap().flatten() {
        for f in files(&entry.path().join("src"), ".rs") {
            all.push_str(&read(&f));
            all.push('\n');
        }
    }
    all
}

/// Every `adit_…` name in a Prometheus expression or a rule file.
fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("adit_") {
        let preceded = rest[..at].chars().next_back().is_some_and(word);
        let tail = &rest[at..];
        let end = tail.find(|c: char| !word(c)).unwrap_or(tail.len());
        if !preceded {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end.max(1)..];
    }
    out
}

/// Whether `name` is a metric adit registers: `"name"` appears in the
/// sources, or `name` is a histogram's `_bucket`/`_sum`/`_count` series: the
/// histogram's name appears, and the nearest metric type named before it
/// (`Histogram…`, `…Counter…`, `…Gauge…`, within 400 characters) is a histogram.
fn metric_known(name: &str, sources: &str) -> bool {
    if sources.contains(&format!("\"{name}\"")) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            let quoted = format!("\"{base}\"");
            sources.match_indices(&quoted).any(|(at, _)| {
                let from = sources[..at]
                    .char_indices()
                    .rev()
                    .nth(400)
                    .map_or(0, |(i, _)| i);
                let before = &sources[from..at];
                let nearest = ["Histogram", "Counter", "Gauge"]
                    .iter()
                    .filter_map(|kind| before.rfind(kind).map(|i| (i, *kind)))
                    .max();
                nearest.is_some_and(|(_, kind)| kind == "Histogram")
            })
        })
    })
}

/// The unknown metric names in `text`.
fn check_metrics(text: &str, sources: &str) -> Vec<String> {
    metric_names(text)
        .into_iter()
        .filter(|m| !metric_known(m, sources))
        .collect()
}

// ---- dashboards ------------------------------------------------------------

fn walk_panels<'a>(panels: &'a [Value], out: &mut Vec<&'a Value>) {
    for p in panels {
        out.push(p);
        if let Some(nested) = p.get("panels").and_then(Value::as_array) {
            walk_panels(nested, out);
        }
    }
}

/// The `uid:` values of the provisioned data sources.
fn provisioned_uids() -> BTreeSet<String> {
    let yaml = read(&root().join("deploy/grafana/provisioning/datasources/adit.yaml"));
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("uid:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .collect()
}

fn ds_kind(ds: Option<&Value>) -> Option<&str> {
    ds.and_then(|d| d.get("type")).and_then(Value::as_str)
}

#[test]
fn dashboards_name_only_real_columns_and_metrics() {
    let root = root();
    let schema = parse_schema(&read(&root.join("deploy/questdb/schema.sql")));
    assert!(
        schema
            .get("readings")
            .is_some_and(|c| c.contains("value") && c.contains("quality")),
        "schema.sql parsed wrong: {schema:?}"
    );
    let sources = rust_sources();
    // The histogram rule on the real sources: a histogram's series are
    // known, a gauge's invented `_count` is not.
    assert!(metric_known(
        "adit_sink_ack_latency_seconds_bucket",
        &sources
    ));
    assert!(metric_known("adit_modbus_request_seconds_count", &sources));
    assert!(!metric_known("adit_points_count", &sources));
    let uids = provisioned_uids();
    assert!(uids.len() >= 2, "provisioned data source uids: {uids:?}");

    let dashboards = files(&root.join("deploy/grafana/dashboards"), ".json");
    assert!(
        dashboards.len() >= 3,
        "expected the three dashboards, found {dashboards:?}"
    );
    let (mut n_sql, mut n_promql, mut metrics) = (0usize, 0usize, BTreeSet::new());
    let mut failures = String::new();
    let mut dashboard_uids = BTreeSet::new();
    for path in &dashboards {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let d: Value = serde_json::from_str(&read(path))
            .unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
        let uid = d["uid"].as_str().unwrap_or_default().to_string();
        assert!(!uid.is_empty(), "{name}: no uid");
        assert!(
            dashboard_uids.insert(uid.clone()),
            "{name}: uid {uid} used twice"
        );
        assert!(d["title"].as_str().is_some(), "{name}: no title");
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{name}: no schemaVersion"
        );

        let mut panels = Vec::new();
        walk_panels(d["panels"].as_array().expect("panels"), &mut panels);
        let mut ids = BTreeSet::new();
        // Every query: (where, datasource, target). Template variables too.
        let mut queries: Vec<(String, Option<&Value>, &Value)> = Vec::new();
        for p in &panels {
            let title = p["title"].as_str().unwrap_or("?");
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: panel {title} has no id"));
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
            assert!(
                p.get("gridPos").is_some(),
                "{name}: panel {title} has no gridPos"
            );
            for t in p
                .get("targets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ds = t.get("datasource").or_else(|| p.get("datasource"));
                queries.push((format!("{name}: panel \"{title}\" {}", t["refId"]), ds, t));
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let label = format!("{name}: variable ${}", v["name"].as_str().unwrap_or("?"));
            queries.push((label, v.get("datasource"), v));
        }

        for (at, ds, t) in queries {
            if let Some(uid) = ds.and_then(|d| d.get("uid")).and_then(Value::as_str) {
                if !uids.contains(uid) {
                    let _ = writeln!(failures, "{at}: data source uid {uid} is not provisioned");
                }
            }
            let kind = ds_kind(ds);
            // Panel targets say rawSql / expr; variables say query (a string,
            // or for Prometheus an object holding it).
            let query = t.get("query").and_then(|q| {
                q.as_str()
                    .or_else(|| q.get("query").and_then(Value::as_str))
            });
            let sql = match t.get("rawSql").and_then(Value::as_str) {
                Some(s) => Some(s),
                None if matches!(kind, Some("grafana-postgresql-datasource" | "postgres")) => query,
                None => None,
            };
            let promql = match t.get("expr").and_then(Value::as_str) {
                Some(e) => Some(e),
                None if kind == Some("prometheus") => query,
                None => None,
            };
            if let Some(sql) = sql {
                n_sql += 1;
                for problem in check_sql(sql, &schema) {
                    let _ = writeln!(failures, "{at}: {problem}\n    {sql}");
                }
            }
            if let Some(expr) = promql {
                n_promql += 1;
                metrics.extend(metric_names(expr));
                for m in check_metrics(expr, &sources) {
                    let _ = writeln!(
                        failures,
                        "{at}: metric {m} is not registered in crates/*/src"
                    );
                }
            }
        }
    }

    let rule_files = files(&root.join("deploy/prometheus"), ".yml");
    let mut rule_metrics = BTreeSet::new();
    for f in &rule_files {
        let text = read(f);
        rule_metrics.extend(metric_names(&text));
        for m in check_metrics(&text, &sources) {
            let _ = writeln!(
                failures,
                "{}: metric {m} is not registered in crates/*/src",
                f.display()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "deploy kit drifted from the code:\n{failures}"
    );
    assert!(n_sql > 0 && n_promql > 0, "no queries found");
    println!(
        "checked {} dashboards: {n_sql} QuestDB queries against schema.sql ({} tables), \
         {n_promql} PromQL queries naming {} adit metrics; {} Prometheus rule files naming {} adit metrics",
        dashboards.len(),
        schema.len(),
        metrics.len(),
        rule_files.len(),
        rule_metrics.len()
    );
}

// ---- the checkers' own tests ---------------------------------------------

const SCHEMA: &str = "
-- a comment (with, commas)
CREATE TABLE IF NOT EXISTS readings (
    ts TIMESTAMP,
    point SYMBOL CAPACITY 64 CACHE,
    value DOUBLE,
    quality SYMBOL
) TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, point);
CREATE TABLE alerts (ts TIMESTAMP, rule SYMBOL) TIMESTAMP(ts);
";

#[test]
fn schema_parser_finds_tables_and_columns() {
    let s = parse_schema(SCHEMA);
    assert_eq!(s.len(), 2);
    assert_eq!(
        s["readings"].iter().map(String::as_str).collect::<Vec<_>>(),
        ["point", "quality", "ts", "value"]
    );
    assert_eq!(s["alerts"].len(), 2);
}

#[test]
fn sql_checker_accepts_a_correct_query_with_macros_and_aliases() {
    let s = parse_schema(SCHEMA);
    let sql = "SELECT ts AS time, point, max(value) * 1000 AS value_km
        FROM readings
        WHERE $__timeFilter(ts) AND point LIKE '${bore}.co.%' AND quality = 'it''s good'
        SAMPLE BY ${__interval_ms}T FILL(NULL) ORDER BY time -- trailing comment naming nothing";
    assert_eq!(check_sql(sql, &s), Vec::<String>::new());
    let nested = "SELECT since, rule FROM (SELECT ts AS since, rule FROM alerts LATEST ON ts PARTITION BY rule)";
    assert_eq!(check_sql(nested, &s), Vec::<String>::new());
}

#[test]
fn sql_checker_rejects_a_misspelled_column() {
    let s = parse_schema(SCHEMA);
    let problems = check_sql(
        "SELECT ts AS time, avg(valeu) AS v FROM readings WHERE $__timeFilter(ts) SAMPLE BY 1m",
        &s,
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("`valeu`"), "{problems:?}");
}

#[test]
fn sql_checker_rejects_a_column_of_another_table_and_an_unknown_table() {
    let s = parse_schema(SCHEMA);
    let problems = check_sql("SELECT rule FROM readings", &s);
    assert!(
        problems.iter().any(|p| p.contains("`rule`")),
        "{problems:?}"
    );
    let problems = check_sql("SELECT ts FROM reading", &s);
    assert!(
        problems.iter().any(|p| p.contains("table `reading`")),
        "{problems:?}"
    );
    let problems = check_sql("SELECT 1", &s);
    assert!(
        problems.iter().any(|p| p.contains("no table")),
        "{problems:?}"
    );
}

#[test]
fn metric_checker_rejects_a_misspelled_metric_and_knows_histogram_series() {
    let sources = r#"
        let c = IntCounterVec::new(Opts::new("adit_readings_total", "help"), &["quality"]);
        let h = HistogramVec::new(HistogramOpts::new("adit_sink_write_seconds", "help"), &["sink"]);
        let g = IntGauge::new("adit_points", "help");
    "#;
    let ok = "sum(rate(adit_readings_total{job=\"adit\"}[5m])) + histogram_quantile(0.99, \
              sum by (le) (rate(adit_sink_write_seconds_bucket[5m]))) + adit_sink_write_seconds_count";
    assert_eq!(check_metrics(ok, sources), Vec::<String>::new());
    assert_eq!(
        check_metrics("rate(adit_readings_totl[5m])", sources),
        ["adit_readings_totl"]
    );
    // `_count` is only stripped for histograms: adit_points is a gauge.
    assert_eq!(
        check_metrics("adit_points_count", sources),
        ["adit_points_count"]
    );
    // A name inside another word is not a metric.
    assert_eq!(
        check_metrics("not_adit_thing", sources),
        Vec::<String>::new()
    );
}
