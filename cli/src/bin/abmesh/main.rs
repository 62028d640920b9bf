//! `abmesh`: check a configuration, show what the filter does to one request, judge
//! guardrails, plan sample sizes and import peers' definitions. One module per command.

use std::ffi::OsString;
use std::process::ExitCode;

mod analyze;
mod assign;
mod check;
mod common;
mod guard;
mod import;
mod plan;

use common::{out, usage_error};

const HELP: &str = "\
abmesh — online experiments (A/B tests) at the service mesh

usage:
  abmesh check CONFIG [--time RFC3339]
      Validate a plugin configuration (JSON; '-' reads standard input). Prints a summary
      (experiments with their variants and bucket ranges, ramps and the step in force at
      --time (default now), layers with their bucket maps, holdout) and exits 0, or prints
      every error, one per line as 'path: rule', and exits 1.

  abmesh assign CONFIG [--header NAME=VALUE]... [--cookie NAME=VALUE]... [--query QUERY]
                       [--path PATH] [--method METHOD] [--host HOST] [--time RFC3339]
      Print exactly what the filter would do to that request, in its order: the request
      headers it removes and sets, the log line and filter state it writes, the response
      header it echoes and cookies it adds, the experiments that gave no variant and why, and
      the exposure record. Defaults: --path /, --method GET, --time now.
      Header and cookie values are taken byte for byte (they may be any bytes).

  abmesh guard --config CONFIG (--stats URL_OR_FILE | --prometheus URL [--window 1h])
               [--auth-env VAR | --auth-file FILE] [--cacert PEM] [--timeout SECONDS] [--json]
               [--max-error-increase POINTS] [--max-latency-increase MS] [--alpha A]
               [--fixed-horizon | --mixing M] [--per-request]
      Judge every running experiment in force: from Prometheus text (Envoy's
      /stats/prometheus or a Prometheus federation URL over http:// or https://, or a file),
      or from a Prometheus server's query API (--prometheus: sums over every proxy; --window:
      only what each series gained in that recent window). --auth-env/--auth-file: the Authorization value
      (a bare token is sent as Bearer); never printed. --cacert: trust these CAs instead of
      the system's. --timeout: each HTTP request's deadline, connection to last byte (default
      10 s); a stats file or body past 64 MiB is refused. Per unit: with the filter's replicate series every variance is
      cluster-robust (--per-request ignores them, and without them guard says its p-values
      assume independent requests). Tests a traffic-share mismatch of the split against the
      configured weights, and per variant the 5xx ratio and mean latency against control. Sequential by default: always-valid p-values and 95% confidence
      sequences (mSPRT, mixing M = 0.1 standard deviations), valid however often guard runs;
      --fixed-horizon uses the classic tests for one planned look. Every decision of the run
      is Holm-adjusted at A (default 0.05); P(better) is the Bayesian probability that the
      variant beats control (reported only). Exits 3 when SRM p < 0.001, or when a variant's
      5xx ratio is worse than control by more than POINTS percentage points (default 0.5), or
      its mean latency by more than MS when given.

  abmesh guard ... --write-config OUT.json [--rollback-to paused|control]
      Also write the configuration with every experiment that breached a guardrail or shows
      SRM set to 'paused' (default) or, with --rollback-to control, 'rolled_out' with its
      control (first) variant as the winner; every other experiment, ramps included, is kept.
      Each change is printed with its reasons. Exits 0 when nothing changed, 3 when it did.

  abmesh guard ... --serve ADDR
      Evaluate on every request instead of once, and answer over HTTP at ADDR (host:port):
      /flagger is Flagger's webhook (200 advances; 412 breached, 503 no evidence halt; the
      reasons in the body), /argo a JSON document for an Argo Rollouts web metric (verdict
      healthy, breached or no_evidence), /metrics the verdicts for Prometheus
      (abmesh_guard_healthy{experiment}, _breaches, _srm, _no_evidence). ?experiment=KEY or
      Flagger's metadata.experiment narrows the verdict to one experiment.

  abmesh analyze --config CONFIG (--access-log FILE... | --sql ENGINE | --aggregates FILE)
                 [--goal NAME=SPEC]... [--goals FILE] [--json] [--html OUT]
                 [--fixed-horizon | --mixing M] [--alpha A] [--cuped] [--strict]
      Per-unit results from the access logs Envoy wrote (the shipped format: files, globs, - for
      standard input, gzip by content): each unit's first exposure from the exposure records,
      every later request of the unit attributed to its variant through wasm.abmesh_units. A
      goal is NAME=[METHOD ]PATH[ CLASS] (PATH exact, or a prefix ending in *), e.g.
      purchase=POST /checkout/complete 2xx; --goals reads one per line. Per experiment: exposed
      units and the exact binomial SRM against the configured shares; per variant against
      control, per goal the conversion and goals per unit, requests per unit, 5xx per request
      and duration per request (delta method), with always-valid 95% confidence sequences by
      default, Holm over every comparison. Lines it cannot use are counted by kind with their
      first locations; --strict makes any exit 1. Exits 3 on SRM (p < 0.001). --sql duckdb,
      clickhouse or bigquery prints the same aggregation as one query over a table access_log
      (the log's fields as columns); --aggregates reads its rows (JSON lines) and reports the
      same statistics.
      --cuped adjusts per-unit means by each unit's requests before its first exposure.
      --html OUT also writes a page: the tables, per metric the cumulative effect by day of
      first exposure inside its confidence sequence, the units first exposed per day.

  abmesh import growthbook|flagd FILE [--map MAPPING] [--bucketing v2|v3] [--allow-partial]
      Translate a GrowthBook SDK payload (features with experiment rules) or a flagd flag file
      (flags whose targeting splits with fractional, at the top or as one branch of an if)
      into an abmesh configuration that assigns identically, printed on standard output.
      Conditions become `when` where it says exactly the same. Attributes are read from the
      header x-gb-NAME or x-flagd-NAME (NAME lower-cased, split at camel case: targetingKey
      is x-flagd-targeting-key); MAPPING, a JSON object of attribute -> {\"header\"|\"cookie\"|
      \"query\": NAME}, says otherwise. --bucketing: flagd's v2 (its releases, the default) or
      v3 (CBOR). Standard error says how to carry each attribute, notes (such as a flag's
      default variant) and what cannot be expressed at the mesh, with the reason; then the
      command exits 1 unless --allow-partial. FILE may hold at most 16 MiB.

  abmesh plan (--baseline-rate RATE | --sd SD) (--mde EFFECT | --mde-relative FRACTION)
              [--alpha 0.05] [--power 0.8] [--variants 2] [--daily-units N]
              [--traffic-percent 100] [--mixing 0.1] [--json]
              [--requests-per-unit M --design-effect D]
      Sample size per variant and duration: for a rate (baseline as a fraction, effect in the
      same units, or relative to the baseline) or a mean (standard deviation, effect in its
      units); several variants are each compared with control (Bonferroni). Gives the
      fixed-horizon size and the larger size sequential monitoring needs (guard's default).
      Sizes count units (the randomization unit), not requests. For a per-request metric (the
      5xx ratio, mean latency) give the mean requests per unit M and the design effect D that
      guard reports from the replicates (on an A/A or the pre-period): each unit then counts as
      M / D observations.

  abmesh --help | --version        (also: abmesh COMMAND --help)

exit codes: 0 success (guard: healthy, with evidence), 1 invalid configuration or unreadable
input (guard: a source that fails, with its URL and HTTP status), 2 usage error, 3 guardrail
breached (guard --write-config: the written configuration changed; analyze: sample ratio
mismatch), 4 guard: no evidence (no
samples, no abmesh series or labels, or a running experiment without assignments; nothing
is written)
";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // `abmesh plan --help` is how people ask; it must not be read as a file or an option value.
    if args.iter().skip(1).any(|a| a == "--help" || a == "-h") {
        out(HELP);
        return ExitCode::SUCCESS;
    }
    match args.first().and_then(|a| a.to_str()) {
        None => usage_error("missing command (check, assign, guard, analyze, import or plan)"),
        Some("--help" | "-h" | "help") => {
            out(HELP);
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            out(&format!("abmesh {}\n", env!("CARGO_PKG_VERSION")));
            ExitCode::SUCCESS
        }
        Some("check") => check::run(&args[1..]),
        Some("assign") => assign::run(&args[1..]),
        Some("guard") => guard::run(&args[1..]),
        Some("analyze") => analyze::run(&args[1..]),
        Some("import") => import::run(&args[1..]),
        Some("plan") => plan::run(&args[1..]),
        Some(other) => usage_error(&format!("unknown command '{other}'")),
    }
}
