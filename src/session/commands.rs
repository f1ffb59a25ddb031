//! What the nexus does for each client message kind: one function per pid.

use std::rc::Rc;
use std::time::Duration;

use tracing::{debug, info, Span};

use crate::access::Denied;
use crate::shard::{Connection, ShardState};
use easechat_auth::Operation;

use super::{Cause, Verdict};
use crate::stats::ProtocolErrorKind;

/// A name longer than `--max-name-bytes` closes the connection (1008).
fn too_long(shard: &ShardState, what: &str, name: &str) -> Option<Verdict> {
    let limit = shard.config.live.max_name_bytes();
    (name.len() > limit).then(|| {
        Verdict::Close(
            1008,
            format!("{what} too long: {} bytes, limit {limit}", name.len()),
            Cause::Limit,
        )
    })
}

/// `1h`: names or renames the connection.
pub fn hello(shard: &ShardState, conn: &Connection, name: &str) -> Verdict {
    if let Some(verdict) = too_long(shard, "name", name) {
        return verdict;
    }
    if let Some(Err(denied)) = conn.access.as_ref().map(|a| a.check_name(name)) {
        return refused(denied);
    }
    match conn.set_name(name) {
        None => {
            info!(name, "connection identified");
            // Once: tracing's text formatter appends every recorded value
            // to the span, so recording each rename would grow it without
            // bound (a rename flood took 70 MiB in 5 s). The span keeps the
            // first name; renames are logged (debug) with old and new.
            Span::current().record("endpoint", name);
        }
        Some(old) => debug!(old = &*old, name, "connection renamed"),
    }
    Verdict::Continue
}

/// `1h` with options (the positions extension): names the connection and
/// turns on what it asks for; unknown options are ignored.
pub fn hello_with(shard: &ShardState, conn: &Connection, name: &str, options: &str) -> Verdict {
    let verdict = hello(shard, conn, name);
    if matches!(verdict, Verdict::Continue) && options.split(',').any(|o| o.trim() == "positions") {
        conn.enable_positions();
    }
    verdict
}

/// `1c`: subscribes, renews or unsubscribes. A positions client's first
/// subscription to a channel with history is told where it stands (`1p`).
pub fn subscribe(
    shard: &ShardState,
    conn: &Rc<Connection>,
    channel: &str,
    ttl: Duration,
) -> Verdict {
    let first = conn.positions() && !ttl.is_zero() && !shard.is_subscribed(conn, channel);
    if conn.positions() && ttl.is_zero() {
        conn.finish_waiting(channel, None);
    }
    let verdict = subscribe_v1(shard, conn, channel, ttl);
    if first && matches!(verdict, Verdict::Continue) && shard.is_subscribed(conn, channel) {
        shard.start_position(conn, channel, None);
    }
    verdict
}

/// The `1c` extension: subscribes, then replays everything after `offset`
/// in `epoch`, or tells the client it could not (see `crate::shard::history`).
pub fn recover(
    shard: &ShardState,
    conn: &Rc<Connection>,
    channel: &str,
    ttl: Duration,
    offset: u64,
    epoch: &str,
) -> Verdict {
    if ttl.is_zero() {
        return subscribe(shard, conn, channel, ttl);
    }
    let verdict = subscribe_v1(shard, conn, channel, ttl);
    if matches!(verdict, Verdict::Continue) && shard.is_subscribed(conn, channel) {
        shard.start_position(conn, channel, Some((offset, epoch)));
    }
    verdict
}

/// `1c` as v1 has it.
fn subscribe_v1(
    shard: &ShardState,
    conn: &Rc<Connection>,
    channel: &str,
    ttl: Duration,
) -> Verdict {
    if conn.name().is_none() {
        return unidentified();
    }
    if let Some(verdict) = too_long(shard, "channel name", channel) {
        return verdict;
    }
    debug!(channel, ?ttl, "subscribe");
    let Some(access) = &conn.access else {
        return match shard.subscribe(conn, channel, ttl) {
            Ok(()) => Verdict::Continue,
            Err(e) => Verdict::Close(1008, e.to_string(), Cause::Limit),
        };
    };
    // Unsubscribing is always allowed; a new subscription takes one of the
    // identity's quota first, and the count is set right afterwards.
    if !ttl.is_zero() {
        if let Err(denied) = access.check(Operation::Subscribe, channel) {
            if access.was_dropped(channel) && matches!(denied, Denied::Channel { .. }) {
                // The periodic renewal of a subscription a reload dropped:
                // ignored, so a client that renews by itself is not closed.
                debug!(
                    channel,
                    "renewal of a subscription the policy no longer allows: ignored"
                );
                return Verdict::Continue;
            }
            return refused(denied);
        }
        if !shard.is_subscribed(conn, channel) {
            if let Err(denied) = access.reserve_subscription() {
                return refused(denied);
            }
        }
    }
    let result = shard.subscribe(conn, channel, ttl);
    access.count_subscriptions(shard.subscription_count(conn));
    match result {
        Ok(()) => Verdict::Continue,
        Err(e) => Verdict::Close(1008, e.to_string(), Cause::Limit),
    }
}

/// `1t`: publishes to every live subscriber of the channel.
pub fn transmit(shard: &ShardState, conn: &Connection, channel: &str, text: &str) -> Verdict {
    let Some(sender) = conn.name() else {
        return unidentified();
    };
    if let Some(verdict) = too_long(shard, "channel name", channel) {
        return verdict;
    }
    if let Some(Err(denied)) = conn
        .access
        .as_ref()
        .map(|a| a.check(Operation::Publish, channel))
    {
        return refused(denied);
    }
    // The 1r built from this must fit the receivers' frame limit.
    if let Err(e) = shard.check_publish(&sender, channel, text) {
        return Verdict::Close(1009, e.to_string(), Cause::Limit);
    }
    debug!(channel, bytes = text.len(), "transmit");
    shard.publish(&sender, channel, text);
    Verdict::Continue
}

/// `1d`: the client asks to be closed with 1000 and its reason.
pub fn disconnect(reason: &str) -> Verdict {
    Verdict::Close(1000, reason.into(), Cause::Requested)
}

/// Access control refused a command: 1008 with a reason naming it.
fn refused(denied: Denied) -> Verdict {
    Verdict::Close(1008, denied.to_string(), Cause::Denied)
}

fn unidentified() -> Verdict {
    Verdict::Close(
        1008,
        "connection unidentified".into(),
        Cause::Protocol(ProtocolErrorKind::Unidentified),
    )
}
