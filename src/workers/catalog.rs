//! Catalog reads the runtime needs outside SQL: the database list (read by
//! the launcher, which has no database connection, the way autovacuum
//! does it) and whether this database has the extension.

use pgrx::pg_sys;

pub struct DatabaseEntry {
    pub oid: u32,
    pub name: String,
    /// Allows connections, is not a template and is not half-dropped.
    pub eligible: bool,
}

/// Every row of pg_database. Runs its own transaction.
pub fn list_databases() -> Vec<DatabaseEntry> {
    let mut out = Vec::new();
    // SAFETY: the standard heap scan of a shared catalog, inside a
    // transaction, as autovacuum's get_database_list() does it.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::GetTransactionSnapshot();
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as i32);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let form = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            let name = std::ffi::CStr::from_ptr(form.datname.data.as_ptr())
                .to_string_lossy()
                .into_owned();
            out.push(DatabaseEntry {
                oid: form.oid.to_u32(),
                name,
                // datconnlimit -2 marks a database whose DROP was interrupted.
                eligible: form.datallowconn && !form.datistemplate && form.datconnlimit != -2,
            });
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
        pg_sys::CommitTransactionCommand();
    }
    out
}

/// Whether pg_warden is installed in the connected database. Needs a
/// transaction.
pub fn extension_installed() -> bool {
    // SAFETY: catalog lookup inside the caller's transaction.
    unsafe { pg_sys::get_extension_oid(c"pg_warden".as_ptr(), true) != pg_sys::InvalidOid }
}
