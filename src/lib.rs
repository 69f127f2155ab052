//! pg_warden: trust plumbing for multi-tenant backends, inside PostgreSQL.
//!
//! `_PG_init` only wires modules together; each subsystem lives in its own
//! folder with an `init()`, and pure logic lives in the `warden_core` crate.

use pgrx::prelude::*;

mod audit;
mod crypto;
mod dispatch;
mod error;
mod fmgr;
mod guc;
mod heap_append;
mod jsonb_shape;
mod kept_plans;
mod names;
mod outbox;
mod preload;
mod privileged;
mod redaction;
mod scd2;
mod schema;
mod secrets;
mod shared_memory;
mod spi_read;
mod subtransaction;
mod tenancy;
mod tenant_context;
mod tuple_desc;
mod workers;

::pgrx::pg_module_magic!(name, version);

#[allow(non_snake_case)]
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    let preloading = preload::record_load();
    guc::init(preloading);
    redaction::init();
    // subsystems register their tasks first: the runtime sizes its
    // shared memory from the registry
    crypto::init(preloading);
    scd2::init(preloading);
    audit::init(preloading);
    outbox::init(preloading);
    secrets::init(preloading);
    if preloading {
        workers::init();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`: the test cluster preloads the library so
/// that workers and shared memory are exercised as in production.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'pg_warden'",
            // a fixed test-only root key
            "warden.key_command = 'echo v1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'",
            "warden.worker_naptime = '200ms'",
            "warden.launcher_naptime = '1s'",
        ]
    }
}
