//! `analyze --sql duckdb|clickhouse|bigquery`: the per-unit aggregation as SQL, for access
//! logs that live in a warehouse. Each query reads a table `access_log` with the shipped
//! format's columns — `time` (RFC 3339 text), `method`, `path`, `code`, `duration_ms`,
//! `exposure` and `units` (JSON text or NULL) — and returns one row per experiment and variant
//! with the same sums [`super::collect::Sums`] holds: `units`, `sum__<value>` and
//! `cross__<a>__<b>` for the values of [`super::collect::value_names`]. `analyze --aggregates`
//! runs the statistics on those rows, so the heavy part runs where the logs are. The streaming
//! reader is the reference: `tests/reference/duckdb_check.py` runs the DuckDB and ClickHouse
//! (chDB) queries for real over the same lines and requires the same sums.

mod bigquery;
mod clickhouse;
mod duckdb;

pub use bigquery::bigquery;
pub use clickhouse::clickhouse;
pub use duckdb::duckdb;

use super::collect::value_names;
use super::goal::{Goal, PathMatch};

/// A value's column-safe name: `converted:purchase` → `converted_purchase`.
pub fn column(value: &str) -> String {
    value.replace(':', "_")
}

/// `sum__<a>` and `cross__<a>__<b>` (a before b in the value order).
pub fn sum_column(a: &str) -> String {
    format!("sum__{}", column(a))
}

pub fn cross_column(a: &str, b: &str) -> String {
    format!("cross__{}__{}", column(a), column(b))
}

/// A SQL string literal (the same in the three dialects: quotes doubled; the names it
/// quotes are configuration keys and goal paths).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The engines `--sql` writes for.
pub const DIALECTS: [&str; 3] = ["duckdb", "clickhouse", "bigquery"];

/// The query for `dialect`, or `None` for an engine it does not know.
pub fn query(dialect: &str, config: &abmesh::Config, goals: &[Goal]) -> Option<String> {
    match dialect {
        "duckdb" => Some(duckdb(config, goals)),
        "clickhouse" => Some(clickhouse(config, goals)),
        "bigquery" => Some(bigquery(config, goals)),
        _ => None,
    }
}

/// How a dialect writes what every query needs: a conversion to a double, and a goal's test
/// of a line's path, method and status (columns `lu.path`, `lu.method`, `lu.code`).
struct Dialect {
    double: fn(&str) -> String,
    /// The path without its query string.
    bare_path: &'static str,
    starts_with: fn(&str, &str) -> String,
    status_class: fn(&str) -> String,
    /// How many rows of the group meet a condition.
    count_if: fn(&str) -> String,
    /// The sum of a value over the rows that meet a condition, 0 when none does.
    sum_if: fn(&str, &str) -> String,
}

/// The per-unit columns: requests after and before the first exposure, 5xx and duration after
/// it, and per goal the requests that reached it (`lu` a line of the unit, `f` its first
/// exposure).
fn per_unit(d: &Dialect, goals: &[Goal]) -> Vec<String> {
    let after = "lu.t >= f.first_start";
    let mut out = vec![
        format!("{} AS requests", (d.count_if)(after)),
        format!("{} AS pre_requests", (d.count_if)("lu.t < f.first_start")),
        format!(
            "{} AS errors_5xx",
            (d.count_if)(&format!("{after} AND lu.code >= 500"))
        ),
        format!("{} AS duration_ms", (d.sum_if)("lu.duration_ms", after)),
    ];
    for g in goals {
        let cond = format!("{after} AND {}", goal_condition(d, g));
        out.push(format!("{} AS goals_{}", (d.count_if)(&cond), g.name));
    }
    out
}

/// The condition a line meets to reach `goal`.
fn goal_condition(d: &Dialect, goal: &Goal) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &goal.method {
        parts.push(format!("lu.method = {}", lit(m)));
    }
    parts.push(match &goal.path {
        PathMatch::Exact(p) => format!("{} = {}", d.bare_path, lit(p)),
        PathMatch::Prefix(p) => (d.starts_with)(d.bare_path, &lit(p)),
    });
    if let Some(c) = goal.class {
        parts.push(format!("{} = {c}", (d.status_class)("lu.code")));
    }
    parts.join(" AND ")
}

/// The final select's columns: `units`, then every value's sum and every product's sum over
/// the per-unit columns (`requests`, `goals_<g>`, …) of `per_unit`.
fn sums(d: &Dialect, goals: &[Goal]) -> Vec<String> {
    let names = value_names(goals);
    let value = |name: &str| -> String {
        match name.split_once(':') {
            Some(("converted", g)) => {
                (d.double)(&format!("CASE WHEN goals_{g} > 0 THEN 1 ELSE 0 END"))
            }
            Some(("goals", g)) => (d.double)(&format!("goals_{g}")),
            _ => (d.double)(name),
        }
    };
    let mut out = vec!["count(*) AS units".to_string()];
    for n in &names {
        out.push(format!("sum({}) AS {}", value(n), sum_column(n)));
    }
    for (i, a) in names.iter().enumerate() {
        for b in &names[i..] {
            out.push(format!(
                "sum({} * {}) AS {}",
                value(a),
                value(b),
                cross_column(a, b)
            ));
        }
    }
    out
}

/// The query's end, the same in every dialect: per unit its columns over its lines (the
/// aliases keep the names ClickHouse would otherwise qualify), then per variant the sums;
/// `settings` closes the statement.
fn per_unit_and_sums(d: &Dialect, goals: &[Goal], settings: &str) -> String {
    format!(
        "per_unit AS (
  SELECT f.experiment AS experiment, f.variant AS variant, f.unit_type, f.unit_id,
    {}
  FROM first_exposures f
  LEFT JOIN line_units lu ON lu.unit_type = f.unit_type AND lu.unit_id = f.unit_id
  GROUP BY f.experiment, f.variant, f.unit_type, f.unit_id
)
SELECT experiment, variant,
  {}
FROM per_unit
GROUP BY experiment, variant
ORDER BY experiment, variant{settings};
",
        per_unit(d, goals).join(",\n    "),
        sums(d, goals).join(",\n  "),
    )
}

/// Every configured (experiment, variant) pair, and every unit type.
fn configured(config: &abmesh::Config) -> (Vec<(String, String)>, Vec<String>) {
    let pairs = config
        .experiments
        .iter()
        .flat_map(|e| e.variants.iter().map(|v| (lit(&e.key), lit(&v.name))))
        .collect();
    let units = config.units.iter().map(|u| lit(&u.name)).collect();
    (pairs, units)
}
