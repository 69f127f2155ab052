//! Transaction and subtransaction ends, for every subsystem: one
//! `RegisterXactCallback` and one `RegisterSubXactCallback` per backend.

use std::cell::{Cell, RefCell};

use pgrx::pg_guard;
use pgrx::pg_sys;

pub use pgrx::pg_sys::SubXactEvent::Type as SubXactEvent;
pub use pgrx::pg_sys::XactEvent::Type as XactEvent;

/// What a subsystem does when a transaction or a subtransaction ends.
#[derive(Clone, Copy)]
pub struct Handler {
    /// Who subscribes (subscribing twice under one name is a no-op;
    /// function addresses are not compared: the linker may merge two
    /// identical functions).
    pub name: &'static str,
    pub xact: fn(XactEvent),
    /// Called with the event and the nesting level of the subtransaction
    /// that ends.
    pub subxact: fn(SubXactEvent, i32),
}

thread_local! {
    static HANDLERS: RefCell<Vec<Handler>> = const { RefCell::new(Vec::new()) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Adds `handler` for the rest of this backend's life (again: no-op).
pub fn subscribe(handler: Handler) {
    if !REGISTERED.replace(true) {
        // SAFETY: registers process-lifetime callbacks once.
        unsafe {
            pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
        }
    }
    HANDLERS.with(|h| {
        let mut h = h.borrow_mut();
        if !h.iter().any(|x| x.name == handler.name) {
            h.push(handler);
        }
    });
}

/// Calls `f` on each handler, by index, the list not borrowed during a
/// call (a handler may subscribe another one) and nothing allocated:
/// this runs at every transaction end.
fn each_handler(f: impl Fn(Handler)) {
    let mut i = 0;
    while let Some(h) = HANDLERS.with(|h| h.borrow().get(i).copied()) {
        f(h);
        i += 1;
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: XactEvent, _arg: *mut std::ffi::c_void) {
    each_handler(|h| (h.xact)(event));
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: SubXactEvent,
    _my_subid: pg_sys::SubTransactionId,
    _parent_subid: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    // SAFETY: reads transaction state; during the callback the level is
    // that of the subtransaction ending.
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    each_handler(|h| (h.subxact)(event, level));
}
