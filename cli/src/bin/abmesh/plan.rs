//! `abmesh plan`: sample size and duration.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::common::{out, usage_error};

/// `abmesh plan`: sample size and duration.
pub fn run(args: &[OsString]) -> ExitCode {
    use abmesh_cli::power::{Effect, Input, Metric};
    let mut input = Input::new(Metric::Proportion { baseline: 0.0 }, Effect::Absolute(0.0));
    let (mut metric, mut effect, mut json) = (None, None, false);
    let (mut requests_per_unit, mut design_effect) = (None, None);
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let Some(flag) = flag.to_str() else {
            return usage_error("arguments must be flags");
        };
        if flag == "--json" {
            json = true;
            continue;
        }
        let Some(value) = rest.next() else {
            return usage_error(&format!("{flag} needs a value"));
        };
        // `NaN` and `inf` parse as floats but are no answer to any of these questions.
        let Some(v) = value
            .to_str()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
        else {
            return usage_error(&format!(
                "{flag} needs a finite number, found '{}'",
                value.to_string_lossy()
            ));
        };
        match flag {
            "--baseline-rate" => metric = Some(Metric::Proportion { baseline: v }),
            "--sd" => metric = Some(Metric::Mean { sd: v }),
            "--mde" => effect = Some(Effect::Absolute(v)),
            "--mde-relative" => effect = Some(Effect::Relative(v)),
            "--alpha" => input.alpha = v,
            "--power" => input.power = v,
            "--variants" if v >= 0.0 && v.fract() == 0.0 => input.variants = v as usize,
            "--variants" => return usage_error("--variants needs a whole number"),
            "--mixing" => input.mixing = v,
            "--daily-units" => input.daily_units = Some(v),
            "--traffic-percent" => input.traffic_percent = v,
            "--requests-per-unit" => requests_per_unit = Some(v),
            "--design-effect" => design_effect = Some(v),
            other => return usage_error(&format!("unknown option {other}")),
        }
    }
    let (Some(m), Some(e)) = (metric, effect) else {
        return usage_error(
            "plan needs --baseline-rate RATE or --sd SD, and --mde EFFECT or --mde-relative FRACTION",
        );
    };
    input.metric = m;
    input.effect = e;
    input.per_request = match (requests_per_unit, design_effect) {
        (None, None) => None,
        (Some(r), Some(d)) => Some(abmesh_cli::power::PerRequest {
            requests_per_unit: r,
            design_effect: d,
        }),
        _ => {
            return usage_error(
                "--requests-per-unit and --design-effect go together (guard --json reports the design effect it measures)",
            )
        }
    };
    // An input out of its range is a usage error (2); a plan that cannot be met is not (1).
    if let Err(e) = abmesh_cli::power::check_input(&input) {
        return usage_error(&e);
    }
    let p = match abmesh_cli::power::sample_size(&input) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("abmesh: {e}");
            return ExitCode::from(1);
        }
    };
    let k = input.variants as u64;
    if json {
        let v = serde_json::json!({
            "metric": match m { Metric::Proportion { .. } => "proportion", Metric::Mean { .. } => "mean" },
            "baseline_rate": match m { Metric::Proportion { baseline } => Some(baseline), _ => None },
            "sd": match m { Metric::Mean { sd } => Some(sd), _ => None },
            "mde": p.delta, "alpha": input.alpha, "power": input.power, "variants": input.variants,
            "comparisons": p.comparisons, "alpha_per_comparison": p.alpha_per_comparison,
            "correction": "bonferroni", "mixing": input.mixing,
            "fixed_horizon": {"per_variant": p.per_variant_fixed(), "total": p.per_variant_fixed() * k, "days": p.days_fixed},
            "sequential": {"per_variant": p.per_variant_sequential(), "total": p.per_variant_sequential() * k, "days": p.days_sequential},
            "sequential_inflation": p.inflation(),
            "daily_units": input.daily_units, "traffic_percent": input.traffic_percent,
            "unit": "units (the randomization unit: users, devices…), not requests",
            "requests_per_unit": input.per_request.map(|r| r.requests_per_unit),
            "design_effect": input.per_request.map(|r| r.design_effect),
        });
        out(&format!("{v}\n"));
        return ExitCode::SUCCESS;
    }
    let mut text = match m {
        Metric::Proportion { baseline } => format!(
            "metric: a rate, baseline {:.2}%; minimum detectable effect {:+.2} points ({:.2}% against {:.2}%)\n",
            baseline * 100.0,
            p.delta * 100.0,
            (baseline + p.delta) * 100.0,
            baseline * 100.0
        ),
        Metric::Mean { sd } => format!(
            "metric: a mean, standard deviation {sd}; minimum detectable effect {:+} ({:+.3} standard deviations)\n",
            p.delta,
            p.delta / sd
        ),
    };
    text.push_str(&format!(
        "{} variants: {} comparison{} against control at alpha {} each (alpha {} / {}, Bonferroni), power {}%\n",
        input.variants,
        p.comparisons,
        if p.comparisons == 1 { "" } else { "s" },
        p.alpha_per_comparison,
        input.alpha,
        p.comparisons,
        input.power * 100.0
    ));
    text.push_str(&match input.per_request {
        None => "counted in units (the randomization unit: users, devices…), one observation each; for a per-request metric give --requests-per-unit and --design-effect\n".to_string(),
        Some(r) => format!(
            "counted in units (the randomization unit), not requests: a per-request metric at {} requests per unit with design effect {} (each unit worth {:.2} independent requests)\n",
            r.requests_per_unit,
            r.design_effect,
            r.requests_per_unit / r.design_effect
        ),
    });
    let thousands = abmesh::config::limits::grouped;
    if let Some(d) = input.daily_units {
        text.push_str(&format!(
            "days at {} units a day, {}% of them in the experiment\n",
            thousands(d.round() as u64),
            input.traffic_percent
        ));
    }
    let days = |d: Option<f64>| {
        d.map_or(String::new(), |d| {
            format!(", {d} day{}", if d == 1.0 { "" } else { "s" })
        })
    };
    text.push_str(&format!(
        "fixed horizon (one look):        {} per variant, {} in total{}\n",
        thousands(p.per_variant_fixed()),
        thousands(p.per_variant_fixed() * k),
        days(p.days_fixed)
    ));
    text.push_str(&format!(
        "sequential (guard's default):    {} per variant, {} in total{} ({:.2}x; mixing {})\n",
        thousands(p.per_variant_sequential()),
        thousands(p.per_variant_sequential() * k),
        days(p.days_sequential),
        p.inflation(),
        input.mixing
    ));
    out(&text);
    ExitCode::SUCCESS
}
