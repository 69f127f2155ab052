//! Tenancy: the tenant context every per-tenant subsystem and RLS policy
//! reads, the policies built on it, tenant tokens, the lint and the self-test.

mod context;
mod fast_path;
mod lint;
mod policies;
mod selftest;
mod token;

pub(crate) use context::set_tenant_setting;
pub use context::{tenant_or_raise, validate_tenant_or_raise};
pub(crate) use policies::isolate_table;
