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
