//! How each type's values enter a hash_diff (encoding v1, see
//! `warden_core::scd2`), with a per-backend cache of what was looked up
//! in the catalogs.
//!
//! Families whose send form is not canonical for their equality are
//! encoded from the in-memory value (integers widened to int8, text-like
//! types as their bytes in the database encoding, floats, intervals) or
//! normalised (numeric). Arrays and composite values are encoded
//! structurally, so element types' OIDs (which change across dump and
//! restore for user-defined types) never enter the hash. Everything else
//! is its type's binary send form.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::PgSqlErrorCode;

use warden_core::scd2::{
    interval_linear, normalize_float4, normalize_float8, normalize_numeric_send,
    trim_bpchar_padding, RowEncoder,
};

use crate::error::WardenError;
use crate::tuple_desc::attribute;

/// Type tags of v1: the built-in OID naming each family.
mod tag {
    pub const INT: u32 = 20;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BYTEA: u32 = 17;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const RECORD: u32 = 2249;
    pub const ARRAY: u32 = 2277;
    pub const ENUM: u32 = 3500;
    pub const JSONB: u32 = 3802;
    /// Types created after initdb: their OIDs are not stable.
    pub const USER_DEFINED: u32 = 0;
}

/// OIDs below this were assigned by initdb and are the same everywhere.
const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

enum Kind {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// bytes of a varlena; `bpchar` drops its blank padding
    Varlena {
        tag: u32,
        bpchar: bool,
    },
    Name,
    /// fixed-size values whose send form is the value in big-endian
    /// order, written here without a send call
    Bool,
    Fixed4 {
        tag: u32,
    },
    Fixed8 {
        tag: u32,
    },
    Uuid,
    Interval,
    Numeric(Box<pg_sys::FmgrInfo>),
    /// the output function's text (server encoding): jsonb, enums
    Output {
        tag: u32,
        finfo: Box<pg_sys::FmgrInfo>,
    },
    Array {
        elem: Oid,
        len: i16,
        byval: bool,
        align: std::ffi::c_char,
    },
    Composite,
    /// the binary send form
    Send {
        tag: u32,
        finfo: Box<pg_sys::FmgrInfo>,
    },
}

/// OIDs are already well spread; SipHash showed in profiles.
#[derive(Default)]
struct OidHasher(u64);

impl std::hash::Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

type OidMap<V> = HashMap<Oid, V, std::hash::BuildHasherDefault<OidHasher>>;

thread_local! {
    static KINDS: RefCell<OidMap<Rc<Kind>>> = RefCell::new(OidMap::default());
}

fn forget_types() {
    // ALTER TYPE / ALTER DOMAIN: look everything up again
    KINDS.with(|k| k.borrow_mut().clear());
}

fn kind_of(typid: Oid) -> Rc<Kind> {
    if let Some(k) = KINDS.with(|k| k.borrow().get(&typid).cloned()) {
        return k;
    }
    crate::dispatch::invalidation::on_syscache(
        "SCD2 type kinds",
        pg_sys::SysCacheIdentifier::TYPEOID,
        forget_types,
    );
    let kind = Rc::new(look_up(typid));
    KINDS.with(|k| k.borrow_mut().insert(typid, kind.clone()));
    kind
}

fn finfo(function: Oid) -> Box<pg_sys::FmgrInfo> {
    // SAFETY: FmgrInfo is plain data, filled by fmgr_info_cxt; it lives
    // as long as the cache entry and allocates in TopMemoryContext.
    unsafe {
        let mut f: Box<pg_sys::FmgrInfo> = Box::new(std::mem::zeroed());
        pg_sys::fmgr_info_cxt(function, &mut *f, pg_sys::TopMemoryContext);
        f
    }
}

fn type_name(typid: Oid) -> String {
    // SAFETY: format_type_be returns a palloc'd C string.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::format_type_be(typid)) }
        .to_string_lossy()
        .into_owned()
}

fn look_up(typid: Oid) -> Kind {
    // SAFETY: catalog lookups by OID; errors are raised by Postgres.
    let base = unsafe { pg_sys::getBaseType(typid) };
    match base {
        pg_sys::INT2OID => return Kind::Int2,
        pg_sys::INT4OID => return Kind::Int4,
        pg_sys::INT8OID => return Kind::Int8,
        pg_sys::FLOAT4OID => return Kind::Float4,
        pg_sys::FLOAT8OID => return Kind::Float8,
        pg_sys::TEXTOID | pg_sys::VARCHAROID => {
            return Kind::Varlena {
                tag: tag::TEXT,
                bpchar: false,
            }
        }
        pg_sys::BPCHAROID => {
            return Kind::Varlena {
                tag: tag::TEXT,
                bpchar: true,
            }
        }
        pg_sys::NAMEOID => return Kind::Name,
        pg_sys::BYTEAOID => {
            return Kind::Varlena {
                tag: tag::BYTEA,
                bpchar: false,
            }
        }
        pg_sys::JSONOID => {
            return Kind::Varlena {
                tag: tag::JSON,
                bpchar: false,
            }
        }
        pg_sys::XMLOID => {
            return Kind::Varlena {
                tag: tag::XML,
                bpchar: false,
            }
        }
        pg_sys::INTERVALOID => return Kind::Interval,
        pg_sys::BOOLOID => return Kind::Bool,
        pg_sys::DATEOID | pg_sys::OIDOID => return Kind::Fixed4 { tag: base.to_u32() },
        pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID | pg_sys::TIMEOID => {
            return Kind::Fixed8 { tag: base.to_u32() }
        }
        pg_sys::UUIDOID => return Kind::Uuid,
        _ => {}
    }
    // SAFETY: as above.
    let typtype = unsafe { pg_sys::get_typtype(base) } as u8;
    if base == pg_sys::RECORDOID || typtype == pg_sys::TYPTYPE_COMPOSITE {
        return Kind::Composite;
    }
    let elem = unsafe { pg_sys::get_element_type(base) };
    if elem != pg_sys::InvalidOid {
        let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
        // SAFETY: out-parameters for a valid type.
        unsafe { pg_sys::get_typlenbyvalalign(elem, &mut len, &mut byval, &mut align) };
        return Kind::Array {
            elem,
            len,
            byval,
            align,
        };
    }
    let mut output = pg_sys::InvalidOid;
    let mut send = pg_sys::InvalidOid;
    let mut varlena = false;
    if base == pg_sys::JSONBOID || typtype == pg_sys::TYPTYPE_ENUM {
        // SAFETY: out-parameters for a valid type.
        unsafe { pg_sys::getTypeOutputInfo(base, &mut output, &mut varlena) };
        let tag = if base == pg_sys::JSONBOID {
            tag::JSONB
        } else {
            tag::ENUM
        };
        return Kind::Output {
            tag,
            finfo: finfo(output),
        };
    }
    // getTypeBinaryOutputInfo raises for a type without send; ask first
    // so the error says what to do
    if !has_send(base) {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("warden.hash_diff cannot encode type {}", type_name(typid)),
        )
        .detail("The type has no binary send function, so it has no canonical encoding.")
        .hint("Leave the column out with warden.hash_diff(row, cols) or hash a cast of it to text.")
        .raise();
    }
    // SAFETY: out-parameters for a valid type.
    unsafe { pg_sys::getTypeBinaryOutputInfo(base, &mut send, &mut varlena) };
    if base == pg_sys::NUMERICOID {
        return Kind::Numeric(finfo(send));
    }
    let tag = if base.to_u32() < FIRST_NORMAL_OBJECT_ID {
        base.to_u32()
    } else {
        tag::USER_DEFINED
    };
    Kind::Send {
        tag,
        finfo: finfo(send),
    }
}

fn has_send(typid: Oid) -> bool {
    // SAFETY: a syscache lookup by OID, released before returning.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::TYPEOID as i32,
            Datum::from(typid),
        );
        if tuple.is_null() {
            return false;
        }
        let form = pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_type;
        let send = (*form).typsend;
        pg_sys::ReleaseSysCache(tuple);
        send != pg_sys::InvalidOid
    }
}

/// Appends one non-NULL value of type `typid` to `out`.
pub fn encode_value(out: &mut RowEncoder, typid: Oid, value: Datum) {
    let kind = kind_of(typid);
    // SAFETY: `value` is a non-NULL Datum of `typid` (callers take it from
    // a tuple of a descriptor that says so).
    unsafe {
        match &*kind {
            Kind::Int2 => out.value(tag::INT, &i64::from(value.value() as i16).to_be_bytes()),
            Kind::Int4 => out.value(tag::INT, &i64::from(value.value() as i32).to_be_bytes()),
            Kind::Int8 => out.value(tag::INT, &(value.value() as i64).to_be_bytes()),
            Kind::Float4 => out.value(
                tag::FLOAT4,
                &normalize_float4(f32::from_bits(value.value() as u32)),
            ),
            Kind::Float8 => out.value(
                tag::FLOAT8,
                &normalize_float8(f64::from_bits(value.value() as u64)),
            ),
            Kind::Varlena { tag, bpchar } => {
                let bytes = varlena_bytes(value);
                out.value(
                    *tag,
                    if *bpchar {
                        trim_bpchar_padding(bytes)
                    } else {
                        bytes
                    },
                );
            }
            Kind::Bool => out.value(u32::from(pg_sys::BOOLOID), &[u8::from(value.value() != 0)]),
            Kind::Fixed4 { tag } => out.value(*tag, &(value.value() as u32).to_be_bytes()),
            Kind::Fixed8 { tag } => out.value(*tag, &(value.value() as u64).to_be_bytes()),
            Kind::Uuid => out.value(
                u32::from(pg_sys::UUIDOID),
                std::slice::from_raw_parts(value.cast_mut_ptr::<u8>(), 16),
            ),
            Kind::Name => {
                let s = std::ffi::CStr::from_ptr(value.cast_mut_ptr::<std::ffi::c_char>());
                out.value(tag::TEXT, s.to_bytes());
            }
            Kind::Interval => {
                let i = &*value.cast_mut_ptr::<pg_sys::Interval>();
                out.value(tag::INTERVAL, &interval_linear(i.time, i.day, i.month));
            }
            Kind::Numeric(f) => {
                let send = pg_sys::SendFunctionCall(std::ptr::from_ref(&**f).cast_mut(), value);
                let normal = normalize_numeric_send(varlena_bytes(Datum::from(send)))
                    .unwrap_or_else(|e| internal(e.0));
                out.value(tag::NUMERIC, &normal);
            }
            Kind::Output { tag, finfo } => {
                let text =
                    pg_sys::OutputFunctionCall(std::ptr::from_ref(&**finfo).cast_mut(), value);
                out.value(*tag, std::ffi::CStr::from_ptr(text).to_bytes());
            }
            Kind::Send { tag, finfo } => {
                let send = send_in_database_encoding(finfo, value);
                out.value(*tag, varlena_bytes(Datum::from(send)));
            }
            Kind::Array {
                elem,
                len,
                byval,
                align,
            } => {
                out.value(
                    tag::ARRAY,
                    &encode_array(value, *elem, *len, *byval, *align),
                );
            }
            Kind::Composite => {
                let mut nested = RowEncoder::nested();
                encode_composite(&mut nested, value, None);
                out.value(tag::RECORD, &nested.into_bytes());
            }
        }
    }
}

fn internal(what: &str) -> ! {
    WardenError::new(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("warden.hash_diff: {what}"),
    )
    .raise()
}

/// The bytes of a (possibly toasted or short-header) varlena.
///
/// # Safety
/// `value` must point to a varlena.
unsafe fn varlena_bytes<'a>(value: Datum) -> &'a [u8] {
    // SAFETY: per the contract; the detoasted copy lives in the current
    // memory context for the rest of the call.
    unsafe {
        let mut v: *mut pg_sys::varlena = value.cast_mut_ptr();
        // only toasted or compressed values need a call into Postgres
        if pgrx::varlena::varatt_is_1b_e(v) || pgrx::varlena::varatt_is_4b_c(v) {
            v = pg_sys::pg_detoast_datum_packed(v);
        }
        std::slice::from_raw_parts(
            pgrx::varlena::vardata_any(v).cast::<u8>(),
            pgrx::varlena::varsize_any_exhdr(v),
        )
    }
}

/// Send functions that write text (`pq_sendtext`) convert it to the
/// client encoding; a hash must not depend on the client, so those calls
/// run with the client encoding set to the database's and restored after,
/// also on error.
unsafe fn send_in_database_encoding(finfo: &pg_sys::FmgrInfo, value: Datum) -> *mut pg_sys::bytea {
    let flinfo = std::ptr::from_ref(finfo).cast_mut();
    // SAFETY: plain reads of the session's encodings.
    let (client, database) = unsafe {
        (
            pg_sys::pg_get_client_encoding(),
            pg_sys::GetDatabaseEncoding(),
        )
    };
    if client == database {
        // SAFETY: a send function of the value's type.
        return unsafe { pg_sys::SendFunctionCall(flinfo, value) };
    }
    // SAFETY: switching to the database encoding always succeeds (no
    // conversion); switching back to the encoding that was active
    // succeeds because its conversion was prepared when it was set.
    unsafe { pg_sys::SetClientEncoding(database) };
    pgrx::PgTryBuilder::new(|| unsafe { pg_sys::SendFunctionCall(flinfo, value) })
        .finally(|| unsafe {
            pg_sys::SetClientEncoding(client);
        })
        .execute()
}

/// Arrays: dimensions and lower bounds (array equality compares both),
/// then every element, NULLs in place.
unsafe fn encode_array(
    value: Datum,
    elem: Oid,
    len: i16,
    byval: bool,
    align: std::ffi::c_char,
) -> Vec<u8> {
    // SAFETY: `value` is an array of `elem`; deconstruct_array fills the
    // out-parameters with palloc'd arrays of `n` entries.
    unsafe {
        // an array of records of arrays ... recurses: 54001, not SIGSEGV
        pg_sys::check_stack_depth();
        let arr = pg_sys::pg_detoast_datum(value.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let ndim = (*arr).ndim;
        let dims = arr
            .cast::<u8>()
            .add(std::mem::size_of::<pg_sys::ArrayType>())
            .cast::<i32>();
        let mut out = RowEncoder::nested();
        out.raw(&(ndim as u32).to_be_bytes());
        for d in 0..ndim as usize {
            out.raw(&(*dims.add(d)).to_be_bytes());
            out.raw(&(*dims.add(ndim as usize + d)).to_be_bytes());
        }
        let mut elems: *mut Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n = 0;
        pg_sys::deconstruct_array(
            arr,
            elem,
            len.into(),
            byval,
            align,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        for i in 0..n as usize {
            if *nulls.add(i) {
                out.null_in_place();
            } else {
                encode_value(&mut out, elem, *elems.add(i));
            }
        }
        out.into_bytes()
    }
}

/// The fields of a composite value (a row), in declared order or in the
/// order of `columns`; trailing NULLs are left out by the encoder.
///
/// # Safety
/// `value` must be a composite Datum (a HeapTupleHeader).
pub unsafe fn encode_composite(out: &mut RowEncoder, value: Datum, columns: Option<&[String]>) {
    // SAFETY: per the contract; the descriptor is reference-counted and
    // released below (on error, resource-owner cleanup releases it).
    unsafe {
        // records nest without limit (r := ROW(r)): 54001, not SIGSEGV
        pg_sys::check_stack_depth();
        let header = pg_sys::pg_detoast_datum(value.cast_mut_ptr()) as pg_sys::HeapTupleHeader;
        let typid = (*header).t_choice.t_datum.datum_typeid;
        let typmod = (*header).t_choice.t_datum.datum_typmod;
        let tupdesc = pg_sys::lookup_rowtype_tupdesc(typid, typmod);
        let mut tuple: pg_sys::HeapTupleData = std::mem::zeroed();
        tuple.t_len = pgrx::varlena::varsize_any(header.cast()) as u32;
        tuple.t_data = header;
        encode_tuple(out, tupdesc, &mut tuple, columns);
        pg_sys::DecrTupleDescRefCount(tupdesc);
    }
}

/// Encodes `tuple` of `tupdesc`: every live column, or the named ones.
///
/// # Safety
/// `tuple` must be a tuple of `tupdesc`.
pub unsafe fn encode_tuple(
    out: &mut RowEncoder,
    tupdesc: pg_sys::TupleDesc,
    tuple: *mut pg_sys::HeapTupleData,
    columns: Option<&[String]>,
) {
    // SAFETY: per the contract.
    unsafe {
        let fields = Fields::deform(tupdesc, tuple);
        let positions = match columns {
            None => (0..fields.len())
                .filter(|&i| !attribute(tupdesc, i).attisdropped)
                .collect(),
            Some(names) => column_positions(tupdesc, names).unwrap_or_else(|name| {
                WardenError::new(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                    format!("column \"{name}\" is not in the row passed to warden.hash_diff"),
                )
                .hint("Name columns exactly as the table declares them (case-sensitive, unquoted).")
                .raise()
            }),
        };
        fields.encode(out, &positions);
    }
}

/// Zero-based positions of the named live columns, in the given order;
/// `Err(name)` for the first name that is not one.
///
/// # Safety
/// `tupdesc` must be valid.
pub unsafe fn column_positions(
    tupdesc: pg_sys::TupleDesc,
    names: &[String],
) -> Result<Vec<usize>, String> {
    // SAFETY: per the contract.
    let natts = unsafe { (*tupdesc).natts } as usize;
    names
        .iter()
        .map(|name| {
            (0..natts)
                .find(|&i| {
                    // SAFETY: i < natts.
                    let a = unsafe { attribute(tupdesc, i) };
                    !a.attisdropped
                        && unsafe { std::ffi::CStr::from_ptr(a.attname.data.as_ptr()) }.to_bytes()
                            == name.as_bytes()
                })
                .ok_or_else(|| name.clone())
        })
        .collect()
}

/// A deformed tuple: its values and NULL flags.
pub struct Fields {
    pub values: Vec<Datum>,
    pub nulls: Vec<bool>,
    tupdesc: pg_sys::TupleDesc,
}

impl Fields {
    /// # Safety
    /// `tuple` must be a tuple of `tupdesc`, which must outlive the result.
    pub unsafe fn deform(tupdesc: pg_sys::TupleDesc, tuple: *mut pg_sys::HeapTupleData) -> Fields {
        // SAFETY: per the contract.
        unsafe {
            let natts = (*tupdesc).natts as usize;
            let mut values = vec![Datum::from(0); natts];
            let mut nulls = vec![false; natts];
            pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            Fields {
                values,
                nulls,
                tupdesc,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Appends the fields at `positions`, in that order.
    pub fn encode(&self, out: &mut RowEncoder, positions: &[usize]) {
        for &i in positions {
            if self.nulls[i] {
                out.null();
            } else {
                // SAFETY: i < natts of the descriptor the values came from.
                let typid = unsafe { attribute(self.tupdesc, i) }.atttypid;
                encode_value(out, typid, self.values[i]);
            }
        }
    }
}
