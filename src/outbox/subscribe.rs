//! `warden.subscribe`, `unsubscribe`, `pause` and `resume` (warden_admin).
//!
//! A handler runs as the role that subscribed, never as a superuser: a
//! superuser subscribes a handler as the role it should run as (`SET
//! ROLE`), and that role needs EXECUTE on it. The signature
//! `(warden.message) RETURNS void` is checked here, with a clear error,
//! not at the first delivery.

use pgrx::datum::Interval;
use pgrx::pg_sys;
use pgrx::prelude::*;

use warden_core::outbox::Pattern;

use crate::error::{not_null, WardenError};
use crate::privileged::as_superuser;

/// Longest subscription name, in bytes.
const MAX_NAME_BYTES: usize = 63;
/// Deepest nesting of a filter.
const MAX_FILTER_DEPTH: usize = 16;
/// Longest backoff between two attempts: a week.
const MAX_BACKOFF_US: i128 = 7 * 86_400 * 1_000_000;
/// Longest handler timeout (statement_timeout is in int milliseconds).
const MAX_HANDLER_TIMEOUT_US: i128 = 24 * 3600 * 1_000_000;

fn check_name(name: &str) {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if !ok {
        WardenError::invalid_parameter("a subscription name is 1 to 63 of A-Z a-z 0-9 _ . - :")
            .hint("For example 'billing.invoice_mailer'.")
            .raise();
    }
}

fn spi_error(e: pgrx::spi::Error) -> WardenError {
    WardenError::prerequisite(format!("outbox subscriptions: {e}"))
}

/// A positive interval as microseconds (months count 30 days, as
/// Postgres compares intervals), or 22023 naming `what`.
fn positive_micros(value: Interval, what: &str) -> i128 {
    let us = value.as_micros();
    if us <= 0 {
        WardenError::invalid_parameter(format!("{what} must be positive"))
            .hint("For example '1 second'.")
            .raise();
    }
    us
}

/// Checks a handler: a plain function `(warden.message) RETURNS void`,
/// not in a temporary schema, owned by a role whose rights the
/// subscribing role has (so neither its owner, who may replace its body,
/// nor a SECURITY DEFINER clause gives it more than the subscriber has),
/// which the subscribing role may execute and which is not a superuser.
fn check_handler(handler: pg_sys::Oid) {
    // SAFETY: reads the current user.
    let me = unsafe { pg_sys::GetUserId() };
    let verdict = handler_verdict(handler, me).unwrap_or_else(|e| spi_error(e).raise());
    match verdict.as_deref() {
        None => WardenError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION,
            "the handler function does not exist",
        )
        .raise(),
        Some("shape") => WardenError::new(
            PgSqlErrorCode::ERRCODE_INVALID_FUNCTION_DEFINITION,
            "a handler must be a function (msg warden.message) RETURNS void",
        )
        .hint("CREATE FUNCTION my_handler(msg warden.message) RETURNS void LANGUAGE plpgsql AS $$ ... $$;")
        .raise(),
        Some("temporary") => WardenError::invalid_parameter("a handler must not be a temporary function")
            .detail("It would vanish with the session that made it.")
            .raise(),
        Some("owner") => WardenError::privilege(
            "the handler belongs to a role that does not have the subscribing role's rights",
        )
        .detail("Its owner (and the owner's members) could change what it does, and it would run with the subscriber's rights.")
        .hint("Subscribe a function the subscribing role owns (or a role that is a member of it owns).")
        .raise(),
        Some("definer") => WardenError::privilege(
            "a SECURITY DEFINER handler must belong to the subscribing role",
        )
        .detail("It would run with its owner's rights, not the subscriber's.")
        .hint("Make it SECURITY INVOKER, or subscribe as its owner.")
        .raise(),
        Some("execute") => WardenError::privilege("the subscribing role may not execute the handler")
            .detail("The handler runs as the role that subscribes.")
            .hint("GRANT EXECUTE ON FUNCTION ... TO that role, or subscribe as a role that has it.")
            .raise(),
        Some("admin") => WardenError::privilege("the subscribing role is not a member of warden_admin")
            .raise(),
        Some("superuser") => WardenError::privilege("a handler never runs as a superuser")
            .detail("The handler would run as the role that subscribes, here a superuser.")
            .hint("SET ROLE to the (non-superuser) role the handler should run as, then subscribe.")
            .raise(),
        Some(_) => {}
    }
}

/// The first rule `handler` breaks when run as `role`, or 'ok' (None: no
/// such function): its shape (`shape`), a temporary schema
/// (`temporary`), an owner that lacks `role`'s rights and could rewrite
/// it to run as `role` (`owner`), SECURITY DEFINER owned by another role
/// (`definer`), no
/// EXECUTE (`execute`), `role` a superuser (`superuser`). Checked at
/// subscribe time and again by every dispatcher run (the function, its owner
/// and the role's rights may have changed since).
pub(super) fn handler_verdict(
    handler: pg_sys::Oid,
    role: pg_sys::Oid,
) -> Result<Option<String>, pgrx::spi::Error> {
    crate::kept_plans::read_one::<String>(
        "SELECT CASE
                  WHEN NOT (p.prokind OPERATOR(pg_catalog.=) 'f' AND NOT p.proretset
                    AND p.prorettype OPERATOR(pg_catalog.=) 'pg_catalog.void'::pg_catalog.regtype
                    AND p.pronargs OPERATOR(pg_catalog.=) 1
                    AND p.proargtypes[0] OPERATOR(pg_catalog.=) 'warden.message'::pg_catalog.regtype)
                  THEN 'shape'
                  WHEN p.pronamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()
                    OR pg_catalog.pg_is_other_temp_schema(p.pronamespace) THEN 'temporary'
                  WHEN (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) $2)
                    IS NOT FALSE THEN 'superuser'
                  WHEN NOT (p.proowner OPERATOR(pg_catalog.=) $2 OR pg_catalog.pg_has_role(p.proowner, $2, 'USAGE'))
                    THEN 'owner'
                  WHEN p.prosecdef AND p.proowner OPERATOR(pg_catalog.<>) $2 THEN 'definer'
                  WHEN NOT pg_catalog.has_function_privilege($2, p.oid, 'EXECUTE') THEN 'execute'
                  WHEN NOT pg_catalog.pg_has_role($2, 'warden_admin', 'USAGE') THEN 'admin'
                  ELSE 'ok' END
           FROM pg_catalog.pg_proc p WHERE p.oid OPERATOR(pg_catalog.=) $1",
        &[handler.into(), role.into()],
    )
}

#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn subscribe(
    name: Option<&str>,
    topic_pattern: Option<&str>,
    handler: Option<pg_sys::Oid>,
    max_attempts: Option<i32>,
    backoff: Option<Interval>,
    max_backoff: Option<Interval>,
    ordered: Option<bool>,
    handler_timeout: Option<Interval>,
    filter: Option<pgrx::AnyElement>,
    consumer: Option<pg_sys::Oid>,
) {
    let name = not_null(name, "name");
    check_name(name);
    let pattern = not_null(topic_pattern, "topic_pattern");
    Pattern::parse(pattern).unwrap_or_else(|e| {
        WardenError::invalid_parameter(e.message())
            .hint("Patterns are topics whose segments may be '*' (one segment) or, last, '#' (the rest): 'orders.*', 'orders.#'.")
            .raise()
    });
    let max_attempts = not_null(max_attempts, "max_attempts");
    if max_attempts < 1 {
        WardenError::invalid_parameter("max_attempts must be at least 1").raise();
    }
    let backoff = not_null(backoff, "backoff");
    let max_backoff = not_null(max_backoff, "max_backoff");
    let max_backoff_us = positive_micros(max_backoff, "max_backoff");
    if max_backoff_us < positive_micros(backoff, "backoff") {
        WardenError::invalid_parameter("max_backoff must not be shorter than backoff").raise();
    }
    if max_backoff_us > MAX_BACKOFF_US {
        WardenError::invalid_parameter("max_backoff is at most 7 days").raise();
    }
    let ordered = not_null(ordered, "ordered");
    let handler_timeout = not_null(handler_timeout, "handler_timeout");
    if positive_micros(handler_timeout, "handler_timeout") > MAX_HANDLER_TIMEOUT_US {
        WardenError::invalid_parameter("handler_timeout is at most 24 hours").raise();
    }
    let filter = filter.map(|f| {
        let jsonb = crate::jsonb_shape::detoasted(f.datum());
        let shape = crate::jsonb_shape::shape(jsonb, MAX_FILTER_DEPTH);
        if f.oid() != pg_sys::JSONBOID || !shape.object || shape.depth > MAX_FILTER_DEPTH {
            WardenError::invalid_parameter(format!(
                "filter must be a JSON object nested at most {MAX_FILTER_DEPTH} levels"
            ))
            .hint("A message is delivered when its payload contains the filter (jsonb @>), e.g. '{\"region\": \"eu\"}'.")
            .raise();
        }
        // SAFETY: a jsonb datum of this call, as the argument it came as.
        unsafe { pgrx::JsonB::from_polymorphic_datum(jsonb, false, pg_sys::JSONBOID) }
            .expect("a jsonb")
    });
    if let Some(handler) = handler {
        check_handler(handler);
        if consumer.is_some() {
            WardenError::invalid_parameter("consumer is for pull subscriptions")
                .detail("A subscription with a handler is delivered by the worker.")
                .raise();
        }
    }
    // the handler by schema-qualified name, whatever the search_path
    let handler_name = handler.map(|h| {
        crate::spi_read::read_one::<String>(
            "SELECT pg_catalog.format('%I.%I(warden.message)', n.nspname, p.proname)
               FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
              WHERE p.oid OPERATOR(pg_catalog.=) $1",
            &[h.into()],
        )
        .unwrap_or_else(|e| spi_error(e).raise())
        .expect("checked above")
    });
    // SAFETY: reads the current user.
    let owner = unsafe { pg_sys::GetUserId() };
    let created = as_superuser(|| {
        super::write_one::<i32>(
            "INSERT INTO warden.outbox_subscriptions AS s
                    (name, topic_pattern, handler, owner, max_attempts, backoff, max_backoff,
                     ordered, handler_timeout, filter, consumer, start_after)
             SELECT $1, $2, $3, $4::pg_catalog.regrole, $5, $6, $7, $8, $9, $10, $11::pg_catalog.regrole,
                    CASE WHEN q.is_called THEN q.last_value ELSE q.last_value OPERATOR(pg_catalog.-) 1 END
               FROM warden.outbox_messages_id_seq q
             ON CONFLICT (name) DO NOTHING
             RETURNING s.id",
            &[
                name.into(),
                pattern.into(),
                handler_name.into(),
                owner.into(),
                max_attempts.into(),
                backoff.into(),
                max_backoff.into(),
                ordered.into(),
                handler_timeout.into(),
                filter.into(),
                consumer.into(),
            ],
        )
    })
    .unwrap_or_else(|e| spi_error(e).raise());
    if created.is_none() {
        WardenError::new(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!("subscription \"{name}\" already exists"),
        )
        .hint("Pick another name, or warden.unsubscribe it first.")
        .raise();
    }
    if ordered && !track_commit_timestamp() {
        // a warning, not a refusal: the setting needs a restart
        pgrx::ereport!(
            PgLogLevel::WARNING,
            PgSqlErrorCode::ERRCODE_WARNING,
            format!("ordered subscription \"{name}\" follows commit order exactly only with track_commit_timestamp = on"),
            "Without it, messages of one key whose transactions commit within one fan-out pass (about 10 ms) are handled in id order.",
        );
    }
}

/// Whether Postgres records commit timestamps (the fan-out then orders
/// the messages that became visible together by commit).
pub(super) fn track_commit_timestamp() -> bool {
    // SAFETY: reads a setting by name; NULL if unknown.
    let value = unsafe { pg_sys::GetConfigOption(c"track_commit_timestamp".as_ptr(), true, false) };
    !value.is_null() && unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() == b"on"
}

/// Runs `statement` (which returns the subscription's id; `$1` its name,
/// `$2` the caller, who must have the rights of the subscription's owner)
/// for the subscription `name`, or raises 42704 when there is none and
/// 42501 when it is another role's.
fn change(name: Option<&str>, statement: &str) -> i32 {
    let name = not_null(name, "name");
    check_name(name);
    // SAFETY: reads the current user.
    let me = unsafe { pg_sys::GetUserId() };
    let found = as_superuser(|| super::write_one::<i32>(statement, &[name.into(), me.into()]))
        .unwrap_or_else(|e| spi_error(e).raise());
    if let Some(id) = found {
        return id;
    }
    let exists = as_superuser(|| {
        crate::spi_read::read_one::<bool>(
            "SELECT EXISTS (SELECT FROM warden.outbox_subscriptions s WHERE s.name OPERATOR(pg_catalog.=) $1)",
            &[name.into()],
        )
    })
    .unwrap_or_else(|e| spi_error(e).raise());
    if exists == Some(true) {
        WardenError::privilege(format!("subscription \"{name}\" is another role's"))
            .detail("Only its owner (or a member of its owner role) and superusers may change it.")
            .raise();
    }
    WardenError::new(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("subscription \"{name}\" does not exist"),
    )
    .hint("warden.outbox_subscriptions lists the subscriptions.")
    .raise();
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn unsubscribe(name: Option<&str>) {
    let id = change(
        name,
        "DELETE FROM warden.outbox_subscriptions s
          WHERE s.name OPERATOR(pg_catalog.=) $1 AND pg_catalog.pg_has_role($2, s.owner, 'USAGE')
         RETURNING s.id",
    );
    // a statement of its own, so under a snapshot taken after the delete
    // above waited for a fan-out run holding the subscription: it sees
    // (and removes) what that run wrote
    as_superuser(|| {
        pgrx::Spi::connect_mut(|client| {
            client.update(
                "DELETE FROM warden.outbox_deliveries d WHERE d.subscription_id OPERATOR(pg_catalog.=) $1",
                None,
                &[id.into()],
            )?;
            client.update(
                "DELETE FROM warden.outbox_leases h WHERE h.subscription_id OPERATOR(pg_catalog.=) $1",
                None,
                &[id.into()],
            )?;
            Ok::<_, pgrx::spi::Error>(())
        })
    })
    .unwrap_or_else(|e| spi_error(e).raise());
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn pause(name: Option<&str>) {
    let _ = change(
        name,
        "UPDATE warden.outbox_subscriptions s SET paused = true WHERE s.name OPERATOR(pg_catalog.=) $1 AND pg_catalog.pg_has_role($2, s.owner, 'USAGE') RETURNING s.id",
    );
}

#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn resume(name: Option<&str>) {
    let _ = change(
        name,
        "UPDATE warden.outbox_subscriptions s SET paused = false WHERE s.name OPERATOR(pg_catalog.=) $1 AND pg_catalog.pg_has_role($2, s.owner, 'USAGE') RETURNING s.id",
    );
    // what waited while it was paused is due now
    super::dispatch_task::wake_at_commit();
}

extension_sql!(
    r#"
CREATE FUNCTION warden.subscribe(name text, topic_pattern text, handler regprocedure DEFAULT NULL, max_attempts integer DEFAULT 5, backoff interval DEFAULT '1 second', max_backoff interval DEFAULT '10 minutes', ordered boolean DEFAULT false, handler_timeout interval DEFAULT '30 seconds', filter jsonb DEFAULT NULL, consumer regrole DEFAULT NULL) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'subscribe_wrapper';
CREATE FUNCTION warden.unsubscribe(name text) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'unsubscribe_wrapper';
CREATE FUNCTION warden.pause(name text) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'pause_wrapper';
CREATE FUNCTION warden.resume(name text) RETURNS void
  VOLATILE PARALLEL UNSAFE LANGUAGE c AS 'MODULE_PATHNAME', 'resume_wrapper';
COMMENT ON FUNCTION warden.subscribe(text, text, regprocedure, integer, interval, interval, boolean, interval, jsonb, regrole) IS
  'Subscribes to the topics a pattern matches (* one segment, # the rest): with a handler (msg warden.message) RETURNS void the worker calls it as the subscribing role; without, consumers pull (members of consumer, or any warden_app member when it is NULL). Messages published from now on are delivered.';
COMMENT ON FUNCTION warden.unsubscribe(text) IS 'Drops a subscription (its owner''s, or a superuser''s act) and what it had not delivered.';
COMMENT ON FUNCTION warden.pause(text) IS 'Stops delivering to a subscription (messages keep arriving for it) until warden.resume.';
COMMENT ON FUNCTION warden.resume(text) IS 'Delivers to a paused subscription again, from where it stopped.';
"#,
    name = "outbox_subscribe",
    requires = ["outbox_tables"],
);
