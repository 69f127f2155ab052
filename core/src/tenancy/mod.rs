//! Tenancy: the rules for tenant identifiers.

mod tenant_id;

pub use tenant_id::{validate_tenant_id, TenantIdError, MAX_TENANT_ID_BYTES};
