//! `analyze --html`: the report as one self-contained page (inline SVG, no script, nothing
//! fetched) that a product owner opens: per experiment the split and its SRM verdict, the
//! table of effects, per metric the cumulative effect by day of first exposure inside its
//! confidence sequence, and the units first exposed per day and variant.

use std::fmt::Write;

use super::render::{self, daily_units, day, number as value, signed};
use super::report::{Effect, ExperimentResult, SRM_ALPHA};
use super::Analysis;
use abmesh::config::limits::grouped;

/// Variant colours (control is never drawn against itself; bars use all of them).
const COLOURS: [&str; 8] = [
    "#6b7280", "#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2",
];

const WIDTH: f64 = 680.0;
const HEIGHT: f64 = 220.0;
/// Room for the axes' labels: left, right, top, bottom.
const PAD: (f64, f64, f64, f64) = (64.0, 16.0, 12.0, 28.0);

/// Text made safe for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A p-value as the text report writes it, made safe for HTML.
fn p(x: f64) -> String {
    esc(&render::p(x))
}

/// The report as an HTML page.
pub fn render_html(a: &Analysis) -> String {
    let mut o = String::new();
    let keys: Vec<&str> = a.experiments.iter().map(|e| e.key.as_str()).collect();
    let level = format!("{:.0}%", 100.0 * (1.0 - a.options.alpha));
    let (interval, how) = match a.options.mixing {
        Some(m) => ("confidence sequence", format!("always-valid {level} confidence sequences (mixing {m}): valid however often the results are looked at")),
        None => ("confidence interval", format!("fixed-horizon {level} intervals: valid for one planned look only")),
    };
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>abmesh analyze: {}</title><style>{STYLE}</style></head><body>\n\
         <h1>Experiment results</h1>\n<p class=\"meta\">{} access-log lines; {how}; p-values Holm-adjusted over every comparison{}.</p>\n",
        esc(&keys.join(", ")),
        grouped(a.lines),
        if a.options.cuped { "; means adjusted by each unit's requests before its first exposure (CUPED)" } else { "" },
    );
    if a.tally.total() > 0 {
        let _ = write!(
            o,
            "<div class=\"warn\"><b>{} lines or inputs could not be used:</b><ul>",
            grouped(a.tally.total())
        );
        for (problem, (n, at)) in &a.tally.0 {
            let _ = write!(
                o,
                "<li>{} × {} (first: {})</li>",
                grouped(*n),
                esc(problem.describe()),
                esc(&at.join(", "))
            );
        }
        o.push_str("</ul></div>\n");
    }
    if a.experiments.is_empty() {
        o.push_str("<p>No experiment has exposed units in these logs.</p>\n");
    }
    for e in &a.experiments {
        experiment(&mut o, a, e, interval);
    }
    o.push_str("<footer>Made by <code>abmesh analyze</code>. Every unit counts once, however many requests it sent: the statistics are over units, the randomization unit.</footer>\n</body></html>\n");
    o
}

fn experiment(o: &mut String, a: &Analysis, e: &ExperimentResult, interval: &str) {
    let total: u64 = e.variants.iter().map(|v| v.units).sum();
    let _ = writeln!(
        o,
        "<section><h2>{} <small>by {}</small></h2>",
        esc(&e.key),
        esc(&e.unit)
    );
    let srm = e.srm_p.is_some_and(|p| p < SRM_ALPHA);
    let split: Vec<String> = e
        .variants
        .iter()
        .map(|v| {
            let share = if total > 0 {
                v.units as f64 / total as f64
            } else {
                0.0
            };
            format!(
                "{} {} units ({:.1}%, expected {:.1}%)",
                esc(&v.name),
                grouped(v.units),
                100.0 * share,
                100.0 * v.expected_share
            )
        })
        .collect();
    let _ = writeln!(
        o,
        "<p class=\"{}\"><b>{}</b> {}; exact test p = {}.</p>",
        if srm { "warn" } else { "ok" },
        if srm {
            "Sample ratio mismatch: the split is not what was configured, so the effects below cannot be trusted."
        } else {
            "Split as configured."
        },
        split.join(" · "),
        e.srm_p.map_or("–".into(), p)
    );
    // The table: a row per metric, per variant its value and its effect against control.
    o.push_str("<table><thead><tr><th>metric</th>");
    for (i, v) in e.variants.iter().enumerate() {
        let _ = write!(o, "<th>{}</th>", esc(&v.name));
        if i > 0 {
            let _ = write!(
                o,
                "<th>{} − {}</th><th>lift</th><th>p (Holm)</th>",
                esc(&v.name),
                esc(&e.variants[0].name)
            );
        }
    }
    o.push_str("</tr></thead><tbody>\n");
    for (m, metric) in a.metrics.iter().enumerate() {
        let _ = write!(o, "<tr><td>{}</td>", esc(&metric.name));
        for (i, v) in e.variants.iter().enumerate() {
            let _ = write!(
                o,
                "<td>{}</td>",
                v.values[m].map_or("–".into(), |x| value(x, metric.percent))
            );
            if i == 0 {
                continue;
            }
            match &v.effects[m] {
                Some(x) => {
                    let lift = x.lift.map_or("–".into(), |(l, lo, hi)| {
                        format!(
                            "{:+.1}% [{:+.1}%, {:+.1}%]",
                            100.0 * l,
                            100.0 * lo,
                            100.0 * hi
                        )
                    });
                    let _ = write!(
                        o,
                        "<td class=\"{}\">{} [{}, {}]</td><td>{lift}</td><td>{}</td>",
                        class(x),
                        signed(x.diff, metric.percent),
                        signed(x.diff_low, metric.percent),
                        signed(x.diff_high, metric.percent),
                        p(x.adjusted)
                    );
                }
                None => o.push_str("<td>–</td><td>–</td><td>–</td>"),
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table>\n");
    if e.timeline.is_empty() {
        o.push_str(
            "<p class=\"meta\">No timeline: per-variant aggregates carry no days.</p></section>\n",
        );
        return;
    }
    let _ = writeln!(
        o,
        "<h3>Effect over time</h3><p class=\"meta\">At the end of each day: the units first exposed by then, each with everything it did in the logs; the band is the {interval} (not adjusted for the number of comparisons). Zero inside the band: no effect shown yet.</p>"
    );
    let days: Vec<String> = e.timeline.iter().map(|p| day(p.day)).collect();
    for (m, metric) in a.metrics.iter().enumerate() {
        let series: Vec<Series> = (1..e.variants.len())
            .map(|v| Series {
                name: format!("{} − {}", e.variants[v].name, e.variants[0].name),
                colour: COLOURS[v % COLOURS.len()],
                points: e
                    .timeline
                    .iter()
                    .map(|p| p.effects[v][m].map(|x| (x.diff, x.diff_low, x.diff_high)))
                    .collect(),
            })
            .collect();
        let _ = write!(o, "<figure><figcaption>{}</figcaption>", esc(&metric.name));
        effect_chart(o, &days, &series, metric.percent);
        o.push_str("</figure>\n");
    }
    o.push_str("<h3>Units first exposed per day</h3>\n<figure>");
    let daily = daily_units(e);
    let names: Vec<&str> = e.variants.iter().map(|v| v.name.as_str()).collect();
    bar_chart(o, &days, &daily, &names);
    o.push_str("</figure></section>\n");
}

fn class(x: &Effect) -> &'static str {
    if x.diff_low > 0.0 {
        "up"
    } else if x.diff_high < 0.0 {
        "down"
    } else {
        ""
    }
}

struct Series {
    name: String,
    colour: &'static str,
    /// Per day: the estimate and its interval, when there was one.
    points: Vec<Option<(f64, f64, f64)>>,
}

/// Round steps for an axis from `lo` to `hi`: about four of them.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut out = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 && out.len() < 12 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// The x position of day `i` of `n`.
fn x_of(i: usize, n: usize) -> f64 {
    let inner = WIDTH - PAD.0 - PAD.1;
    if n <= 1 {
        PAD.0 + inner / 2.0
    } else {
        PAD.0 + inner * i as f64 / (n - 1) as f64
    }
}

fn x_labels(o: &mut String, days: &[String]) {
    let n = days.len();
    let mut shown: Vec<usize> = vec![0, n / 2, n.saturating_sub(1)];
    shown.dedup();
    for i in shown {
        // The first and last labels stay inside the chart.
        let anchor = match i {
            _ if n == 1 => "middle",
            0 => "start",
            _ if i + 1 == n => "end",
            _ => "middle",
        };
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" class=\"lab\">{}</text>",
            x_of(i, n),
            HEIGHT - 8.0,
            esc(&days[i])
        );
    }
}

fn effect_chart(o: &mut String, days: &[String], series: &[Series], percent: bool) {
    let all = series.iter().flat_map(|s| s.points.iter().flatten());
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for (_, l, h) in all {
        if l.is_finite() && h.is_finite() {
            (lo, hi) = (lo.min(*l), hi.max(*h));
        }
    }
    if hi - lo <= 0.0 {
        (lo, hi) = (lo - 1.0, hi + 1.0);
    }
    let pad = (hi - lo) * 0.05;
    (lo, hi) = (lo - pad, hi + pad);
    let y = |v: f64| {
        let v = v.clamp(lo, hi);
        PAD.2 + (HEIGHT - PAD.2 - PAD.3) * (hi - v) / (hi - lo)
    };
    let n = days.len();
    let _ = write!(
        o,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for t in ticks(lo, hi) {
        let _ = write!(
            o,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"lab\">{}</text>",
            PAD.0,
            WIDTH - PAD.1,
            if t == 0.0 { "zero" } else { "grid" },
            PAD.0 - 6.0,
            y(t) + 4.0,
            signed(t, percent),
            y = y(t),
        );
    }
    for s in series {
        let known: Vec<(usize, (f64, f64, f64))> = s
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.filter(|(d, l, h)| d.is_finite() && l.is_finite() && h.is_finite())
                    .map(|p| (i, p))
            })
            .collect();
        if known.is_empty() {
            continue;
        }
        // The band: along the upper bounds, back along the lower ones.
        let upper = known
            .iter()
            .map(|(i, (_, _, h))| format!("{:.1},{:.1}", x_of(*i, n), y(*h)));
        let lower = known
            .iter()
            .rev()
            .map(|(i, (_, l, _))| format!("{:.1},{:.1}", x_of(*i, n), y(*l)));
        let band: Vec<String> = upper.chain(lower).collect();
        let line: Vec<String> = known
            .iter()
            .map(|(i, (d, _, _))| format!("{:.1},{:.1}", x_of(*i, n), y(*d)))
            .collect();
        let _ = write!(
            o,
            "<polygon points=\"{}\" fill=\"{c}\" fill-opacity=\"0.15\" stroke=\"none\"/><polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"/>",
            band.join(" "),
            line.join(" "),
            c = s.colour
        );
        if let Some((i, (d, l, h))) = known.last() {
            let _ = write!(
                o,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"><title>{}: {} [{}, {}] on {}</title></circle>",
                x_of(*i, n),
                y(*d),
                s.colour,
                esc(&s.name),
                signed(*d, percent),
                signed(*l, percent),
                signed(*h, percent),
                esc(&days[*i])
            );
        }
    }
    x_labels(o, days);
    o.push_str("</svg><p class=\"legend\">");
    for s in series {
        let _ = write!(
            o,
            "<span style=\"color:{}\">■</span> {} ",
            s.colour,
            esc(&s.name)
        );
    }
    o.push_str("</p>");
}

fn bar_chart(o: &mut String, days: &[String], daily: &[(i64, Vec<u64>)], names: &[&str]) {
    let top = daily
        .iter()
        .flat_map(|(_, n)| n.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = days.len();
    let inner = WIDTH - PAD.0 - PAD.1;
    let slot = inner / n.max(1) as f64;
    let bar = (slot * 0.8 / names.len().max(1) as f64).max(0.5);
    let y = |v: f64| PAD.2 + (HEIGHT - PAD.2 - PAD.3) * (1.0 - v / top);
    let _ = write!(
        o,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for t in ticks(0.0, top) {
        let _ = write!(
            o,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"lab\">{}</text>",
            PAD.0,
            WIDTH - PAD.1,
            PAD.0 - 6.0,
            y(t) + 4.0,
            grouped(t as u64),
            y = y(t),
        );
    }
    for (d, (_, units)) in daily.iter().enumerate() {
        for (v, &u) in units.iter().enumerate() {
            let x = PAD.0 + slot * d as f64 + slot * 0.1 + bar * v as f64;
            let _ = write!(
                o,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} on {}: {} units</title></rect>",
                y(u as f64),
                (HEIGHT - PAD.3 - y(u as f64)).max(0.0),
                COLOURS[v % COLOURS.len()],
                esc(names[v]),
                esc(&days[d]),
                grouped(u)
            );
        }
    }
    for i in [0, n / 2, n.saturating_sub(1)] {
        if let Some(label) = days.get(i) {
            let _ = write!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"lab\">{}</text>",
                PAD.0 + slot * (i as f64 + 0.5),
                HEIGHT - 8.0,
                esc(label)
            );
        }
    }
    o.push_str("</svg><p class=\"legend\">");
    for (v, name) in names.iter().enumerate() {
        let _ = write!(
            o,
            "<span style=\"color:{}\">■</span> {} ",
            COLOURS[v % COLOURS.len()],
            esc(name)
        );
    }
    o.push_str("</p>");
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111}\
h1{font-size:1.6rem}h2{margin-top:2.5rem;border-bottom:1px solid #ddd}h2 small{font-weight:normal;color:#666;font-size:.9rem}\
h3{font-size:1.05rem;margin-top:1.5rem}.meta{color:#555}.warn{background:#fef2f2;border-left:4px solid #dc2626;padding:.5rem 1rem}\
.ok{background:#f0fdf4;border-left:4px solid #059669;padding:.5rem 1rem}table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{border-bottom:1px solid #eee;padding:.3rem .5rem;text-align:right}th:first-child,td:first-child{text-align:left}\
td.up{color:#047857;font-weight:600}td.down{color:#b91c1c;font-weight:600}figure{margin:1rem 0}figcaption{font-weight:600}\
svg{width:100%;height:auto;background:#fff}.grid{stroke:#eee}.zero{stroke:#999;stroke-dasharray:4 3}.lab{font-size:11px;fill:#555}\
.legend{font-size:.85rem;color:#333;margin:.2rem 0}footer{margin-top:3rem;color:#777;font-size:.85rem}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 100.0), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(ticks(-0.03, 0.05), vec![-0.02, 0.0, 0.02, 0.04]);
        assert_eq!(ticks(0.0, 1.0).len(), 5);
    }

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(esc("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
    }
}
