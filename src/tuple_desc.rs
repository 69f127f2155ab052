//! Reading a tuple descriptor's attributes the same way on every
//! supported PostgreSQL (PG18 changed the layout).

use pgrx::pg_sys;

/// The `i`th attribute of a tuple descriptor (`TupleDescAttr`).
///
/// # Safety
/// `i` must be below `tupdesc`'s attribute count.
pub(crate) unsafe fn attribute<'a>(
    tupdesc: pg_sys::TupleDesc,
    i: usize,
) -> &'a pg_sys::FormData_pg_attribute {
    // SAFETY: per the contract; the attributes follow the header.
    #[cfg(not(feature = "pg18"))]
    unsafe {
        &*(*tupdesc).attrs.as_ptr().add(i)
    }
    // PG18 puts an array of natts compact attributes first, then the full
    // ones (what its inline TupleDescAttr computes).
    // SAFETY: as above.
    #[cfg(feature = "pg18")]
    unsafe {
        let full = (*tupdesc)
            .compact_attrs
            .as_ptr()
            .add((*tupdesc).natts as usize)
            .cast::<pg_sys::FormData_pg_attribute>();
        &*full.add(i)
    }
}
