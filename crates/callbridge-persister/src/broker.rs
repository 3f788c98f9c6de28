//! Closing AMQP channels and connections on the way out.
//!
//! lapin closes a channel on its own when the last handle is dropped; a connection close
//! racing that automatic close can wait forever for the broker's answer. So channels are
//! closed explicitly, and every close is bounded: a stopping or reconnecting service must
//! not hang on a broker that stopped answering.

use std::time::Duration;

use lapin::{Channel, Connection};

/// How long a close may wait for the broker's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Closes `channel`; unacknowledged deliveries on it return to their queue.
pub(crate) async fn close_channel(channel: &Channel) {
    let closing = channel.close(200, "callbridge-persister stopping".into());
    match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "channel was already closed"),
        Err(_) => tracing::warn!("the broker did not confirm a channel close in time"),
    }
}

/// Closes `connection` (and whatever channels are still open on it).
pub(crate) async fn close_connection(connection: &Connection) {
    let closing = connection.close(200, "callbridge-persister stopping".into());
    match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "connection was already closed"),
        Err(_) => tracing::warn!("the broker did not confirm a connection close in time"),
    }
}
