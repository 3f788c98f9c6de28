//! A loopback TCP proxy a test puts between a service and Postgres or RabbitMQ, then
//! [`cut`](TcpProxy::cut)s and [`restore`](TcpProxy::restore)s to simulate an outage
//! without touching the shared servers.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards every connection accepted on `127.0.0.1:<random port>` to a target address.
///
/// `cut()` takes effect before it returns: every live connection is shut down in both
/// directions (both peers see the connection end) and connections accepted while cut
/// are closed at once. `restore()` lets new connections through again.
///
/// `stall()` is the other kind of network failure: connections stay open but no byte
/// crosses the proxy (a black hole, as when a link drops without a reset) until
/// `unstall()`, which delivers what was held back.
///
/// `retarget()` points new connections elsewhere, as a failover moves a service address
/// to the promoted server.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stalled: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

#[derive(Debug)]
struct ProxyState {
    /// Where new connections are forwarded.
    target: SocketAddr,
    cut: bool,
    next_id: u64,
    /// Connections accepted so far, including those closed at once while cut.
    accepted: u64,
    /// Duplicated handles of each live connection's sockets (client side and target
    /// side), kept so `cut` can shut them down synchronously from any thread.
    live: HashMap<u64, Vec<std::net::TcpStream>>,
}

impl TcpProxy {
    /// Starts a proxy to `target`. Panics if it cannot bind a loopback port.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        Self::try_start(target)
            .await
            .expect("while starting the test TCP proxy")
    }

    /// Like [`TcpProxy::start`], returning the error instead of panicking.
    pub async fn try_start(target: SocketAddr) -> Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("while binding the proxy's loopback port")?;
        let addr = listener
            .local_addr()
            .context("while reading the proxy's address")?;
        let state = Arc::new(Mutex::new(ProxyState {
            target,
            cut: false,
            next_id: 0,
            accepted: 0,
            live: HashMap::new(),
        }));
        let (stalled, _) = watch::channel(false);
        let accept_loop =
            tokio::spawn(accept_connections(listener, state.clone(), stalled.clone()));
        Ok(TcpProxy {
            addr,
            state,
            stalled,
            accept_loop,
        })
    }

    /// Where clients connect (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards new connections to.
    pub fn target(&self) -> SocketAddr {
        lock(&self.state).target
    }

    /// Forwards new connections to `target` from now on; live ones stay as they are
    /// (`cut` ends them).
    pub fn retarget(&self, target: SocketAddr) {
        lock(&self.state).target = target;
    }

    /// Ends every live connection and closes new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        let mut state = lock(&self.state);
        state.cut = true;
        for (_, sockets) in state.live.drain() {
            shutdown_all(&sockets);
        }
    }

    /// Lets new connections through again (connections ended by `cut` stay ended).
    pub fn restore(&self) {
        lock(&self.state).cut = false;
    }

    /// Keeps every connection open but forwards nothing, in either direction, until
    /// [`TcpProxy::unstall`]: the peers see silence, not a closed connection.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again, starting with the bytes held back while stalled.
    pub fn unstall(&self) {
        self.stalled.send_replace(false);
    }

    /// Whether the proxy is currently cut.
    pub fn is_cut(&self) -> bool {
        lock(&self.state).cut
    }

    /// Connections accepted since start, including those closed at once while cut: lets a
    /// test wait until a client has retried without sleeping for a guessed time.
    pub fn accepted_connections(&self) -> u64 {
        lock(&self.state).accepted
    }

    /// Number of connections currently forwarded.
    pub fn live_connections(&self) -> usize {
        lock(&self.state).live.len()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        let mut state = lock(&self.state);
        for (_, sockets) in state.live.drain() {
            shutdown_all(&sockets);
        }
    }
}

fn lock(state: &Mutex<ProxyState>) -> MutexGuard<'_, ProxyState> {
    // A panic while holding the lock leaves the map consistent enough for a test helper.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shutdown_all(sockets: &[std::net::TcpStream]) {
    for socket in sockets {
        // Already-closed sockets report NotConnected; nothing else to do for them.
        let _ = socket.shutdown(Shutdown::Both);
    }
}

async fn accept_connections(
    listener: TcpListener,
    state: Arc<Mutex<ProxyState>>,
    stalled: watch::Sender<bool>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        lock(&state).accepted += 1;
        let Some((id, client)) = register(&state, None, client) else {
            continue;
        };
        tokio::spawn(forward(id, client, state.clone(), stalled.subscribe()));
    }
}

/// Records a duplicate of `socket` under connection `id` (a new id when `None`), unless
/// the proxy is cut, in which case the socket is dropped (closed) and `None` returned.
fn register(
    state: &Mutex<ProxyState>,
    id: Option<u64>,
    socket: TcpStream,
) -> Option<(u64, TcpStream)> {
    let socket = socket.into_std().ok()?;
    let duplicate = socket.try_clone().ok()?;
    let socket = TcpStream::from_std(socket).ok()?;
    let mut state = lock(state);
    // A cut (even one already restored) ended this connection: do not revive it.
    let ended = id.is_some_and(|id| !state.live.contains_key(&id));
    if state.cut || ended {
        return None;
    }
    let id = id.unwrap_or_else(|| {
        state.next_id += 1;
        state.next_id
    });
    state.live.entry(id).or_default().push(duplicate);
    Some((id, socket))
}

async fn forward(
    id: u64,
    client: TcpStream,
    state: Arc<Mutex<ProxyState>>,
    stalled: watch::Receiver<bool>,
) {
    let target = lock(&state).target;
    if let Ok(upstream) = TcpStream::connect(target).await
        && let Some((_, upstream)) = register(&state, Some(id), upstream)
    {
        let (client_read, client_write) = client.into_split();
        let (upstream_read, upstream_write) = upstream.into_split();
        // Ends when either direction closes or errors, including a `cut` shutdown.
        tokio::select! {
            _ = pump(client_read, upstream_write, stalled.clone()) => {}
            _ = pump(upstream_read, client_write, stalled) => {}
        }
    }
    if let Some(sockets) = lock(&state).live.remove(&id) {
        shutdown_all(&sockets);
    }
}

/// Copies one direction of a connection, holding bytes back while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return to.shutdown().await;
        }
        if stalled.wait_for(|stalled| !*stalled).await.is_err() {
            // The proxy was dropped: the connection ends with it.
            return Ok(());
        }
        to.write_all(&buffer[..read]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server standing in for Postgres or RabbitMQ.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut reader, mut writer) = socket.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        addr
    }

    async fn echo_once(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut buffer = vec![0; message.len()];
        stream.read_exact(&mut buffer).await?;
        Ok(buffer)
    }

    /// True when the connection is unusable: reading gives EOF or an error.
    async fn is_closed(stream: &mut TcpStream) -> bool {
        let mut buffer = [0u8; 1];
        // A write may still succeed into the local buffer; the read tells the truth.
        let _ = stream.write_all(b"x").await;
        matches!(stream.read(&mut buffer).await, Ok(0) | Err(_))
    }

    #[tokio::test]
    async fn forwards_bytes_both_ways() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo_once(&mut stream, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.live_connections(), 1);
    }

    #[tokio::test]
    async fn retarget_sends_new_connections_to_the_new_target_only() {
        /// A server that answers every connection with `name`.
        async fn named_server(name: &'static [u8]) -> SocketAddr {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    tokio::spawn(async move {
                        let _ = socket.write_all(name).await;
                        let mut sink = [0u8; 16];
                        let _ = socket.read(&mut sink).await;
                    });
                }
            });
            addr
        }
        async fn greeting(stream: &mut TcpStream) -> Vec<u8> {
            let mut buffer = [0u8; 3];
            stream.read_exact(&mut buffer).await.unwrap();
            buffer.to_vec()
        }
        let old = named_server(b"old").await;
        let new = named_server(b"new").await;
        let proxy = TcpProxy::start(old).await;
        let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(greeting(&mut before).await, b"old");

        proxy.retarget(new);
        assert_eq!(proxy.target(), new);
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(greeting(&mut after).await, b"new");
        assert_eq!(proxy.live_connections(), 2, "the live connection stays");
    }

    #[tokio::test]
    async fn cut_ends_live_connections_and_refuses_new_ones_until_restored() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo_once(&mut before, b"ping").await.unwrap(), b"ping");

        proxy.cut();
        assert!(proxy.is_cut());
        assert!(is_closed(&mut before).await, "live connection survived cut");
        assert_eq!(proxy.live_connections(), 0);

        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            is_closed(&mut during).await,
            "new connection got through a cut"
        );

        proxy.restore();
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo_once(&mut after, b"back").await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn target_side_sees_the_cut_too() {
        // The target is a server that reports when its side of the connection ends.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 16];
            let outcome = socket.read(&mut buffer).await;
            let _ = ended_tx.send(matches!(outcome, Ok(0) | Err(_)));
        });

        let proxy = TcpProxy::start(target).await;
        let _client = TcpStream::connect(proxy.addr()).await.unwrap();
        // Wait until the proxy has connected upstream before cutting.
        while proxy.live_connections() == 0
            || lock(&proxy.state)
                .live
                .values()
                .all(|sockets| sockets.len() < 2)
        {
            tokio::task::yield_now().await;
        }
        proxy.cut();
        assert!(ended_rx.await.unwrap(), "target side did not see EOF");
    }

    #[tokio::test]
    async fn stall_holds_bytes_on_an_open_connection_until_unstalled() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(echo_once(&mut stream, b"before").await.unwrap(), b"before");

        proxy.stall();
        stream.write_all(b"held").await.unwrap();
        let mut reply = [0u8; 4];
        let silent = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            stream.read_exact(&mut reply),
        )
        .await;
        assert!(silent.is_err(), "a stalled proxy forwarded bytes");
        assert_eq!(
            proxy.live_connections(),
            1,
            "stall must not close connections"
        );

        proxy.unstall();
        stream.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"held");
    }
}
