//! What a failed batch transaction means for its messages.

/// The one decision a failed store attempt needs: retry the same messages, or isolate the
/// message(s) that caused it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unavailable or overloaded (connection lost, pool timeout,
    /// shutting down, out of resources), or failed in a way no message explains: wait,
    /// back off and retry the same batch. Never dead-letters anything.
    #[error("database unavailable: {0:#}")]
    Transient(anyhow::Error),
    /// Deadlock or serialization failure: the transaction lost a race with another one
    /// and is retried at once.
    #[error("transaction conflict: {0:#}")]
    Conflict(anyhow::Error),
    /// The data of some message in the batch cannot be stored (a value too long for its
    /// column, a character Postgres refuses, …): split the batch to find it.
    #[error("a message cannot be stored: {0:#}")]
    Message(anyhow::Error),
}

/// SQLSTATE classes whose errors are caused by the data written: 22 data exception
/// (value too long, invalid text, out of range), 23 integrity constraint violation and
/// 54 program limit exceeded (e.g. an index entry too large for its key).
const MESSAGE_CLASSES: [&str; 3] = ["22", "23", "54"];
/// `40001` serialization_failure, `40P01` deadlock_detected.
const CONFLICT_CODES: [&str; 2] = ["40001", "40P01"];

impl StoreError {
    /// Classifies a database error that happened while `doing` something.
    ///
    /// Only errors the data explains are `Message`: anything unrecognised is treated as
    /// transient, because dead-lettering a good message for an unexplained failure (a
    /// missing migration, a permission) loses it from the pipeline, whereas retrying
    /// costs only time and shows as not-ready.
    pub fn from_sqlx(error: sqlx::Error, doing: &'static str) -> StoreError {
        let code = match &error {
            sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
            _ => None,
        };
        let error = anyhow::Error::new(error).context(doing);
        match code.as_deref() {
            Some(code) if CONFLICT_CODES.contains(&code) => StoreError::Conflict(error),
            Some(code) if MESSAGE_CLASSES.iter().any(|class| code.starts_with(class)) => {
                StoreError::Message(error)
            }
            _ => StoreError::Transient(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_pool_failures_are_transient() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(
            StoreError::from_sqlx(io, "while testing"),
            StoreError::Transient(_)
        ));
        assert!(matches!(
            StoreError::from_sqlx(sqlx::Error::PoolTimedOut, "while testing"),
            StoreError::Transient(_)
        ));
    }
}
