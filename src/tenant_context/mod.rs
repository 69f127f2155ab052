//! The tenant context every per-tenant subsystem and RLS policy reads:
//! `warden.set_tenant` / `current_tenant` (and the typed accessors), the
//! transaction-scoped setting behind them, pinned login roles, and tenant
//! id validation. The layer below crypto and tenancy: it uses neither.

mod context;
mod fast_path;

pub(crate) use context::{
    is_warden_admin, pins_another, refuse_if_pinned_elsewhere, require_transaction_block,
    require_transaction_block_for, reset_tenant_setting, set_tenant_setting,
};
pub use context::{tenant_or_raise, validate_tenant_or_raise, PinWhileHandling};
