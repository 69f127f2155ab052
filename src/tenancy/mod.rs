//! Tenancy: RLS policies built on the tenant context (`tenant_context`),
//! tenant tokens, the lint and the self-test.

mod lint;
mod policies;
mod selftest;
mod token;

pub(crate) use policies::isolate_table;
