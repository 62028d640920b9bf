//! Every host call the filter makes, as raw proxy-wasm ABI imports that return the host's status
//! as a plain `u32`.
//!
//! The SDK's own wrappers (proxy-wasm 0.2.5 `hostcalls`) `panic!` on any status they do not
//! expect, and with `panic = "abort"` a panic traps the VM: every later request on that worker
//! would get 503 (or, under FAIL_RELOAD, lose its assignment while the VM restarts). Here a
//! failed call is an `Err(HostError)` that the caller counts in
//! `abmesh_errors_total{kind="host"}` before carrying on. Declaring the status as `u32` rather
//! than the SDK's `Status` enum also keeps an unknown value from being an invalid enum.
//!
//! With the `fault-injection` feature (test builds only) every call can be made to fail on
//! purpose: see `super::fault`.

#![allow(clashing_extern_declarations)]

/// A log level of the proxy-wasm ABI.
#[allow(dead_code)] // the ABI's whole scale; abmesh logs at some of them
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// The header maps abmesh reads and changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MapType {
    HttpRequestHeaders = 0,
    HttpResponseHeaders = 2,
}

/// The ABI's buffer type of the plugin configuration.
const PLUGIN_CONFIGURATION: u32 = 7;
/// The ABI's buffer type of the request body.
const HTTP_REQUEST_BODY: u32 = 0;
/// The ABI's metric type of a counter.
const COUNTER: u32 = 0;

/// A host call answered with a status other than Ok.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        additional_headers_map_data: *const u8,
        additional_headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

/// The host calls, named as the fault injector and the tests name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Log,
    CurrentTime,
    GetHeaders,
    GetResponseStatus,
    SetHeader,
    RemoveHeader,
    AddHeader,
    SetProperty,
    DefineMetric,
    IncrementMetric,
    GetBody,
    SendLocalResponse,
}

#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))] // the injector's names
impl Call {
    pub const ALL: [Call; 12] = [
        Call::Log,
        Call::CurrentTime,
        Call::GetHeaders,
        Call::GetResponseStatus,
        Call::SetHeader,
        Call::RemoveHeader,
        Call::AddHeader,
        Call::SetProperty,
        Call::DefineMetric,
        Call::IncrementMetric,
        Call::GetBody,
        Call::SendLocalResponse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Call::Log => "log",
            Call::CurrentTime => "current_time",
            Call::GetHeaders => "get_headers",
            Call::GetResponseStatus => "get_response_status",
            Call::SetHeader => "set_header",
            Call::RemoveHeader => "remove_header",
            Call::AddHeader => "add_header",
            Call::SetProperty => "set_property",
            Call::DefineMetric => "define_metric",
            Call::IncrementMetric => "increment_metric",
            Call::GetBody => "get_body",
            Call::SendLocalResponse => "send_local_response",
        }
    }
}

/// `Ok` for the Ok status; every other status, or an injected fault, is an error.
fn status(call: Call, raw: impl FnOnce() -> u32) -> Result<(), HostError> {
    if super::fault::fails(call) {
        return Err(HostError);
    }
    match raw() {
        OK => Ok(()),
        _ => Err(HostError),
    }
}

/// Logging is best effort: there is nowhere to report a failed log call but the counter.
pub fn log(level: LogLevel, message: &str) -> Result<(), HostError> {
    // SAFETY: the pointer and length describe `message`, alive for the call.
    status(Call::Log, || unsafe {
        proxy_log(level as u32, message.as_ptr(), message.len())
    })
}

/// The host clock, in nanoseconds since the epoch.
pub fn current_time_ns() -> Result<u64, HostError> {
    let mut t: u64 = 0;
    // SAFETY: the host writes one u64 through the pointer.
    status(Call::CurrentTime, || unsafe {
        proxy_get_current_time_nanoseconds(&mut t)
    })?;
    Ok(t)
}

pub fn set_tick_period_ms(period: u32) -> Result<(), HostError> {
    // SAFETY: a plain value.
    match unsafe { proxy_set_tick_period_milliseconds(period) } {
        OK => Ok(()),
        _ => Err(HostError),
    }
}

/// Takes ownership of a buffer the host allocated for us.
///
/// SAFETY: `data` must be null, or a buffer of exactly `size` bytes allocated by this module's
/// `malloc` export (`abi::malloc`, a boxed slice of that size), as the host does for every
/// value it returns.
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        // SAFETY: see above.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

/// The plugin configuration (`None`: there is none).
pub fn plugin_configuration(size: usize) -> Result<Option<Vec<u8>>, HostError> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: the host fills in a pointer and a length (see `owned`).
    let st = unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size, &mut data, &mut len) };
    match st {
        // SAFETY: see `owned`.
        OK => Ok(Some(unsafe { owned(data, len) })),
        NOT_FOUND => Ok(None),
        _ => Err(HostError),
    }
}

/// The request headers as Envoy serializes them, in one buffer owned by this module (the
/// SDK's binding copies every header into a `String` and panics on a non-UTF-8 name).
pub fn request_header_buffer() -> Result<Vec<u8>, HostError> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host fills in a pointer and a length (see `owned`).
    status(Call::GetHeaders, || unsafe {
        proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut data, &mut size)
    })?;
    // SAFETY: see `owned`.
    Ok(unsafe { owned(data, size) })
}

/// The response's `:status`, `None` if absent or not a number.
pub fn response_status() -> Result<Option<u16>, HostError> {
    if super::fault::fails(Call::GetResponseStatus) {
        return Err(HostError);
    }
    let key = b":status";
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host fills in a pointer and a length (see `owned`).
    let st = unsafe {
        proxy_get_header_map_value(
            MapType::HttpResponseHeaders as u32,
            key.as_ptr(),
            key.len(),
            &mut data,
            &mut size,
        )
    };
    let value = match st {
        // SAFETY: see `owned`.
        OK => unsafe { owned(data, size) },
        NOT_FOUND => return Ok(None),
        _ => return Err(HostError),
    };
    Ok(std::str::from_utf8(&value)
        .ok()
        .and_then(|s| s.parse().ok()))
}

/// Sets (replaces) a header.
pub fn set_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointers and lengths describe live slices.
    status(Call::SetHeader, || unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: MapType, name: &str) -> Result<(), HostError> {
    // SAFETY: the pointer and length describe `name`.
    status(Call::RemoveHeader, || unsafe {
        proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len())
    })
}

/// Adds a header value beside any the message already has (`Set-Cookie`).
pub fn add_header(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointers and lengths describe live slices.
    status(Call::AddHeader, || unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Sets filter state `wasm.<name>` (a one-segment property path).
pub fn set_property(name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointers and lengths describe live slices.
    status(Call::SetProperty, || unsafe {
        proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub fn define_counter(name: &str) -> Result<u32, HostError> {
    let mut id: u32 = 0;
    // SAFETY: the pointer and length describe `name`; the host writes one u32.
    status(Call::DefineMetric, || unsafe {
        proxy_define_metric(COUNTER, name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

pub fn increment_counter(id: u32, offset: i64) -> Result<(), HostError> {
    // SAFETY: plain values.
    status(Call::IncrementMetric, || unsafe {
        proxy_increment_metric(id, offset)
    })
}

/// The first `size` bytes of the buffered request body.
pub fn request_body(size: usize) -> Result<Vec<u8>, HostError> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: the host fills in a pointer and a length (see `owned`).
    let st = status(Call::GetBody, || unsafe {
        proxy_get_buffer_bytes(HTTP_REQUEST_BODY, 0, size, &mut data, &mut len)
    });
    match st {
        // SAFETY: see `owned`.
        Ok(()) => Ok(unsafe { owned(data, len) }),
        Err(HostError) => Err(HostError),
    }
}

/// Answers the request from the filter: it never reaches the upstream.
pub fn send_local_response(
    status_code: u16,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Result<(), HostError> {
    let map = serialize_map(headers);
    let details = b"abmesh_ofrep";
    // SAFETY: pointers and lengths describe live slices.
    status(Call::SendLocalResponse, || unsafe {
        proxy_send_local_response(
            u32::from(status_code),
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    })
}

/// A header map as the ABI serializes one: the count, each name's and value's length (u32,
/// little-endian), then each name and value followed by a NUL.
fn serialize_map(headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len(headers.len()));
    for (name, value) in headers {
        out.extend_from_slice(&len(name.len()));
        out.extend_from_slice(&len(value.len()));
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}
