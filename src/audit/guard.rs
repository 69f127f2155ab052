//! The utility guard: DDL that would let anyone, the owner and superusers
//! included, change or remove the audit log without a trace is refused
//! before it runs. On `warden.audit_log` and `warden.audit_checkpoints`:
//! every `ALTER TABLE` (DISABLE TRIGGER, ENABLE TRIGGER without ALWAYS,
//! SET UNLOGGED, column changes, owner, ...) except storage settings and
//! statistics targets, `TRUNCATE`, `DROP TRIGGER`/`RULE`/`POLICY`, `CREATE
//! TRIGGER`/`RULE`/`POLICY`, renames, `ALTER EXTENSION ... DROP TABLE` and
//! grants of anything but SELECT. `DROP EXTENSION pg_warden` while the log
//! holds events younger than `warden.audit_min_retention`, or events not
//! chained yet. pg_warden's own install and upgrade scripts pass (another
//! extension's script does not). What cannot be refused (catalog edits, direct
//! heap writes, a restored older copy) is found by verification.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::WardenError;

/// The relations the guard protects, in schema `warden`.
const PROTECTED: [&CStr; 2] = [c"audit_log", c"audit_checkpoints"];

/// ALTER TABLE subcommands that change neither content nor protection.
const HARMLESS_ALTERS: [pg_sys::AlterTableType::Type; 3] = [
    pg_sys::AlterTableType::AT_SetRelOptions,
    pg_sys::AlterTableType::AT_ResetRelOptions,
    pg_sys::AlterTableType::AT_SetStatistics,
];

pub fn init() {
    crate::dispatch::utility::before(before_utility);
}

thread_local! {
    /// Set while `audit_untable` drops the capture triggers.
    static CAPTURE_DDL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (audit_untable's DROP TRIGGERs) with the capture triggers
/// droppable.
pub(super) fn with_capture_triggers_droppable<R>(f: impl FnOnce() -> R) -> R {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            CAPTURE_DDL.set(false);
        }
    }
    CAPTURE_DDL.set(true);
    let _clear = Clear;
    f()
}

/// The last name of a qualified name list (a trigger's name).
unsafe fn last_name(names: *mut pg_sys::List) -> Option<String> {
    // SAFETY: a List of String nodes.
    unsafe {
        let nodes = list_nodes(names);
        let last = nodes.last()?;
        Some(str_val(*last).to_string_lossy().into_owned())
    }
}

/// Whether `rel` carries capture triggers.
fn is_captured(rel: pg_sys::Oid) -> bool {
    crate::spi_read::read_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                         WHERE t.tgrelid OPERATOR(pg_catalog.=) $1
                           AND t.tgname OPERATOR(pg_catalog.=) 'warden_audit_insert')",
        &[rel.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// What the statement would do to the capture of a table (drop, disable
/// or rename its triggers), if anything: only `audit_untable`, which is
/// itself audited, may end a capture.
unsafe fn refused_capture_change(node: *mut pg_sys::Node) -> Option<String> {
    if CAPTURE_DDL.get() {
        return None;
    }
    let capture_name = |name: *const std::ffi::c_char| {
        // SAFETY: a C string from the parse tree, or null.
        !name.is_null()
            && super::capture::is_capture_trigger(
                &unsafe { CStr::from_ptr(name) }.to_string_lossy(),
            )
    };
    // SAFETY: each node is cast after its tag was checked.
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_DropStmt => {
                let stmt = node.cast::<pg_sys::DropStmt>();
                ((*stmt).removeType == pg_sys::ObjectType::OBJECT_TRIGGER
                    && list_nodes((*stmt).objects).into_iter().any(|n| {
                        last_name(n.cast()).is_some_and(|t| super::capture::is_capture_trigger(&t))
                    }))
                .then(|| "DROP TRIGGER".into())
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = node.cast::<pg_sys::RenameStmt>();
                ((*stmt).renameType == pg_sys::ObjectType::OBJECT_TRIGGER
                    && capture_name((*stmt).subname))
                .then(|| "ALTER TRIGGER ... RENAME".into())
            }
            pg_sys::NodeTag::T_AlterTableStmt => {
                let stmt = node.cast::<pg_sys::AlterTableStmt>();
                let touches = list_nodes((*stmt).cmds).into_iter().any(|c| {
                    let cmd = &*c.cast::<pg_sys::AlterTableCmd>();
                    match cmd.subtype {
                        pg_sys::AlterTableType::AT_DisableTrig
                        | pg_sys::AlterTableType::AT_EnableTrig
                        | pg_sys::AlterTableType::AT_EnableReplicaTrig => capture_name(cmd.name),
                        pg_sys::AlterTableType::AT_DisableTrigAll
                        | pg_sys::AlterTableType::AT_DisableTrigUser => true,
                        _ => false,
                    }
                });
                (touches && relid((*stmt).relation).is_some_and(is_captured))
                    .then(|| "disabling a capture trigger".into())
            }
            _ => None,
        }
    }
}

/// The OIDs of the protected relations in this database (none without
/// the extension).
fn protected_oids() -> Vec<pg_sys::Oid> {
    // SAFETY: catalog lookups by name.
    unsafe {
        if pg_sys::get_extension_oid(c"pg_warden".as_ptr(), true) == pg_sys::InvalidOid {
            return Vec::new();
        }
        let schema = pg_sys::get_namespace_oid(c"warden".as_ptr(), true);
        if schema == pg_sys::InvalidOid {
            return Vec::new();
        }
        PROTECTED
            .iter()
            .map(|name| pg_sys::get_relname_relid(name.as_ptr(), schema))
            .filter(|oid| *oid != pg_sys::InvalidOid)
            .collect()
    }
}

/// The relation a RangeVar names, if it exists.
unsafe fn relid(rv: *const pg_sys::RangeVar) -> Option<pg_sys::Oid> {
    if rv.is_null() {
        return None;
    }
    // SAFETY: a RangeVar from the parse tree; no lock, missing is None.
    let oid = unsafe {
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as i32,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// The relation a qualified name list names (`drop_last`: the list ends
/// with an object of the relation, such as a trigger name).
unsafe fn relid_of_names(names: *mut pg_sys::List, drop_last: bool) -> Option<pg_sys::Oid> {
    // SAFETY: a List of String nodes from the parse tree.
    unsafe {
        if names.is_null() {
            return None;
        }
        let len = (*names).length - i32::from(drop_last);
        if len < 1 {
            return None;
        }
        relid(pg_sys::makeRangeVarFromNameList(pg_sys::list_copy_head(
            names, len,
        )))
    }
}

unsafe fn list_nodes(list: *mut pg_sys::List) -> Vec<*mut pg_sys::Node> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: a pointer List.
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).ptr_value.cast())
            .collect()
    }
}

/// The text of a String node (`strVal`).
unsafe fn str_val(node: *mut pg_sys::Node) -> &'static CStr {
    // SAFETY: a String node (PostgreSQL 15 and later).
    unsafe { CStr::from_ptr((*node.cast::<pg_sys::String>()).sval) }
}

/// What the statement would do to a protected relation, if anything.
unsafe fn refused_action(node: *mut pg_sys::Node, protected: &[pg_sys::Oid]) -> Option<String> {
    let hits = |oid: Option<pg_sys::Oid>| oid.is_some_and(|o| protected.contains(&o));
    // SAFETY: each node is cast after its tag was checked.
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_AlterTableStmt => {
                let stmt = node.cast::<pg_sys::AlterTableStmt>();
                let all_harmless = list_nodes((*stmt).cmds).into_iter().all(|c| {
                    HARMLESS_ALTERS.contains(&(*c.cast::<pg_sys::AlterTableCmd>()).subtype)
                });
                (hits(relid((*stmt).relation)) && !all_harmless).then(|| "ALTER TABLE".into())
            }
            pg_sys::NodeTag::T_TruncateStmt => {
                let stmt = node.cast::<pg_sys::TruncateStmt>();
                list_nodes((*stmt).relations)
                    .into_iter()
                    .any(|rv| hits(relid(rv.cast())))
                    .then(|| "TRUNCATE".into())
            }
            pg_sys::NodeTag::T_DropStmt => {
                let stmt = node.cast::<pg_sys::DropStmt>();
                let (what, drop_last) = match (*stmt).removeType {
                    pg_sys::ObjectType::OBJECT_TABLE => ("DROP TABLE", false),
                    pg_sys::ObjectType::OBJECT_TRIGGER => ("DROP TRIGGER", true),
                    pg_sys::ObjectType::OBJECT_RULE => ("DROP RULE", true),
                    pg_sys::ObjectType::OBJECT_POLICY => ("DROP POLICY", true),
                    _ => return None,
                };
                list_nodes((*stmt).objects)
                    .into_iter()
                    .any(|names| hits(relid_of_names(names.cast(), drop_last)))
                    .then(|| what.into())
            }
            pg_sys::NodeTag::T_CreateTrigStmt => {
                let stmt = node.cast::<pg_sys::CreateTrigStmt>();
                hits(relid((*stmt).relation)).then(|| "CREATE TRIGGER".into())
            }
            pg_sys::NodeTag::T_RuleStmt => {
                let stmt = node.cast::<pg_sys::RuleStmt>();
                hits(relid((*stmt).relation)).then(|| "CREATE RULE".into())
            }
            pg_sys::NodeTag::T_CreatePolicyStmt => {
                let stmt = node.cast::<pg_sys::CreatePolicyStmt>();
                hits(relid((*stmt).table)).then(|| "CREATE POLICY".into())
            }
            pg_sys::NodeTag::T_AlterPolicyStmt => {
                let stmt = node.cast::<pg_sys::AlterPolicyStmt>();
                hits(relid((*stmt).table)).then(|| "ALTER POLICY".into())
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = node.cast::<pg_sys::RenameStmt>();
                hits(relid((*stmt).relation)).then(|| "a rename".into())
            }
            pg_sys::NodeTag::T_AlterExtensionContentsStmt => {
                let stmt = node.cast::<pg_sys::AlterExtensionContentsStmt>();
                ((*stmt).objtype == pg_sys::ObjectType::OBJECT_TABLE
                    && hits(relid_of_names((*stmt).object.cast(), false)))
                .then(|| "ALTER EXTENSION ... ADD/DROP".into())
            }
            pg_sys::NodeTag::T_GrantStmt => {
                let stmt = node.cast::<pg_sys::GrantStmt>();
                if !(*stmt).is_grant || (*stmt).objtype != pg_sys::ObjectType::OBJECT_TABLE {
                    return None;
                }
                let only_select = !(*stmt).privileges.is_null()
                    && list_nodes((*stmt).privileges).into_iter().all(|p| {
                        let name = (*p.cast::<pg_sys::AccessPriv>()).priv_name;
                        !name.is_null() && CStr::from_ptr(name) == c"select"
                    });
                if only_select {
                    return None;
                }
                let covered = match (*stmt).targtype {
                    pg_sys::GrantTargetType::ACL_TARGET_OBJECT => list_nodes((*stmt).objects)
                        .into_iter()
                        .any(|rv| hits(relid(rv.cast()))),
                    pg_sys::GrantTargetType::ACL_TARGET_ALL_IN_SCHEMA => {
                        list_nodes((*stmt).objects)
                            .into_iter()
                            .any(|s| str_val(s) == c"warden")
                    }
                    _ => false,
                };
                covered.then(|| "GRANT of more than SELECT".into())
            }
            _ => None,
        }
    }
}

/// Whether the statement drops pg_warden.
unsafe fn drops_pg_warden(node: *mut pg_sys::Node) -> bool {
    // SAFETY: cast after the tag was checked.
    unsafe {
        if (*node).type_ != pg_sys::NodeTag::T_DropStmt {
            return false;
        }
        let stmt = node.cast::<pg_sys::DropStmt>();
        (*stmt).removeType == pg_sys::ObjectType::OBJECT_EXTENSION
            && list_nodes((*stmt).objects)
                .into_iter()
                .any(|n| str_val(n) == c"pg_warden")
    }
}

/// Refuses DROP EXTENSION while the log holds events younger than the
/// minimum retention, or events not chained yet.
fn refuse_drop_within_retention() {
    let retention = crate::guc::audit_min_retention();
    let cutoff = super::durable::now_micros() - retention.as_micros() as i64;
    let young = crate::privileged::as_superuser(|| {
        crate::spi_read::read_one::<bool>(
            "SELECT EXISTS (SELECT FROM warden.audit_log l
                             WHERE l.ts OPERATOR(pg_catalog.>)
                                   (pg_catalog.timestamptz '1970-01-01 00:00:00+00' OPERATOR(pg_catalog.+)
                                    ($1 OPERATOR(pg_catalog.*) pg_catalog.interval '1 microsecond')))
                 OR EXISTS (SELECT FROM warden.audit_inbox)",
            &[cutoff.into()],
        )
    })
    .unwrap_or_else(|e| WardenError::prerequisite(format!("cannot read the audit log: {e}")).raise())
    .unwrap_or(true);
    if young {
        WardenError::privilege("DROP EXTENSION pg_warden is refused: the audit log holds events younger than warden.audit_min_retention")
            .detail(format!(
                "Dropping the extension drops the audit log; events are kept at least {} days (or are still waiting to be chained).",
                retention.as_secs() / 86_400
            ))
            .hint("Export the chains first (warden.audit_export), then lower warden.audit_min_retention in postgresql.conf and reload.")
            .raise();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn before_utility(pstmt: *mut pg_sys::PlannedStmt) {
    // SAFETY: the statement Postgres is about to run; a plain global read.
    unsafe {
        if pg_sys::creating_extension
            && pg_sys::CurrentExtensionObject
                == pg_sys::get_extension_oid(c"pg_warden".as_ptr(), true)
        {
            return; // pg_warden's own install or upgrade script
        }
        let node = (*pstmt).utilityStmt;
        if node.is_null() {
            return;
        }
        if drops_pg_warden(node)
            && pg_sys::get_extension_oid(c"pg_warden".as_ptr(), true) != pg_sys::InvalidOid
        {
            refuse_drop_within_retention();
            return;
        }
        if let Some(action) = refused_capture_change(node) {
            WardenError::privilege(format!(
                "{action} is refused: the table's changes are audited"
            ))
            .hint("End the capture with warden.audit_untable() (it is recorded).")
            .raise();
        }
        let protected = protected_oids();
        if protected.is_empty() {
            return;
        }
        if let Some(action) = refused_action(node, &protected) {
            WardenError::privilege(format!(
                "{action} on the audit log is refused: the audit log is append-only"
            ))
            .detail("warden.audit_log and warden.audit_checkpoints refuse changes for every role, superusers included.")
            .hint("Erase a payload with warden.audit_redact() and old events with warden.audit_prune(); both are audited.")
            .raise();
        }
    }
}
