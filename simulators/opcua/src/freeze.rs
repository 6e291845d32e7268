//! A TCP relay in front of the server that can freeze: while frozen it
//! forwards nothing in either direction but keeps every connection open,
//! so a client sees a server that keeps the session and stops publishing
//! (the failure adit's per-subscription liveness check exists for).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running relay.
pub struct FreezeRelay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl FreezeRelay {
    /// Relays connections accepted on `listener` to `upstream`.
    pub fn start(listener: TcpListener, upstream: SocketAddr) -> Result<Self, String> {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, f).await;
                    }
                });
            }
        });
        Ok(Self { addr, frozen, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops (true) or resumes (false) forwarding.
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::Relaxed);
    }
}

impl Drop for FreezeRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, frozen: Arc<AtomicBool>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(pump(cr, sw, frozen.clone()));
    pump(sr, cw, frozen).await;
    up.abort();
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just before a freeze are held back until it ends.
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
