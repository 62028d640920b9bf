//! Test builds only (feature `fault-injection`): makes chosen host calls fail, to prove that a
//! failing host call is counted and never crashes the VM or breaks a request.
//!
//! A request header `x-abmesh-fault: NAME[,NAME…]` (names from `host::Call::name`) makes those
//! calls fail for the rest of that request (its response and end-of-stream callbacks
//! included). A call that has already happened when the header is read — reading the request
//! headers — fails on the VM's next request instead, and the metric calls, which only the
//! VM's timer makes, fail during its next publication.

use super::host::Call;

#[cfg(feature = "fault-injection")]
mod armed {
    use std::cell::RefCell;

    use super::Call;

    thread_local! {
        /// The calls that fail in the callback running now.
        static ACTIVE: RefCell<Vec<Call>> = const { RefCell::new(Vec::new()) };
        /// For the VM's next request callback.
        static NEXT_REQUEST: RefCell<Vec<Call>> = const { RefCell::new(Vec::new()) };
        /// For the VM's next publication.
        static NEXT_TICK: RefCell<Vec<Call>> = const { RefCell::new(Vec::new()) };
    }

    pub fn fails(call: Call) -> bool {
        ACTIVE.with(|a| a.borrow().contains(&call))
    }

    /// The faults a request asks for, sorted by when they can happen; returns this request's.
    pub fn requested(header: Option<&[u8]>) -> Vec<Call> {
        let Some(value) = header else {
            return Vec::new();
        };
        let mut now = Vec::new();
        for name in value.split(|&b| b == b',') {
            let name = String::from_utf8_lossy(name);
            let Some(call) = Call::ALL.into_iter().find(|c| c.name() == name.trim()) else {
                continue;
            };
            match call {
                Call::GetHeaders => NEXT_REQUEST.with(|n| n.borrow_mut().push(call)),
                Call::DefineMetric | Call::IncrementMetric => {
                    NEXT_TICK.with(|n| n.borrow_mut().push(call))
                }
                _ => now.push(call),
            }
        }
        ACTIVE.with(|a| a.borrow_mut().extend(now.iter().copied()));
        now
    }

    /// Starts a request callback: the faults armed for it.
    pub fn begin(own: &[Call], first: bool) {
        let mut calls = own.to_vec();
        if first {
            calls.extend(NEXT_REQUEST.with(|n| std::mem::take(&mut *n.borrow_mut())));
        }
        ACTIVE.with(|a| *a.borrow_mut() = calls);
    }

    pub fn begin_tick() {
        let calls = NEXT_TICK.with(|n| std::mem::take(&mut *n.borrow_mut()));
        ACTIVE.with(|a| *a.borrow_mut() = calls);
    }

    pub fn end() {
        ACTIVE.with(|a| a.borrow_mut().clear());
    }
}

#[cfg(feature = "fault-injection")]
pub use armed::{begin, begin_tick, end, requested};

/// Whether `call` is to fail now (always false outside fault-injection builds).
#[inline(always)]
pub fn fails(call: Call) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        armed::fails(call)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = call;
        false
    }
}
