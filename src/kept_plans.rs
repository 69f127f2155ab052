//! Statements parsed and planned once per backend. The outbox's hot
//! statements (a claim, an ack, the dispatcher's read of due deliveries)
//! spent more time in the parser and planner than running: through
//! `SPI_keepplan` their plans live as long as the backend, and Postgres
//! re-plans them itself when a table, index or function they use
//! changes. They run with their generic plan: the statements are written
//! for one plan whatever their arguments, and a custom plan per call (what
//! Postgres picks when the generic plan's estimate looks worse) would
//! plan every call again.
//!
//! A plan is kept per query text, with the argument types of its first
//! use; every later use must pass the same types (checked: a datum of
//! another type would be read as the planned one).

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};
use pgrx::PgOid;

struct Kept {
    types: Vec<pg_sys::Oid>,
    plan: &'static OwnedPreparedStatement,
}

thread_local! {
    /// Plans are few (one per hot statement) and live as long as the
    /// backend, so they are leaked rather than freed.
    static PLANS: RefCell<HashMap<&'static str, Kept>> = RefCell::new(HashMap::new());
}

/// Runs `query`, which writes, with `args` through its kept plan
/// (preparing it on first use).
pub fn update<'conn>(
    client: &mut SpiClient<'conn>,
    query: &'static str,
    limit: Option<libc::c_long>,
    args: &[DatumWithOid],
) -> SpiResult<SpiTupleTable<'conn>> {
    let plan = kept(client, query, args)?;
    with_generic_plan(|| client.update(plan, limit, args))
}

/// Runs `query`, which only reads, with `args` through its kept plan;
/// the transaction is not given an id for it (see `spi_read`).
pub fn select<'conn>(
    client: &SpiClient<'conn>,
    query: &'static str,
    limit: Option<libc::c_long>,
    args: &[DatumWithOid],
) -> SpiResult<SpiTupleTable<'conn>> {
    let plan = kept(client, query, args)?;
    with_generic_plan(|| client.select(plan, limit, args))
}

/// Opens a cursor over `query`, which locks the rows it returns as they
/// are fetched, through its kept plan.
pub fn open_cursor<'conn>(
    client: &mut SpiClient<'conn>,
    query: &'static str,
    args: &[DatumWithOid],
) -> SpiResult<pgrx::spi::SpiCursor<'conn>> {
    let plan = kept(client, query, args)?;
    with_generic_plan(|| client.try_open_cursor_mut(plan, args))
}

/// The first column of the first row of `query`, which only reads (None
/// for no row or SQL NULL), through its kept plan.
pub fn read_one<A: pgrx::FromDatum + pgrx::IntoDatum>(
    query: &'static str,
    args: &[DatumWithOid],
) -> SpiResult<Option<A>> {
    pgrx::Spi::connect(|client| select(client, query, Some(1), args)?.first().get_one())
}

/// Runs `f` with `plan_cache_mode = force_generic_plan`, without JIT (a
/// generic plan's estimates over a large backlog crossed
/// `jit_above_cost`, and compiling each execution of a kept plan cost the
/// worker 3 ms a run) and without sequential scans, restored after.
///
/// The hot statements reach their rows by key or by a bounded index
/// range, and the tables they read are queues whose statistics are
/// nearly always wrong: analysed between bursts they show pages and no
/// live row, and the planner, costing every scan of an "empty" table at
/// nothing, picked sequential scans and scans of a whole index. Under a
/// held xmin horizon such a scan reads every row kept for it (an ack
/// read 1 972 buffers, 60 by key). A plan is made again whenever its
/// tables' statistics change, so the setting holds at every execution.
fn with_generic_plan<R>(f: impl FnOnce() -> R) -> R {
    crate::guc::with_settings(
        &[
            (c"plan_cache_mode", c"force_generic_plan"),
            (c"jit", c"off"),
            (c"enable_seqscan", c"off"),
        ],
        f,
    )
}

fn kept(
    client: &SpiClient,
    query: &'static str,
    args: &[DatumWithOid],
) -> SpiResult<&'static OwnedPreparedStatement> {
    let types: Vec<pg_sys::Oid> = args.iter().map(|a| a.oid()).collect();
    let kept = PLANS.with_borrow(|plans| {
        plans.get(query).map(|k| {
            assert!(
                k.types == types,
                "kept plan used with other argument types than it was prepared with"
            );
            k.plan
        })
    });
    if let Some(plan) = kept {
        return Ok(plan);
    }
    let oids: Vec<PgOid> = types.iter().map(|t| PgOid::from_untagged(*t)).collect();
    // prepared as a writing statement: read-only is decided per execution
    let plan: &'static OwnedPreparedStatement =
        Box::leak(Box::new(client.prepare_mut(query, &oids)?.keep()));
    PLANS.with_borrow_mut(|plans| plans.insert(query, Kept { types, plan }));
    Ok(plan)
}
