//! Any bytes as a flagd definitions file through `abmesh import flagd`'s importer: nothing
//! panics; everything left out is listed as `where: why`; the configuration it writes either
//! compiles or is refused with errors naming their paths (the CLI then refuses the import).
#![no_main]

use abmesh::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    // Both bucketings: the byte count chooses.
    let options = abmesh_cli::import::FlagdOptions {
        bucketing: (data.len() % 2 == 1).then_some("v3"),
        mapping: None,
    };
    let imported = abmesh_cli::import::flagd(&source, &options).expect("no mapping, no mapping error");
    for item in &imported.unsupported {
        assert!(item.contains(": "), "an item left out without its reason: {item}");
    }
    let json = serde_json::to_string(&imported.config).expect("a Value serialises");
    if let Err(e) = Config::parse(json.as_bytes()) {
        assert!(e.errors.iter().all(|l| l.contains(": ")));
    }
});
