//! Keyring and envelope encryption (DESIGN §3).
//!
//! - `root_key`: the root key, loaded once in the postmaster.
//! - `keys_table`: `warden.keys`, `warden.keyring_check`, `warden.key_catalog`.
//! - `key_cache`: per-backend cache of unwrapped data keys, key creation,
//!   the key check, and invalidation.
//! - `envelope_sql`: `warden.encrypt` / `decrypt` / `decrypt_text` /
//!   `decrypt_jsonb` / `reencrypt`.
//! - `blind_index`: `warden.blind_index`.
//! - `rotation`: `warden.rotate_master_key`, `rotate_data_key`, `shred_tenant`.

mod blind_index;
mod envelope_sql;
mod key_cache;
mod keys_table;
mod root_key;
mod rotation;

pub(crate) use key_cache::{active_key, existing_active_key};

pub fn init(preloading: bool) {
    if preloading {
        root_key::load();
    }
}

/// Run by each database worker at start: a wrong or missing root key is
/// logged at once, with what to do, instead of surfacing later as
/// failed decryptions. (Backends check again before their first key use.)
pub fn startup_key_report(datname: &str) {
    if root_key::loaded().is_none() {
        return; // the postmaster already logged why
    }
    if let Err(e) = key_cache::key_check() {
        pgrx::warning!(
            "pg_warden: {} (database \"{datname}\"). {} {}",
            e.message,
            e.detail.unwrap_or_default(),
            e.hint.unwrap_or_default()
        );
    }
}
