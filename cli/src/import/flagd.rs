//! flagd flag files: every flag whose targeting splits with `fractional` — at the top, or as
//! one branch of an `if` whose other branch is a fixed variant — becomes an experiment with
//! `"algorithm": "flagd"`; the `if`'s condition becomes `when` where `when` says the same
//! thing ([`super::jsonlogic`]), and a fixed branch a rollout. The bucket-by value is read from
//! the request ([`Sources`]), the flag key kept as `flag_key` so hashing is unchanged.

use serde_json::{json, Map, Value};

use abmesh::config::is_valid_variant;

use super::jsonlogic::{condition, var};
use super::sources::slug;
use super::when::When;
use super::{Imported, Keys, Sources};

/// How to import a flagd file.
#[derive(Debug, Clone, Default)]
pub struct FlagdOptions<'a> {
    /// `"bucketing"` of every experiment: `v2` (flagd's releases, the default) or `v3`.
    pub bucketing: Option<&'a str>,
    /// Attribute → request source (see [`Sources::new`]).
    pub mapping: Option<&'a Value>,
}

/// The experiments of one flag, and what to tell the user.
struct Flag {
    experiments: Vec<Value>,
    notes: Vec<String>,
}

/// A flagd flag file (`{"flags": {...}}`) as an abmesh configuration; `Err` for a bad
/// mapping.
pub fn flagd(file: &Value, options: &FlagdOptions) -> Result<Imported, Vec<String>> {
    let mut sources = Sources::new("flagd", options.mapping)?;
    let mut keys = Keys::default();
    let (mut experiments, mut unsupported, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    let mut units = Map::new();
    let empty = Map::new();
    let flags = file
        .get("flags")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if file.get("flags").is_none() {
        unsupported.push("file: no \"flags\" object".into());
    }
    let bucketing = options.bucketing.filter(|b| *b != "v2");
    for (name, def) in flags {
        let mut ctx = Ctx {
            flag: name,
            def,
            keys: &mut keys,
            sources: &mut sources,
            units: &mut units,
            bucketing,
        };
        match ctx.flag() {
            Ok(f) => {
                experiments.extend(f.experiments);
                notes.extend(f.notes);
            }
            Err(why) => unsupported.push(format!("flags.{name}: {why}")),
        }
    }
    Ok(Imported {
        config: json!({"units": units, "experiments": experiments}),
        unsupported,
        units: sources.lines(),
        notes,
    })
}

struct Ctx<'a> {
    flag: &'a str,
    def: &'a Value,
    keys: &'a mut Keys,
    sources: &'a mut Sources,
    units: &'a mut Map<String, Value>,
    bucketing: Option<&'a str>,
}

fn fractional(v: &Value) -> Option<&Vec<Value>> {
    v.as_object()
        .filter(|o| o.len() == 1)?
        .get("fractional")?
        .as_array()
}

fn mentions_fractional(v: &Value) -> bool {
    match v {
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| k == "fractional" || mentions_fractional(v)),
        Value::Array(a) => a.iter().any(mentions_fractional),
        _ => false,
    }
}

impl Ctx<'_> {
    fn flag(&mut self) -> Result<Flag, String> {
        if self.def.get("state").and_then(Value::as_str) == Some("DISABLED") {
            return Err("disabled, nothing to assign".into());
        }
        let targeting = self
            .def
            .get("targeting")
            .filter(|t| t.as_object().is_some_and(|o| !o.is_empty()));
        let Some(targeting) = targeting else {
            return Err(
                "no targeting: every evaluation gives the default variant, nothing to split".into(),
            );
        };
        if let Some(args) = fractional(targeting) {
            return self.split(args, When::default(), None);
        }
        let branches = targeting.get("if").and_then(Value::as_array);
        // `fractional` as the condition, both branches fixed: each bucket is one branch.
        if let Some([cond, Value::String(then), Value::String(otherwise)]) =
            branches.map(Vec::as_slice)
        {
            if let Some(args) = fractional(cond) {
                let args = as_condition(args, then, otherwise)?;
                return self.split(&args, When::default(), None);
            }
        }
        match branches.map(Vec::as_slice) {
            Some([cond, then, rest @ ..]) if rest.len() <= 1 && (fractional(then).is_some() || rest.first().and_then(fractional).is_some()) => {
                let mut when = When::default();
                condition(cond, false, &mut when, self.sources)?;
                let other = |v: Option<&Value>| -> Result<Option<String>, String> {
                    match v {
                        None => Ok(None),
                        Some(Value::String(s)) => Ok(Some(s.clone())),
                        Some(other) => Err(format!("the other branch of the `if`, {other}, is not a variant name")),
                    }
                };
                match fractional(then) {
                    Some(args) => {
                        let fixed = other(rest.first())?;
                        self.split(args, when, fixed.map(|v| (v, true)))
                    }
                    None => {
                        let fixed = other(Some(then))?;
                        let args = rest.first().and_then(fractional).ok_or("unreachable")?;
                        let negated = when.negated().ok_or_else(|| {
                            format!("{cond}: the `fractional` is the else branch, and the negation of this condition is not in `when`")
                        })?;
                        self.split(args, negated, fixed.map(|v| (v, false)))
                    }
                }
            }
            _ if mentions_fractional(targeting) => Err(format!(
                "`fractional` inside {}: only a top-level `fractional`, or one branch of an `if` whose other branch is a fixed variant, is an experiment at the mesh",
                short(targeting)
            )),
            _ => Err("targeting has no `fractional`: a rule without a split is not an experiment".into()),
        }
    }

    /// The experiment of `fractional` `args` under `when`; `fixed`: the variant of the `if`'s
    /// other branch, and whether the split is the `then` branch (the rollout's `when` is then
    /// the negation).
    fn split(
        &mut self,
        args: &[Value],
        when: When,
        fixed: Option<(String, bool)>,
    ) -> Result<Flag, String> {
        let (bucket_by, buckets) = match args.first() {
            Some(first) if !first.is_array() => (Some(first), &args[1..]),
            _ => (None, args),
        };
        let (attribute, seed) = self.bucket_by(bucket_by)?;
        let (variants, total) = self.variants(buckets)?;
        let key = self.keys.key_for(self.flag);
        let default = self.def.get("defaultVariant").and_then(Value::as_str);
        let mut notes = Vec::new();
        let mut experiments = Vec::new();
        let unit = slug(&attribute);
        let source = self.sources.source(&attribute);
        self.units
            .entry(unit.clone())
            .or_insert_with(|| json!([source]));
        if total == 0 {
            // flagd: every weight 0 (or clamped to 0) gives the flag's default variant.
            let Some(d) = default.filter(|d| is_valid_variant(d)) else {
                return Err(
                    "every weight is 0 and the flag has no default variant abmesh can name".into(),
                );
            };
            let mut e = json!({"key": key, "unit": unit, "status": "rolled_out", "winner": d, "variants": [{"name": d, "weight": 1}]});
            if !when.is_empty() {
                e["when"] = when.json();
            }
            experiments.push(e);
        } else {
            let mut e = json!({"key": key, "unit": unit, "algorithm": "flagd", "flag_key": self.flag, "variants": variants});
            if let Some(s) = seed {
                e["bucket_by_seed"] = json!(s);
            }
            if let Some(b) = self.bucketing {
                e["bucketing"] = json!(b);
            }
            if !when.is_empty() {
                e["when"] = when.json();
            }
            experiments.push(e);
            if let Some(d) = default {
                notes.push(format!(
                    "flags.{}: a request abmesh assigns nothing ({attribute} absent{}) gets flagd's default variant \"{d}\": make it the application's default for {key}",
                    self.flag,
                    if when.is_empty() || fixed.is_some() { "" } else { ", or left out by the condition" }
                ));
            }
        }
        if let Some((variant, split_is_then)) = fixed {
            if !is_valid_variant(&variant) {
                return Err(format!(
                    "the other branch's variant \"{variant}\" is not a valid abmesh variant name"
                ));
            }
            // The split's `when` is the condition (then branch) or its negation (else branch):
            // the fixed branch holds exactly where the split's does not.
            let _ = split_is_then;
            let rollout_when = when
                .negated()
                .ok_or("the negation of the condition, for the other branch, is not in `when`")?;
            let rollout_key = self.keys.key_for(&format!("{}.else", self.flag));
            experiments.push(
                json!({"key": rollout_key, "unit": unit, "status": "rolled_out", "winner": variant,
                "variants": [{"name": variant, "weight": 1}], "when": rollout_when.json()}),
            );
            notes.push(format!(
                "flags.{}: the `if`'s fixed branch is the rollout {rollout_key}",
                self.flag
            ));
        }
        Ok(Flag { experiments, notes })
    }

    /// The attribute bucketed on and the seed hashed before it (`None`: the shorthand, flag
    /// key then targeting key).
    fn bucket_by(&mut self, first: Option<&Value>) -> Result<(String, Option<String>), String> {
        let Some(first) = first.filter(|f| !f.is_null()) else {
            return Ok(("targetingKey".into(), None));
        };
        if let Some(attribute) = var(first)? {
            return Ok((attribute, Some(String::new())));
        }
        let parts = first.get("cat").and_then(Value::as_array);
        let why = || {
            format!(
                "bucketing by {first}: only a `var`, or a `cat` of strings and the flag key ending with one `var`, is read from a request"
            )
        };
        let Some((last, head)) = parts.and_then(|p| p.split_last()) else {
            return Err(why());
        };
        let Some(attribute) = var(last)? else {
            return Err(why());
        };
        let mut seed = String::new();
        for p in head {
            match (p.as_str(), p.get("var").and_then(Value::as_str)) {
                (Some(s), _) => seed.push_str(s),
                (None, Some("$flagd.flagKey")) => seed.push_str(self.flag),
                _ => return Err(why()),
            }
        }
        Ok((attribute, Some(seed)))
    }

    /// The variants and their total weight; negative weights count as 0, as in flagd.
    fn variants(&self, buckets: &[Value]) -> Result<(Vec<Value>, u64), String> {
        let known = self.def.get("variants").and_then(Value::as_object);
        let mut out: Vec<Value> = Vec::new();
        let mut total = 0u64;
        for (i, b) in buckets.iter().enumerate() {
            let at = format!("fractional[{i}] = {}", short(b));
            let Some(pair) = b.as_array().filter(|p| !p.is_empty() && p.len() <= 2) else {
                return Err(format!("{at}: not [variant, weight]"));
            };
            let name = match &pair[0] {
                Value::String(s) => s,
                Value::Object(_) => {
                    return Err(format!("{at}: a computed variant (nested JSONLogic)"))
                }
                other => return Err(format!("{at}: {other} is not a variant name")),
            };
            if known.is_some_and(|k| !k.contains_key(name)) {
                return Err(format!(
                    "{at}: \"{name}\" is not one of the flag's variants"
                ));
            }
            if !is_valid_variant(name) {
                return Err(format!(
                    "{at}: \"{name}\" is not a valid abmesh variant name"
                ));
            }
            let weight = match pair.get(1) {
                None => 1,
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(w) if w.fract() == 0.0 && w <= f64::from(i32::MAX) => w.max(0.0) as u64,
                    _ => {
                        return Err(format!(
                            "{at}: weight {n} is not an integer up to 2,147,483,647"
                        ))
                    }
                },
                Some(Value::Object(_)) => {
                    return Err(format!("{at}: a computed weight (nested JSONLogic)"))
                }
                Some(other) => return Err(format!("{at}: weight {other} is not a number")),
            };
            if out.iter().any(|v| v["name"] == *name) {
                return Err(format!("{at}: \"{name}\" appears twice"));
            }
            total += weight;
            out.push(json!({"name": name, "weight": weight}));
        }
        if out.is_empty() {
            return Err("`fractional` has no variants".into());
        }
        Ok((out, total))
    }
}

/// JSONLogic's truthiness of a bucket's value.
fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Null => Some(false),
        Value::Number(n) => Some(n.as_f64() != Some(0.0)),
        Value::String(s) => Some(!s.is_empty()),
        _ => None,
    }
}

/// The `fractional` arguments of `{"if": [{"fractional": args}, then, otherwise]}` with each
/// bucket named for the branch its value takes. Buckets of one branch must be one range
/// (adjacent, buckets of no weight aside); the ranges, and so every unit's branch, are kept.
fn as_condition(args: &[Value], then: &str, otherwise: &str) -> Result<Vec<Value>, String> {
    let (head, buckets) = match args.first() {
        Some(first) if !first.is_array() => (vec![first.clone()], &args[1..]),
        _ => (Vec::new(), args),
    };
    let mut out: Vec<(String, i64)> = Vec::new();
    for (i, b) in buckets.iter().enumerate() {
        let at = format!("fractional[{i}] = {}", short(b));
        let pair = b.as_array().filter(|p| !p.is_empty() && p.len() <= 2);
        let Some(branch) = pair.and_then(|p| truthy(&p[0])) else {
            return Err(format!(
                "{at}: the condition's bucket is not [value, weight]"
            ));
        };
        let weight = match pair.and_then(|p| p.get(1)) {
            None => 1,
            Some(w) => match w.as_f64() {
                Some(w) if w.fract() == 0.0 && w <= f64::from(i32::MAX) => (w as i64).max(0),
                _ => {
                    return Err(format!(
                        "{at}: weight {w} is not an integer up to 2,147,483,647"
                    ))
                }
            },
        };
        if weight == 0 {
            continue;
        }
        let name = if branch { then } else { otherwise };
        let position = out.iter().position(|(n, _)| n == name);
        match position {
            Some(p) if p + 1 == out.len() => out[p].1 += weight,
            Some(_) => {
                return Err(format!(
                    "{at}: \"{name}\" again after another branch: its buckets are not one range"
                ))
            }
            None => out.push((name.to_string(), weight)),
        }
    }
    let mut args = head;
    args.extend(out.into_iter().map(|(n, w)| json!([n, w])));
    Ok(args)
}

/// A JSON value cut for a message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 120 {
        return s;
    }
    let mut end = 117;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
