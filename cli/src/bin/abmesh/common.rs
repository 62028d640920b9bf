//! What every command shares: output, usage errors, reading a configuration, the clock.

use std::ffi::OsString;
use std::io::Read;
use std::process::ExitCode;

use abmesh::config::MAX_CONFIG_BYTES;
use abmesh::Config;

/// Writes to standard output; a closed pipe (`abmesh check x | head`) is not an error.
pub fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

pub fn usage_error(msg: &str) -> ExitCode {
    eprintln!("abmesh: {msg}\nrun 'abmesh --help' for usage");
    ExitCode::from(2)
}

pub fn read_config(path: &OsString) -> Result<Config, ExitCode> {
    read_config_bytes(path).map(|(_, c)| c)
}

/// Reads at most one byte more than a configuration may hold, so `/dev/zero` or an endless
/// pipe ends with an error instead of filling memory.
fn read_bounded(reader: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The configuration file's bytes and its compiled form.
pub fn read_config_bytes(path: &OsString) -> Result<(Vec<u8>, Config), ExitCode> {
    let bytes = if path == "-" {
        read_bounded(std::io::stdin().lock())
    } else {
        std::fs::File::open(path).and_then(read_bounded)
    };
    let bytes = bytes.map_err(|e| {
        eprintln!("abmesh: cannot read {}: {e}", path.to_string_lossy());
        ExitCode::from(1)
    })?;
    if bytes.len() > MAX_CONFIG_BYTES {
        out(&format!(
            "config: must be at most 1 MiB ({MAX_CONFIG_BYTES} bytes), found more (read no further)\n"
        ));
        eprintln!("abmesh: 1 error(s) in {}", path.to_string_lossy());
        return Err(ExitCode::from(1));
    }
    let config = Config::parse(&bytes).map_err(|err| {
        for e in &err.errors {
            out(&format!("{e}\n"));
        }
        eprintln!(
            "abmesh: {} error(s) in {}",
            err.errors.len(),
            path.to_string_lossy()
        );
        ExitCode::from(1)
    })?;
    Ok((bytes, config))
}

pub fn split_pair(arg: &OsString) -> Option<(Vec<u8>, Vec<u8>)> {
    let b = arg.as_encoded_bytes();
    let eq = b.iter().position(|&c| c == b'=')?;
    (eq > 0).then(|| (b[..eq].to_vec(), b[eq + 1..].to_vec()))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
