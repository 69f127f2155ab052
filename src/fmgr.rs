//! Hand-written V1 C functions: the few SQL functions that bypass pgrx's
//! per-call wrapper (hot paths, `record`/`"any"`/trigger arguments) still
//! need the `pg_finfo_<symbol>` record Postgres looks up with dlsym.

/// `function_info_v1!(pg_finfo_<symbol>)`: the info record for the C
/// function `<symbol>`, what `PG_FUNCTION_INFO_V1(<symbol>)` is in C.
macro_rules! function_info_v1 {
    ($info:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $info() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1_API: ::pgrx::pg_sys::Pg_finfo_record =
                ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1_API
        }
    };
}

pub(crate) use function_info_v1;

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::IntoDatum;

/// Calls one of pg_warden's internal SQL functions (`_` names, executable
/// by nobody but the extension owner) by its signature, every name
/// schema-qualified (the caller's search_path must not choose a type:
/// `pg_temp` comes first), e.g.
/// `c"warden._enable_tenancy(pg_catalog.regclass,pg_catalog.name,pg_catalog.bool)"`, with the caller's
/// rights. A call through the function manager checks no EXECUTE
/// privilege (an SQL call would): this is how a public function reaches
/// its internal helpers without them being granted to anyone
/// (docs/security.md, rule 8). The helper's own settings (`SET
/// search_path`, `SET jit`, `SECURITY DEFINER`) apply as in an SQL call.
/// Returns None for an SQL NULL; a strict helper given a NULL is not
/// called.
pub fn call_internal(signature: &CStr, args: &[Option<pg_sys::Datum>]) -> Option<pg_sys::Datum> {
    // SAFETY: regprocedurein parses a constant signature of our own (an
    // error when the function is missing).
    let fnoid = unsafe {
        let oid_datum =
            pgrx::direct_function_call_as_datum(pg_sys::regprocedurein, &[signature.into_datum()])
                .expect("regprocedurein returns a value or raises");
        pg_sys::Oid::from(oid_datum.value() as u32)
    };
    call_function(fnoid, args)
}

/// Calls the function `fnoid` through the function manager (no EXECUTE
/// check: callers check what they must), with its own settings applied
/// as in an SQL call. Returns None for an SQL NULL (a void SQL function
/// returns one); a strict function given a NULL is not called.
pub fn call_function(fnoid: pg_sys::Oid, args: &[Option<pg_sys::Datum>]) -> Option<pg_sys::Datum> {
    // SAFETY: fcinfo is sized for the arguments and freed after the call;
    // the call is guarded so an error unwinds as usual.
    unsafe {
        let mut flinfo = pg_sys::FmgrInfo::default();
        pg_sys::fmgr_info(fnoid, &mut flinfo);
        let nargs = args.len();
        assert_eq!(
            nargs, flinfo.fn_nargs as usize,
            "function {fnoid:?}: wrong number of arguments"
        );
        if flinfo.fn_strict && args.iter().any(Option::is_none) {
            return None;
        }
        let fcinfo = pg_sys::palloc0(
            std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>()
                + std::mem::size_of::<pg_sys::NullableDatum>() * nargs,
        ) as *mut pg_sys::FunctionCallInfoBaseData;
        (*fcinfo).flinfo = &mut flinfo;
        (*fcinfo).fncollation = pg_sys::DEFAULT_COLLATION_OID;
        (*fcinfo).nargs = nargs as _;
        for (slot, arg) in (*fcinfo).args.as_mut_slice(nargs).iter_mut().zip(args) {
            (slot.value, slot.isnull) = match arg {
                Some(d) => (*d, false),
                None => (pg_sys::Datum::from(0), true),
            };
        }
        let func = flinfo.fn_addr.expect("fmgr_info sets fn_addr");
        let result = pg_sys::ffi::pg_guard_ffi_boundary(|| func(fcinfo));
        let isnull = (*fcinfo).isnull;
        pg_sys::pfree(fcinfo.cast());
        (!isnull).then_some(result)
    }
}

/// A `name` datum (NAMEDATALEN bytes, zero-padded) of `s`.
pub fn name_datum(s: &CStr) -> pg_sys::Datum {
    // SAFETY: namein copies the string into a palloc'd NameData.
    unsafe {
        pgrx::direct_function_call_as_datum(pg_sys::namein, &[s.into_datum()])
            .expect("namein returns a value or raises")
    }
}

/// The trigger manager's data for a call of the trigger function `name`
/// (e.g. `warden._audit_capture()`); an error, with `hint` when given,
/// when the function was called otherwise.
///
/// # Safety
/// `fcinfo` is the current call's.
pub unsafe fn trigger_data<'a>(
    fcinfo: pg_sys::FunctionCallInfo,
    name: &str,
    hint: Option<&str>,
) -> &'a pg_sys::TriggerData {
    // SAFETY: the caller passes its call's fcinfo; a context tagged
    // T_TriggerData is the trigger manager's TriggerData.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            let mut e = crate::error::WardenError::prerequisite(format!(
                "{name} must be called as a trigger"
            ));
            if let Some(hint) = hint {
                e = e.hint(hint);
            }
            e.raise();
        }
        &*context.cast::<pg_sys::TriggerData>()
    }
}
