//! The console's one AMQP connection, for the dead letters (the rest of what it shows from
//! RabbitMQ comes from the management API).
//!
//! Opened on first use and again whenever it was lost, so the console starts and serves
//! its other pages while RabbitMQ is down. Dead-letter work runs one piece at a time: a
//! listing holds the messages it looks at until it returns them, and a replay running
//! meanwhile in the same console would not see them.

use callbridge_ops::OpsError;
use callbridge_runtime::config::Secret;
use lapin::Connection;
use tokio::sync::Mutex;

pub struct Broker {
    url: Secret,
    connection: Mutex<Option<Connection>>,
}

impl Broker {
    pub fn new(url: Secret) -> Broker {
        Broker {
            url,
            connection: Mutex::new(None),
        }
    }

    /// Runs `work` on the connection, alone.
    pub async fn with_connection<T>(
        &self,
        work: impl AsyncFnOnce(&Connection) -> Result<T, OpsError>,
    ) -> Result<T, OpsError> {
        let mut slot = self.connection.lock().await;
        if !slot
            .as_ref()
            .is_some_and(|connection| connection.status().connected())
        {
            let connection =
                callbridge_runtime::amqp::connect(self.url.expose(), "callbridge-console")
                    .await
                    .map_err(OpsError::Broker)?;
            *slot = Some(connection);
        }
        let connection = slot.as_ref().expect("connected just above");
        work(connection).await
    }
}
