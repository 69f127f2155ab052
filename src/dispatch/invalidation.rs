//! Relcache and syscache invalidations, for every subsystem: one
//! Postgres callback per backend (per syscache for syscaches).

use std::cell::RefCell;

use pgrx::pg_guard;
use pgrx::pg_sys::{self, Datum, Oid};

/// The handlers of one syscache.
struct SyscacheHandlers {
    cache_id: i32,
    handlers: Vec<Named<fn()>>,
}

/// Who subscribed, and the handler: subscribing twice under one name is a
/// no-op (function addresses are not compared: the linker may merge two
/// identical functions).
type Named<F> = (&'static str, F);
type RelcacheHandlers = Vec<Named<fn(Oid)>>;

thread_local! {
    static RELCACHE: RefCell<RelcacheHandlers> = const { RefCell::new(Vec::new()) };
    static SYSCACHE: RefCell<Vec<SyscacheHandlers>> = const { RefCell::new(Vec::new()) };
}

/// Calls `handler` with the relation whose relcache entry is invalidated
/// (InvalidOid: all of them), for the rest of this backend's life.
pub fn on_relcache(name: &'static str, handler: fn(Oid)) {
    RELCACHE.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_empty() {
            // SAFETY: registers a process-lifetime callback once.
            unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(relcache), Datum::from(0)) };
        }
        if !r.iter().any(|(n, _)| *n == name) {
            r.push((name, handler));
        }
    });
}

/// Calls `handler` when any entry of syscache `cache_id` is invalidated.
pub fn on_syscache(name: &'static str, cache_id: pg_sys::SysCacheIdentifier::Type, handler: fn()) {
    let cache_id = cache_id as i32;
    SYSCACHE.with(|s| {
        let mut s = s.borrow_mut();
        let index = match s.iter().position(|c| c.cache_id == cache_id) {
            Some(i) => i,
            None => {
                // SAFETY: registers a process-lifetime callback once per cache.
                unsafe {
                    pg_sys::CacheRegisterSyscacheCallback(cache_id, Some(syscache), Datum::from(0))
                };
                s.push(SyscacheHandlers {
                    cache_id,
                    handlers: Vec::new(),
                });
                s.len() - 1
            }
        };
        let handlers = &mut s[index].handlers;
        if !handlers.iter().any(|(n, _)| *n == name) {
            handlers.push((name, handler));
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache(_arg: Datum, relid: Oid) {
    // by index, the list not borrowed during a call, nothing allocated
    let mut i = 0;
    while let Some((_, h)) = RELCACHE.with(|r| r.borrow().get(i).copied()) {
        h(relid);
        i += 1;
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn syscache(_arg: Datum, cache_id: i32, _hash: u32) {
    let mut i = 0;
    while let Some((_, h)) = SYSCACHE.with(|s| {
        s.borrow()
            .iter()
            .find(|c| c.cache_id == cache_id)
            .and_then(|c| c.handlers.get(i).copied())
    }) {
        h();
        i += 1;
    }
}
