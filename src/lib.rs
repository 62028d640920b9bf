#![deny(missing_docs)]
//! abmesh: online experiments (A/B tests) at the service mesh.
//!
//! The pure core decides, for one request, which variant of each configured experiment it
//! gets, deterministically from the unit id (hash spec v1), and what that becomes on the
//! wire. It never touches the proxy host: the `abmesh-filter` crate (`filter/`) is the only
//! one that calls proxy-wasm, and the CLI (`abmesh-cli`, `cli/`) the only one with
//! command-line and network dependencies.
//!
//! ```
//! use abmesh::{evaluate, Config, RequestView};
//!
//! let config = Config::parse(br#"{
//!   "units": {"user": [{"header": "x-user-id"}]},
//!   "experiments": [{"key": "new-checkout",
//!                    "variants": [{"name": "control", "weight": 50},
//!                                 {"name": "treatment", "weight": 50}]}]
//! }"#).unwrap();
//! let headers = [(":path", "/checkout"), ("x-user-id", "alice")];
//! let eval = evaluate(&config, &RequestView::new(&headers), 0);
//! assert_eq!(
//!     abmesh::exposure::assignments_dictionary(&config, &eval).as_deref(),
//!     Some("new-checkout=treatment")
//! );
//! ```

pub mod assign;
pub mod baggage;
pub mod config;
pub mod counts;
pub mod exposure;
pub mod flagd;
pub mod growthbook;
pub mod hash;
pub mod metrics;
pub mod mint;
pub mod ofrep;
pub mod plan;
pub mod ramp;
mod reader;
pub mod request;
pub mod sfv;
pub mod summary;
pub mod targeting;
pub mod time;

pub use assign::{evaluate, Assignment, Evaluation, Reason};
pub use config::{Config, ConfigError};
pub use request::RequestView;
