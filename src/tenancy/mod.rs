//! Tenancy: the tenant context every per-tenant subsystem and RLS policy
//! reads. Policies, tokens and the lint come in later modules beside it.

mod context;

pub use context::tenant_or_raise;
