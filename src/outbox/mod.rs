//! The transactional outbox (DESIGN §8): messages published inside the
//! caller's transaction, topic subscriptions, delivery by the worker.
//! Topic and pattern rules live in `warden_core::outbox`.
//!
//! - `tables`: `warden.outbox_messages` (written once), the dedupe keys,
//!   `warden.outbox_subscriptions` and the `warden.message` type.
//! - `publish`: `warden.publish`, `warden.publish_batch`.
//! - `subscribe`: `warden.subscribe`, `unsubscribe`, `pause`, `resume`.
//! - `fanout_task`: the worker task that turns committed messages into
//!   deliveries, one per matching subscription.
//! - `topic_match`: the pattern match the fan-out's SQL calls.

mod fanout_task;
mod publish;
mod subscribe;
mod tables;
mod topic_match;

/// Registers the fan-out task (preload only).
pub fn init(preloading: bool) {
    if preloading {
        fanout_task::register();
    }
}

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiResult;
use pgrx::{FromDatum, IntoDatum};

/// The first column of the first row a data-modifying statement on
/// pg_warden's own tables returns (None for no row or SQL NULL).
fn write_one<A: FromDatum + IntoDatum>(query: &str, args: &[DatumWithOid]) -> SpiResult<Option<A>> {
    Spi::connect_mut(|client| {
        let rows = client.update(query, Some(1), args)?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get_one()
    })
}
