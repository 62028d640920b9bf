//! The proxy-wasm ABI (0.2.1) entry points the host calls, and the contexts they address.
//!
//! abmesh exports only the callbacks it uses. The host skips a callback a module does not
//! export (proxy-wasm-cpp-host `ContextBase::onDone` and friends check for the export first),
//! and every call into the VM costs Envoy more than the work abmesh does in most of them: so
//! there is no `proxy_on_done` (abmesh has nothing to do there) and no callback for response
//! bodies, trailers, connections or HTTP calls. Request bodies are read for OFREP
//! evaluations (`ofrep`), which the filter answers itself. A request's context is dropped in
//! `proxy_on_delete`.
//!
//! The SDK's dispatcher (proxy-wasm 0.2.5) is not used: it keeps contexts in SipHash maps
//! behind boxed trait objects, `panic!`s on an unknown context id (a trap, so 503 for every
//! later request on the worker), and exports every callback of the ABI. Here an unknown id
//! is ignored and a request context is a plain struct in a map keyed by a multiplicative hash
//! of the id.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::MaybeUninit;

use super::{Request, Root};

/// Context ids are small sequential integers: a Fibonacci multiplication spreads them over
/// the table's control bits, which identity would not.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type ById<T> = HashMap<u32, T, BuildHasherDefault<IdHasher>>;

/// Everything one VM holds: its root contexts (one per plugin configuration sharing the VM)
/// and the requests in flight.
#[derive(Default)]
struct Vm {
    roots: ById<Root>,
    requests: ById<Request>,
}

thread_local! {
    static VM: RefCell<Vm> = RefCell::new(Vm::default());
}

/// Runs `f` on the VM's state. A host call made inside `f` never calls back into anything
/// but `malloc`, which does not touch this state, so the borrow cannot be taken twice; if it
/// ever were, the callback does nothing rather than trap.
fn with_vm<T>(default: T, f: impl FnOnce(&mut Vm) -> T) -> T {
    VM.with(|vm| match vm.try_borrow_mut() {
        Ok(mut vm) => f(&mut vm),
        Err(_) => default,
    })
}

/// The ABI version this module speaks.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host allocates every buffer it hands to the module here (header maps, values, the
/// configuration); `host::owned` takes it back as a `Vec` of exactly this size.
#[export_name = "malloc"]
pub extern "C" fn malloc(size: usize) -> *mut u8 {
    let mut buffer: Vec<MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: `MaybeUninit` needs no initialisation; the host writes every byte before the
    // module reads it (and `host::owned` reads only the `size` bytes the host reports).
    unsafe { buffer.set_len(size) };
    Box::into_raw(buffer.into_boxed_slice()) as *mut u8
}

/// A root context (`root_context_id == 0`) or a request context of that root.
#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    with_vm((), |vm| {
        if root_context_id == 0 {
            vm.roots.insert(context_id, Root::default());
        } else if let Some(root) = vm.roots.get(&root_context_id) {
            vm.requests
                .insert(context_id, Request::new(root.compiled.clone(), context_id));
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_context_id: u32, configuration_size: usize) -> u32 {
    with_vm(false, |vm| {
        vm.roots
            .get_mut(&root_context_id)
            .is_some_and(|root| root.configure(configuration_size))
    })
    .into()
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root_context_id: u32) {
    with_vm((), |vm| {
        if let Some(root) = vm.roots.get_mut(&root_context_id) {
            root.tick();
        }
    });
}

/// `Continue`: the request goes on (abmesh pauses only an OFREP evaluation it answers).
const CONTINUE: u32 = 0;
/// `Pause`: on headers, wait; on a body chunk, buffer it (an OFREP evaluation's body).
const PAUSE: u32 = 1;

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, end: u32) -> u32 {
    let waits = with_vm(false, |vm| {
        vm.requests
            .get_mut(&context_id)
            .is_some_and(|request| request.on_request_headers(end != 0))
    });
    if waits {
        PAUSE
    } else {
        CONTINUE
    }
}

/// Only an OFREP evaluation's body is read (the filter answers it); every other request's
/// body chunk costs one map lookup.
#[no_mangle]
pub extern "C" fn proxy_on_request_body(context_id: u32, body_size: usize, end: u32) -> u32 {
    let holds = with_vm(false, |vm| {
        vm.requests
            .get_mut(&context_id)
            .is_some_and(|request| request.on_request_body(body_size, end != 0))
    });
    if holds {
        PAUSE
    } else {
        CONTINUE
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, _end: u32) -> u32 {
    with_vm((), |vm| {
        if let Some(request) = vm.requests.get_mut(&context_id) {
            request.on_response_headers();
        }
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    with_vm((), |vm| {
        if let Some(request) = vm.requests.get_mut(&context_id) {
            request.on_log();
        }
    });
}

/// The context is gone: a request's state is dropped, a removed plugin's root with it.
#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with_vm((), |vm| {
        if vm.requests.remove(&context_id).is_none() {
            vm.roots.remove(&context_id);
        }
    });
}
