//! The ClickHouse query. `access_log`'s columns may be text or numbers (a `JSONEachRow`
//! import infers either); a `LEFT JOIN` gives NULLs rather than zeros for units without a
//! line (`join_use_nulls`), so they count no request.

use abmesh::Config;

use super::{configured, per_unit_and_sums, Dialect};
use crate::analyze::goal::Goal;

const CLICKHOUSE: Dialect = Dialect {
    double: |x| format!("toFloat64({x})"),
    bare_path: "splitByChar('?', lu.path)[1]",
    starts_with: |a, b| format!("startsWith({a}, {b})"),
    status_class: |c| format!("intDiv({c}, 100)"),
    count_if: |c| format!("countIf({c})"),
    sum_if: |v, c| format!("sumIf(ifNull({v}, 0), {c})"),
};

/// The ClickHouse query.
pub fn clickhouse(config: &Config, goals: &[Goal]) -> String {
    let (pairs, units) = configured(config);
    let variants: Vec<String> = pairs.iter().map(|(e, v)| format!("({e}, {v})")).collect();
    let units: Vec<String> = units.iter().map(|u| format!("({u})")).collect();
    format!(
        "-- abmesh analyze --sql clickhouse: per-variant sums over exposed units.
-- Reads the table access_log (the shipped access-log format); one row per experiment and variant.
WITH
configured AS (SELECT * FROM VALUES('experiment String, variant String', {variants})),
unit_types AS (SELECT * FROM VALUES('unit_type String', {units})),
lines AS (
  SELECT
    toString(method) AS method,
    toString(path) AS path,
    toInt32OrNull(toString(code)) AS code,
    toFloat64OrNull(toString(duration_ms)) AS duration_ms,
    if(isValidJSON(ifNull(toString(exposure), '')), toString(exposure), NULL) AS exposure,
    if(isValidJSON(ifNull(toString(units), '')), toString(units), NULL) AS units,
    toUnixTimestamp64Milli(parseDateTime64BestEffortOrNull(toString(time), 3, 'UTC')) AS t
  FROM access_log
  WHERE method IS NOT NULL AND path IS NOT NULL
    AND parseDateTime64BestEffortOrNull(toString(time), 3, 'UTC') IS NOT NULL
),
assigned AS (
  SELECT
    JSONExtractInt(assumeNotNull(l.exposure), 'ts_ms') AS ts_ms,
    l.t AS start_ms,
    assumeNotNull(l.exposure) AS exposure,
    arrayJoin(JSONExtractArrayRaw(assumeNotNull(l.exposure), 'assignments')) AS a
  FROM lines l
  WHERE l.exposure IS NOT NULL
),
exposures AS (
  SELECT
    JSONExtractString(a, 'experiment') AS experiment,
    JSONExtractString(a, 'variant') AS variant,
    JSONExtractString(a, 'unit') AS unit_type,
    if(JSONHas(exposure, 'units', JSONExtractString(a, 'unit')),
       JSONExtractString(exposure, 'units', JSONExtractString(a, 'unit')), NULL) AS unit_id,
    ts_ms,
    start_ms
  FROM assigned
  WHERE JSONExtractRaw(a, 'forced') = 'false'
),
first_exposures AS (
  SELECT x.experiment AS experiment, x.unit_type AS unit_type, x.unit_id AS unit_id,
         min(x.ts_ms) AS first_ms,
         argMin(x.variant, x.ts_ms) AS variant,
         -- the start of the request that carried the first record: later requests start at or after it
         argMin(x.start_ms, (x.ts_ms, x.start_ms)) AS first_start
  FROM exposures x
  JOIN configured c ON c.experiment = x.experiment AND c.variant = x.variant
  JOIN unit_types u ON u.unit_type = x.unit_type
  WHERE x.unit_id IS NOT NULL
  GROUP BY x.experiment, x.unit_type, x.unit_id
),
line_units AS (
  SELECT l.t AS t, l.method AS method, l.path AS path, l.code AS code, l.duration_ms AS duration_ms,
         kv.1 AS unit_type, kv.2 AS unit_id
  FROM lines l
  ARRAY JOIN JSONExtractKeysAndValues(ifNull(l.units, '{{}}'), 'String') AS kv
  WHERE l.units IS NOT NULL
),
{tail}",
        variants = variants.join(", "),
        units = units.join(", "),
        tail = per_unit_and_sums(&CLICKHOUSE, goals, "\nSETTINGS join_use_nulls = 1"),
    )
}
