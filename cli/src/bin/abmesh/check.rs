//! `abmesh check`: validate a configuration and summarize it.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::common::{now_ms, out, read_config, usage_error};

pub fn run(args: &[OsString]) -> ExitCode {
    let (path, time) = match Some(args) {
        Some([path]) => (path, None),
        Some([path, flag, t]) if flag == "--time" => {
            match t.to_str().and_then(abmesh::time::parse_rfc3339) {
                Some(t) => (path, Some(t)),
                None => return usage_error(&format!("--time needs {}", abmesh::time::EXPECTED)),
            }
        }
        _ => return usage_error("check needs exactly one CONFIG file [--time RFC3339]"),
    };
    match read_config(path) {
        Ok(config) => {
            let now = time.unwrap_or_else(now_ms);
            out(&abmesh::summary::describe_at(&config, Some(now)));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
