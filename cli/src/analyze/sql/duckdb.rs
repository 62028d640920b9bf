//! The DuckDB query.

use abmesh::Config;

use super::{configured, per_unit_and_sums, Dialect};
use crate::analyze::goal::Goal;

const DUCKDB: Dialect = Dialect {
    double: |x| format!("CAST({x} AS DOUBLE)"),
    bare_path: "split_part(lu.path, '?', 1)",
    starts_with: |a, b| format!("starts_with({a}, {b})"),
    status_class: |c| format!("{c} // 100"),
    count_if: |c| format!("count(*) FILTER (WHERE {c})"),
    sum_if: |v, c| format!("coalesce(sum({v}) FILTER (WHERE {c}), 0)"),
};

/// The DuckDB query.
pub fn duckdb(config: &Config, goals: &[Goal]) -> String {
    let (pairs, units) = configured(config);
    let variants: Vec<String> = pairs.iter().map(|(e, v)| format!("({e}, {v})")).collect();
    let units: Vec<String> = units.iter().map(|u| format!("({u})")).collect();
    format!(
        "-- abmesh analyze --sql duckdb: per-variant sums over exposed units.
-- Reads the relation access_log (the shipped access-log format); one row per experiment and variant.
WITH
configured(experiment, variant) AS (VALUES {variants}),
unit_types(unit_type) AS (VALUES {units}),
lines AS (
  SELECT
    CAST(method AS VARCHAR) AS method,
    CAST(path AS VARCHAR) AS path,
    TRY_CAST(code AS INTEGER) AS code,
    TRY_CAST(duration_ms AS DOUBLE) AS duration_ms,
    CASE WHEN json_valid(CAST(exposure AS VARCHAR)) THEN CAST(exposure AS VARCHAR) END AS exposure,
    CASE WHEN json_valid(CAST(units AS VARCHAR)) THEN CAST(units AS VARCHAR) END AS units,
    epoch_ms(TRY_CAST(time AS TIMESTAMPTZ)) AS t
  FROM access_log
  WHERE method IS NOT NULL AND path IS NOT NULL AND TRY_CAST(time AS TIMESTAMPTZ) IS NOT NULL
),
assigned AS (
  SELECT
    CAST(json_extract(l.exposure, '$.ts_ms') AS BIGINT) AS ts_ms,
    l.t AS start_ms,
    l.exposure,
    unnest(json_extract(l.exposure, '$.assignments[*]')) AS a
  FROM lines l
  WHERE l.exposure IS NOT NULL
),
exposures AS (
  SELECT
    json_extract_string(a, '$.experiment') AS experiment,
    json_extract_string(a, '$.variant') AS variant,
    json_extract_string(a, '$.unit') AS unit_type,
    json_extract_string(exposure, '$.units.\"' || json_extract_string(a, '$.unit') || '\"') AS unit_id,
    ts_ms,
    start_ms
  FROM assigned
  WHERE json_extract_string(a, '$.forced') = 'false'
),
first_exposures AS (
  SELECT x.experiment, x.unit_type, x.unit_id, min(x.ts_ms) AS first_ms,
         arg_min(x.variant, x.ts_ms) AS variant,
         -- the start of the request that carried the first record: later requests start at or after it
         arg_min(x.start_ms, (x.ts_ms, x.start_ms)) AS first_start
  FROM exposures x
  JOIN configured c ON c.experiment = x.experiment AND c.variant = x.variant
  JOIN unit_types u ON u.unit_type = x.unit_type
  WHERE x.unit_id IS NOT NULL
  GROUP BY x.experiment, x.unit_type, x.unit_id
),
line_units AS (
  SELECT l.t, l.method, l.path, l.code, l.duration_ms, k.unit_type,
         json_extract_string(l.units, '$.\"' || k.unit_type || '\"') AS unit_id
  FROM lines l, unnest(json_keys(l.units)) AS k(unit_type)
  WHERE l.units IS NOT NULL
),
{tail}",
        variants = variants.join(", "),
        units = units.join(", "),
        tail = per_unit_and_sums(&DUCKDB, goals, ""),
    )
}
