//! A backend-local permission flag that only pg_warden's Rust code sets
//! (no SQL can): set for the duration of one call, cleared when it returns
//! or raises.

use std::cell::Cell;
use std::thread::LocalKey;

/// Runs `f` with `flag` set.
pub(super) fn with_flag<R>(flag: &'static LocalKey<Cell<bool>>, f: impl FnOnce() -> R) -> R {
    struct Clear(&'static LocalKey<Cell<bool>>);
    impl Drop for Clear {
        fn drop(&mut self) {
            self.0.set(false);
        }
    }
    flag.set(true);
    let _clear = Clear(flag);
    f()
}
