//! The `abmesh` command line's library: guard's judgement of experiments from their metrics
//! (per unit, through the replicate series), the statistics it rests on, sample-size planning,
//! the simulation study, peers' importers and guard's sources. Native only: nothing here
//! reaches the wasm.
//!
//! ```
//! use abmesh_cli::robust::ratio;
//! // Three replicates: 1, 3 and 2 errors in 10, 10 and 20 responses.
//! let r = ratio(&[1.0, 3.0, 2.0], &[10.0, 10.0, 20.0]).unwrap();
//! assert_eq!(r.estimate, 0.15);
//! ```

pub mod analyze;
pub mod bayes;
pub mod bounded;
pub mod guard;
pub mod import;
pub mod power;
pub mod robust;
pub mod sequential;
pub mod simulate;
pub mod source;
pub mod stats;
