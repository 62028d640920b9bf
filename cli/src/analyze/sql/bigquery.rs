//! The BigQuery (GoogleSQL) query. A JSONPath in BigQuery must be a literal, so each unit
//! type of the configuration gets its own path (`$.units."user"`) instead of a key looked up
//! at run time.

use abmesh::Config;

use super::{configured, per_unit_and_sums, Dialect};
use crate::analyze::goal::Goal;

const BIGQUERY: Dialect = Dialect {
    double: |x| format!("CAST({x} AS FLOAT64)"),
    bare_path: "SPLIT(lu.path, '?')[SAFE_OFFSET(0)]",
    starts_with: |a, b| format!("STARTS_WITH({a}, {b})"),
    status_class: |c| format!("DIV({c}, 100)"),
    count_if: |c| format!("COUNTIF({c})"),
    sum_if: |v, c| format!("COALESCE(SUM(IF({c}, {v}, 0)), 0)"),
};

/// `$."name"` for a key of the configuration (names hold no quote or backslash).
fn path(prefix: &str, name: &str) -> String {
    format!("'{prefix}\"{}\"'", name.replace('\'', "\\'"))
}

/// The BigQuery query.
pub fn bigquery(config: &Config, goals: &[Goal]) -> String {
    let (pairs, _) = configured(config);
    let variants: Vec<String> = pairs
        .iter()
        .map(|(e, v)| format!("STRUCT({e} AS experiment, {v} AS variant)"))
        .collect();
    let id_in = |json: &str, prefix: &str, unit: &str| {
        let cases: Vec<String> = config
            .units
            .iter()
            .map(|u| {
                format!(
                    "WHEN {} THEN JSON_VALUE({json}, {})",
                    super::lit(&u.name),
                    path(prefix, &u.name)
                )
            })
            .collect();
        format!("CASE {unit} {} END", cases.join(" "))
    };
    let unit_names: Vec<String> = config.units.iter().map(|u| super::lit(&u.name)).collect();
    format!(
        "-- abmesh analyze --sql bigquery: per-variant sums over exposed units.
-- Reads the table access_log (the shipped access-log format: replace it with your table,
-- `project.dataset.table`); one row per experiment and variant.
WITH
configured AS (SELECT * FROM UNNEST([{variants}])),
unit_types AS (SELECT unit_type FROM UNNEST([{unit_names}]) AS unit_type),
lines AS (
  SELECT
    CAST(method AS STRING) AS method,
    CAST(path AS STRING) AS path,
    SAFE_CAST(code AS INT64) AS code,
    SAFE_CAST(duration_ms AS FLOAT64) AS duration_ms,
    IF(SAFE.PARSE_JSON(CAST(exposure AS STRING)) IS NOT NULL, CAST(exposure AS STRING), NULL) AS exposure,
    IF(SAFE.PARSE_JSON(CAST(units AS STRING)) IS NOT NULL, CAST(units AS STRING), NULL) AS units,
    UNIX_MILLIS(SAFE_CAST(CAST(time AS STRING) AS TIMESTAMP)) AS t
  FROM access_log
  WHERE method IS NOT NULL AND path IS NOT NULL
    AND SAFE_CAST(CAST(time AS STRING) AS TIMESTAMP) IS NOT NULL
),
assigned AS (
  SELECT
    SAFE_CAST(JSON_VALUE(l.exposure, '$.ts_ms') AS INT64) AS ts_ms,
    l.t AS start_ms,
    l.exposure,
    a
  FROM lines l, UNNEST(JSON_QUERY_ARRAY(l.exposure, '$.assignments')) AS a
  WHERE l.exposure IS NOT NULL
),
exposures AS (
  SELECT
    JSON_VALUE(a, '$.experiment') AS experiment,
    JSON_VALUE(a, '$.variant') AS variant,
    JSON_VALUE(a, '$.unit') AS unit_type,
    {exposure_id} AS unit_id,
    ts_ms,
    start_ms
  FROM assigned
  WHERE JSON_VALUE(a, '$.forced') = 'false'
),
ranked AS (
  SELECT x.*,
         ROW_NUMBER() OVER (PARTITION BY x.experiment, x.unit_type, x.unit_id ORDER BY x.ts_ms, x.start_ms) AS n
  FROM exposures x
  JOIN configured c ON c.experiment = x.experiment AND c.variant = x.variant
  JOIN unit_types u ON u.unit_type = x.unit_type
  WHERE x.unit_id IS NOT NULL
),
first_exposures AS (
  -- the first record decides the variant; its request's start: later requests start at or after it
  SELECT experiment, unit_type, unit_id, ts_ms AS first_ms, variant, start_ms AS first_start
  FROM ranked
  WHERE n = 1
),
line_units AS (
  SELECT * FROM (
    SELECT l.t, l.method, l.path, l.code, l.duration_ms, u.unit_type,
           {line_id} AS unit_id
    FROM lines l CROSS JOIN unit_types u
    WHERE l.units IS NOT NULL
  ) WHERE unit_id IS NOT NULL
),
{tail}",
        variants = variants.join(", "),
        unit_names = unit_names.join(", "),
        exposure_id = id_in("exposure", "$.units.", "JSON_VALUE(a, '$.unit')"),
        line_id = id_in("l.units", "$.", "u.unit_type"),
        tail = per_unit_and_sums(&BIGQUERY, goals, ""),
    )
}
