//! Reads through SPI that never assign a transaction id.
//!
//! pgrx's `Spi::get_one*`/`Spi::run*` helpers mark the transaction as
//! writing first (they call `GetCurrentTransactionId`), which fails on a
//! streaming standby ("cannot assign TransactionIds during recovery") and
//! turns every read-only transaction that misses a cache into a writing
//! one (an xid, a commit record). pg_warden reads with these instead; the
//! statement runs read-only until the transaction has written something,
//! and then sees those writes.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiResult;
use pgrx::{FromDatum, IntoDatum};

/// The first column of the first row (None for no row or SQL NULL).
pub fn read_one<A: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid],
) -> SpiResult<Option<A>> {
    Spi::connect(|client| client.select(query, Some(1), args)?.first().get_one())
}

/// The first two columns of the first row.
pub fn read_two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid],
) -> SpiResult<(Option<A>, Option<B>)> {
    Spi::connect(|client| client.select(query, Some(1), args)?.first().get_two())
}

/// The first three columns of the first row.
pub fn read_three<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum, C: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid],
) -> SpiResult<(Option<A>, Option<B>, Option<C>)> {
    Spi::connect(|client| client.select(query, Some(1), args)?.first().get_three())
}
