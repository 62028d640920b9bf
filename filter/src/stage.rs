//! Benchmark builds that stop the request path after one stage, for BENCHMARKS.md's
//! breakdown: built with `ABMESH_BENCH_STOP=<stage>` in the environment (`./build.sh bench`).
//! The release build has no such variable and runs every stage; the comparisons below are on
//! constants, so the stages a build skips are not even compiled in.

/// The stages of the request path, in order: each build runs those up to its `STOP`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Read the request headers (one host call) and index them.
    Headers,
    /// Resolve every unit type's id.
    Units,
    /// Read the clock and evaluate every experiment.
    Evaluate,
    /// The whole plan: dictionary, route headers, exposure record, removals.
    Render,
    /// Apply the plan's header removals and sets.
    SetHeaders,
    /// Write the plan's filter-state values (and the log line, when configured).
    FilterState,
    /// Count the request in the VM's metrics.
    Count,
    /// Everything, the response and stream-end callbacks included (the release build).
    Full,
}

/// The last stage this build runs.
pub const STOP: Stage = match option_env!("ABMESH_BENCH_STOP") {
    None => Stage::Full,
    Some(name) => parse(name.as_bytes()),
};

/// Whether this build runs `stage`.
pub const fn runs(stage: Stage) -> bool {
    STOP as u8 >= stage as u8
}

const fn parse(name: &[u8]) -> Stage {
    const NAMES: [(&[u8], Stage); 8] = [
        (b"headers", Stage::Headers),
        (b"units", Stage::Units),
        (b"evaluate", Stage::Evaluate),
        (b"render", Stage::Render),
        (b"set-headers", Stage::SetHeaders),
        (b"filter-state", Stage::FilterState),
        (b"count", Stage::Count),
        (b"full", Stage::Full),
    ];
    let mut i = 0;
    while i < NAMES.len() {
        if eq(NAMES[i].0, name) {
            return NAMES[i].1;
        }
        i += 1;
    }
    // Evaluated at compile time: an unknown name stops the build, it never reaches a VM.
    #[allow(clippy::panic)]
    {
        panic!("ABMESH_BENCH_STOP must be headers, units, evaluate, render, set-headers, filter-state, count or full")
    }
}

const fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
