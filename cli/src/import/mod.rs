//! `abmesh import`: translate a GrowthBook SDK payload or a flagd flag file into an abmesh
//! configuration that assigns identically. Attributes the peers read from an evaluation
//! context become request sources ([`Sources`]); conditions become `when` where `when`
//! expresses them exactly ([`when`]); whatever cannot be carried over is listed with its
//! reason, nothing is dropped silently.

mod flagd;
mod growthbook;
mod jsonlogic;
mod mongo;
mod sources;
mod when;

pub use flagd::{flagd, FlagdOptions};
pub use growthbook::growthbook;
pub use sources::Sources;

use std::collections::BTreeSet;

use serde_json::Value;

/// An imported configuration and what could not be carried over.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub config: Value,
    /// `where: why`, one per thing left out.
    pub unsupported: Vec<String>,
    /// How requests must carry each attribute: `attribute: header NAME` (or cookie, query).
    pub units: Vec<String>,
    /// What a user must know to keep the peer's behaviour, one line each.
    pub notes: Vec<String>,
}

/// An abmesh key for a peer's name: [`sources::slug`], made to start with a letter and cut to
/// 64 characters.
pub(crate) fn key_for(raw: &str) -> String {
    let mut k = sources::slug(raw);
    if !k.starts_with(|c: char| c.is_ascii_lowercase()) {
        k.insert(0, 'x');
    }
    k.truncate(64);
    k
}

/// Experiment keys for peers' names, deterministic and unique: the first name (in the order
/// given) to map to a key gets it, later ones get `-2`, `-3`…
#[derive(Default)]
pub(crate) struct Keys(BTreeSet<String>);

impl Keys {
    pub(crate) fn key_for(&mut self, raw: &str) -> String {
        let base = key_for(raw);
        let mut key = base.clone();
        let mut n = 2;
        while !self.0.insert(key.clone()) {
            let suffix = format!("-{n}");
            let mut cut = base.clone();
            cut.truncate(64 - suffix.len());
            key = format!("{cut}{suffix}");
            n += 1;
        }
        key
    }
}
