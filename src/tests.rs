//! `#[pg_test]`s: run inside a real Postgres with the library preloaded.

use pgrx::prelude::*;

#[pg_test]
fn current_tenant_is_null_until_set() {
    assert_eq!(
        Spi::get_one::<String>("SELECT warden.current_tenant()").unwrap(),
        None
    );
}
