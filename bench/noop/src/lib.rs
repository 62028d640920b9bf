//! Two floors for the benchmark, built with the same toolchain, SDK and profile as abmesh:
//!
//! - with no plugin configuration, a filter that does nothing: Envoy still creates a context
//!   per request and calls into the VM for each callback, the cost every wasm filter pays;
//! - with a configuration `record=N header=M route=K [log=1]`, a filter that makes exactly the
//!   host calls abmesh's contract requires for an exposed request (read the headers, read the
//!   clock, set the assignments header and K route headers, store the N-byte record and the
//!   M-byte dictionary in filter state, and log the record with `log=1`, as abmesh does with
//!   `exposure.log`) with fixed payloads and no computation: what abmesh would cost if its own
//!   work were free.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { calls: None }) });
}}

struct Calls {
    log: bool,
    log_line: String,
    header: String,
    route: usize,
}

struct Root {
    calls: Option<Rc<Calls>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size).ok().flatten().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let get = |key: &str| -> usize {
            config.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok()).unwrap_or(0)
        };
        if get("record") > 0 {
            let mut log_line = String::from("abmesh.exposure ");
            log_line.push_str(&"x".repeat(get("record")));
            let (log, header, route) = (get("log") == 1, "x".repeat(get("header")), get("route"));
            self.calls = Some(Rc::new(Calls { log, log_line, header, route }));
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter { calls: self.calls.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    calls: Option<Rc<Calls>>,
}

impl Context for Filter {}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(c) = &self.calls else { return Action::Continue };
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size = 0usize;
        // SAFETY: as in abmesh's filter: the host allocates through this module's allocator.
        if unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut data, &mut size) } == 0
            && !data.is_null()
        {
            drop(unsafe { Vec::from_raw_parts(data, size, size) });
        }
        let _ = hostcalls::get_current_time();
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, "x-experiments", Some(c.header.as_bytes()));
        for _ in 0..c.route {
            let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, "x-exp-floor", Some(b"control"));
        }
        if c.log {
            let _ = hostcalls::log(LogLevel::Info, &c.log_line);
        }
        let _ = hostcalls::set_property(vec!["abmesh_exposure"], Some(&c.log_line.as_bytes()[16..]));
        let _ = hostcalls::set_property(vec!["abmesh_assignments"], Some(c.header.as_bytes()));
        Action::Continue
    }
}
