//! DROP DATABASE, CREATE DATABASE ... TEMPLATE, ALTER DATABASE ... RENAME
//! and ALTER DATABASE ... SET TABLESPACE all refuse to run while another
//! session is connected to the database they name, and a pg_warden worker
//! is such a session. A ProcessUtility hook asks that database's worker to
//! stop and holds off its restart; Postgres itself waits (up to 5 s) for
//! it to go. If the command fails, the worker comes back after the hold.
//!
//! Only for a caller Postgres will let run the command (docs/security.md,
//! rule 6): the database's owner (with CREATEDB for a rename), or for a
//! copy, a role with CREATEDB that owns the template or may copy it
//! because it is a template. Anyone else's statement fails in Postgres'
//! own permission check without touching the worker, so a role with no
//! privileges cannot keep workers down by looping a failing DROP DATABASE.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::shmem::{set_latch, SHARED};
use super::task::now;

/// How long a stopped worker stays down for the DDL to run.
const HOLD_US: i64 = 10_000_000;

pub fn init() {
    crate::dispatch::utility::before(before_utility);
}

/// Who may run a statement on a database, as Postgres checks it.
enum Allowed {
    /// the owner (DROP, SET TABLESPACE)
    Owner,
    /// the owner with CREATEDB (RENAME)
    OwnerWithCreatedb,
    /// CREATEDB, and the owner or the database is a template (TEMPLATE)
    Copier,
}

/// The database a statement needs to be alone in, if any, and who may
/// run it.
unsafe fn database_needing_exclusivity(
    node: *mut pg_sys::Node,
) -> Option<(&'static CStr, Allowed)> {
    // SAFETY: the node tags are checked before each cast.
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_DropdbStmt => {
                let stmt = node.cast::<pg_sys::DropdbStmt>();
                Some((CStr::from_ptr((*stmt).dbname), Allowed::Owner))
            }
            pg_sys::NodeTag::T_CreatedbStmt => {
                let stmt = node.cast::<pg_sys::CreatedbStmt>();
                option_value((*stmt).options, c"template").map(|d| (d, Allowed::Copier))
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = node.cast::<pg_sys::RenameStmt>();
                ((*stmt).renameType == pg_sys::ObjectType::OBJECT_DATABASE)
                    .then(|| (CStr::from_ptr((*stmt).subname), Allowed::OwnerWithCreatedb))
            }
            pg_sys::NodeTag::T_AlterDatabaseStmt => {
                let stmt = node.cast::<pg_sys::AlterDatabaseStmt>();
                option_value((*stmt).options, c"tablespace")
                    .map(|_| (CStr::from_ptr((*stmt).dbname), Allowed::Owner))
            }
            _ => None,
        }
    }
}

unsafe fn option_value(options: *mut pg_sys::List, name: &CStr) -> Option<&'static CStr> {
    // SAFETY: a List of DefElem, as the grammar builds it.
    unsafe {
        if options.is_null() {
            return None;
        }
        for i in 0..(*options).length as usize {
            let def = (*(*options).elements.add(i))
                .ptr_value
                .cast::<pg_sys::DefElem>();
            if !(*def).defname.is_null()
                && CStr::from_ptr((*def).defname) == name
                && !(*def).arg.is_null()
            {
                return Some(CStr::from_ptr(pg_sys::defGetString(def)));
            }
        }
        None
    }
}

/// Whether the current user passes the permission check Postgres will
/// make for the statement on database `oid`.
fn may_run(oid: pg_sys::Oid, allowed: &Allowed) -> bool {
    // SAFETY: syscache lookups by OID, released before returning.
    unsafe {
        let user = pg_sys::GetUserId();
        let db =
            pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::DATABASEOID as i32, oid.into());
        if db.is_null() {
            return false;
        }
        let form = pg_sys::GETSTRUCT(db) as *const pg_sys::FormData_pg_database;
        let (owner, is_template) = ((*form).datdba, (*form).datistemplate);
        pg_sys::ReleaseSysCache(db);
        let owns = pg_sys::has_privs_of_role(user, owner);
        let createdb = || {
            let role =
                pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::AUTHOID as i32, user.into());
            if role.is_null() {
                return false;
            }
            let form = pg_sys::GETSTRUCT(role) as *const pg_sys::FormData_pg_authid;
            let yes = (*form).rolsuper || (*form).rolcreatedb;
            pg_sys::ReleaseSysCache(role);
            yes
        };
        match allowed {
            Allowed::Owner => owns,
            Allowed::OwnerWithCreatedb => owns && createdb(),
            Allowed::Copier => (owns || is_template) && createdb(),
        }
    }
}

fn stop_worker_of(datname: &CStr, allowed: &Allowed) {
    // SAFETY: catalog lookup in the current transaction; missing is fine.
    let oid = unsafe { pg_sys::get_database_oid(datname.as_ptr(), true) };
    if oid == pg_sys::InvalidOid || !may_run(oid, allowed) {
        return;
    }
    let latch = {
        let mut shared = SHARED.exclusive();
        match shared.index_of(oid.to_u32()) {
            Some(index) => {
                let slot = &mut shared.slots[index];
                slot.next_start_at = now() + HOLD_US;
                slot.stop_requested = true;
                super::shmem::wake_state(index).latch()
            }
            None => 0,
        }
    };
    set_latch(latch);
}

/// pg_warden's part of the hook, guarded: a panic here becomes an ERROR.
#[pg_guard]
unsafe extern "C-unwind" fn before_utility(pstmt: *mut pg_sys::PlannedStmt) {
    // SAFETY: Postgres passes a valid statement.
    unsafe {
        let node = (*pstmt).utilityStmt;
        if !node.is_null() {
            if let Some((datname, allowed)) = database_needing_exclusivity(node) {
                stop_worker_of(datname, &allowed);
            }
        }
    }
}
