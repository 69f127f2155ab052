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

/// The relations the guard protects, in schema `warden` (the inbox too:
/// dropping or truncating it would lose committed events).
const PROTECTED: [&CStr; 3] = [c"audit_log", c"audit_checkpoints", c"audit_inbox"];

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
    super::flag::with_flag(&CAPTURE_DDL, f)
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
                let objects = list_nodes((*stmt).objects);
                match (*stmt).removeType {
                    pg_sys::ObjectType::OBJECT_TRIGGER => objects.into_iter().any(|n| {
                        last_name(n.cast()).is_some_and(|t| super::capture::is_capture_trigger(&t))
                    }),
                    pg_sys::ObjectType::OBJECT_TABLE => objects
                        .into_iter()
                        .any(|n| relid_of_names(n.cast(), false).is_some_and(is_captured)),
                    _ => false,
                }
                .then(|| "DROP of a captured table or its trigger".into())
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = node.cast::<pg_sys::RenameStmt>();
                match (*stmt).renameType {
                    pg_sys::ObjectType::OBJECT_TRIGGER => {
                        capture_name((*stmt).subname).then(|| "ALTER TRIGGER ... RENAME".into())
                    }
                    // a redacted or excluded column renamed would be
                    // recorded in clear
                    pg_sys::ObjectType::OBJECT_COLUMN => relid((*stmt).relation)
                        .is_some_and(is_captured)
                        .then(|| "renaming a column".into()),
                    _ => None,
                }
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
                        | pg_sys::AlterTableType::AT_DisableTrigUser
                        | pg_sys::AlterTableType::AT_EnableTrigAll
                        | pg_sys::AlterTableType::AT_EnableTrigUser
                        // values rewritten without firing triggers
                        | pg_sys::AlterTableType::AT_AlterColumnType => true,
                        _ => false,
                    }
                });
                (touches && relid((*stmt).relation).is_some_and(is_captured))
                    .then(|| "ALTER TABLE of its triggers or column types".into())
            }
            pg_sys::NodeTag::T_AlterObjectDependsStmt => {
                let stmt = node.cast::<pg_sys::AlterObjectDependsStmt>();
                ((*stmt).objectType == pg_sys::ObjectType::OBJECT_TRIGGER
                    && last_name((*stmt).object.cast())
                        .is_some_and(|t| super::capture::is_capture_trigger(&t)))
                .then(|| "ALTER TRIGGER ... DEPENDS ON EXTENSION".into())
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

fn warden_namespace() -> pg_sys::Oid {
    // SAFETY: a catalog lookup by name.
    unsafe { pg_sys::get_namespace_oid(c"warden".as_ptr(), true) }
}

/// Whether `func` names a function of schema `warden`.
unsafe fn warden_function(
    kind: pg_sys::ObjectType::Type,
    func: *mut pg_sys::ObjectWithArgs,
) -> bool {
    if func.is_null() {
        return false;
    }
    // SAFETY: the statement's function reference; missing is no match.
    unsafe {
        let oid = pg_sys::LookupFuncWithArgs(kind, func, true);
        oid != pg_sys::InvalidOid && pg_sys::get_func_namespace(oid) == warden_namespace()
    }
}

/// Whether a statement's object (of `kind`) is a function of schema
/// `warden`.
unsafe fn warden_function_object(
    kind: pg_sys::ObjectType::Type,
    object: *mut pg_sys::Node,
) -> bool {
    let function_kind = matches!(
        kind,
        pg_sys::ObjectType::OBJECT_FUNCTION
            | pg_sys::ObjectType::OBJECT_PROCEDURE
            | pg_sys::ObjectType::OBJECT_ROUTINE
            | pg_sys::ObjectType::OBJECT_AGGREGATE
    );
    // SAFETY: for these kinds the object is an ObjectWithArgs.
    function_kind && !object.is_null() && unsafe { warden_function(kind, object.cast()) }
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
                (hits(relid((*stmt).relation))
                    || warden_function_object((*stmt).renameType, (*stmt).object))
                .then(|| "a rename".into())
            }
            pg_sys::NodeTag::T_AlterOwnerStmt => {
                let stmt = node.cast::<pg_sys::AlterOwnerStmt>();
                (hits(relid((*stmt).relation))
                    || warden_function_object((*stmt).objectType, (*stmt).object))
                .then(|| "a change of owner".into())
            }
            pg_sys::NodeTag::T_AlterExtensionContentsStmt => {
                // any member of pg_warden: a function or trigger taken out
                // of the extension could then be dropped or replaced
                let stmt = node.cast::<pg_sys::AlterExtensionContentsStmt>();
                (CStr::from_ptr((*stmt).extname) == c"pg_warden")
                    .then(|| "ALTER EXTENSION pg_warden ADD/DROP".into())
            }
            pg_sys::NodeTag::T_AlterObjectSchemaStmt => {
                let stmt = node.cast::<pg_sys::AlterObjectSchemaStmt>();
                (hits(relid((*stmt).relation))
                    || warden_function_object((*stmt).objectType, (*stmt).object))
                .then(|| "SET SCHEMA".into())
            }
            pg_sys::NodeTag::T_AlterObjectDependsStmt => {
                let stmt = node.cast::<pg_sys::AlterObjectDependsStmt>();
                hits(relid((*stmt).relation)).then(|| "DEPENDS ON EXTENSION".into())
            }
            pg_sys::NodeTag::T_CreateFunctionStmt => {
                // replacing one of pg_warden's functions (the append-only
                // trigger, the capture trigger) would switch them off
                let stmt = node.cast::<pg_sys::CreateFunctionStmt>();
                let mut name = std::ptr::null_mut();
                (pg_sys::QualifiedNameGetCreationNamespace((*stmt).funcname, &mut name)
                    == warden_namespace())
                .then(|| "CREATE FUNCTION in schema warden".into())
            }
            pg_sys::NodeTag::T_AlterFunctionStmt => {
                let stmt = node.cast::<pg_sys::AlterFunctionStmt>();
                warden_function((*stmt).objtype, (*stmt).func).then(|| "ALTER FUNCTION".into())
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

/// The utility statements break-glass access allows: reading and
/// session settings, nothing that creates or changes objects.
unsafe fn break_glass_allows(node: *mut pg_sys::Node) -> bool {
    // SAFETY: reads the tag only.
    matches!(
        unsafe { (*node).type_ },
        pg_sys::NodeTag::T_VariableSetStmt
            | pg_sys::NodeTag::T_VariableShowStmt
            | pg_sys::NodeTag::T_ExplainStmt
            | pg_sys::NodeTag::T_DeclareCursorStmt
            | pg_sys::NodeTag::T_FetchStmt
            | pg_sys::NodeTag::T_ClosePortalStmt
            | pg_sys::NodeTag::T_PrepareStmt
            | pg_sys::NodeTag::T_ExecuteStmt
            | pg_sys::NodeTag::T_DeallocateStmt
            | pg_sys::NodeTag::T_CopyStmt
    )
}

/// Whether the statement drops pg_warden (the extension, its schema
/// with CASCADE, or everything its owner owns).
unsafe fn drops_pg_warden(node: *mut pg_sys::Node) -> bool {
    // SAFETY: cast after the tag was checked.
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_DropStmt => {
                let stmt = node.cast::<pg_sys::DropStmt>();
                let names = list_nodes((*stmt).objects);
                match (*stmt).removeType {
                    pg_sys::ObjectType::OBJECT_EXTENSION => {
                        names.into_iter().any(|n| str_val(n) == c"pg_warden")
                    }
                    pg_sys::ObjectType::OBJECT_SCHEMA => {
                        names.into_iter().any(|n| str_val(n) == c"warden")
                    }
                    _ => false,
                }
            }
            pg_sys::NodeTag::T_DropOwnedStmt => {
                let stmt = node.cast::<pg_sys::DropOwnedStmt>();
                let owner = protected_oids()
                    .first()
                    .map(|rel| {
                        let tuple = pg_sys::SearchSysCache1(
                            pg_sys::SysCacheIdentifier::RELOID as i32,
                            (*rel).into(),
                        );
                        if tuple.is_null() {
                            return pg_sys::InvalidOid;
                        }
                        let o = (*(pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_class))
                            .relowner;
                        pg_sys::ReleaseSysCache(tuple);
                        o
                    })
                    .unwrap_or(pg_sys::InvalidOid);
                owner != pg_sys::InvalidOid
                    && list_nodes((*stmt).roles)
                        .into_iter()
                        .any(|r| pg_sys::get_rolespec_oid(r.cast(), true) == owner)
            }
            _ => false,
        }
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
                             WHERE l.ts OPERATOR(pg_catalog.>) $1)
                 OR EXISTS (SELECT FROM warden.audit_inbox)",
            &[super::durable::timestamptz(cutoff).into()],
        )
    })
    .unwrap_or_else(|e| {
        WardenError::prerequisite(format!("cannot read the audit log: {e}")).raise()
    })
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
        // transaction control reads no catalog: in an aborted transaction
        // (ROLLBACK after an error) the catalog must not be touched
        if node.is_null()
            || (*node).type_ == pg_sys::NodeTag::T_TransactionStmt
            || !pg_sys::IsTransactionState()
        {
            return;
        }
        if super::break_glass::active() && !break_glass_allows(node) {
            WardenError::privilege("DDL is refused during break-glass access")
                .detail("Objects created now would belong to warden_break_glass and outlive the transaction.")
                .hint("COMMIT or ROLLBACK first.")
                .raise();
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
                "{action} is refused: it would change the audit log or pg_warden's own functions"
            ))
            .detail("warden.audit_log, warden.audit_checkpoints, warden.audit_inbox and the functions that guard them refuse changes for every role, superusers included.")
            .hint("Erase a payload with warden.audit_redact() and old events with warden.audit_prune(); both are audited.")
            .raise();
        }
    }
}
