//! What a node pushes over its WebSocket: each new head and each pending
//! transaction the moment the node has them, so a theft is judged within
//! milliseconds instead of a poll interval later. The watcher keeps
//! polling over HTTP as the fallback: when no endpoint has a WebSocket,
//! or while the socket is down, nothing is missed, only later.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use alloy::{
    primitives::B256,
    providers::{Provider, RootProvider},
    pubsub::Subscription,
    rpc::types::{Header, Transaction},
};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;

/// One thing a node pushed.
#[derive(Debug)]
pub(crate) enum Push {
    /// A new head at this height.
    Head(u64),
    /// A pending transaction, whole.
    Tx(Box<Transaction>),
    /// A pending transaction's hash (nodes that push only hashes).
    Hash(B256),
}

impl Push {
    fn kind(&self) -> &'static str {
        match self {
            Push::Head(_) => "head",
            Push::Tx(_) => "pending transaction",
            Push::Hash(_) => "pending hash",
        }
    }
}

/// Whether the socket's pending-transaction subscription is up: the HTTP
/// mempool filter is then redundant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Live(Arc<AtomicBool>);

impl Live {
    pub(crate) fn mempool(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }
}

/// The pending-transaction stream a node offers.
enum Pending {
    Full(Subscription<Transaction>),
    Hashes(Subscription<B256>),
    Off,
}

/// Follows the WebSocket URLs `(name, url)` in turn, forwarding what they
/// push into `to` (bounded: waits when the watcher is busy, drops
/// nothing), until cancelled or the watcher is gone.
pub(crate) async fn follow(
    chain: String,
    sockets: Vec<(String, String)>,
    mempool: bool,
    to: mpsc::Sender<Push>,
    live: Live,
    token: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    for (name, url) in sockets.iter().cycle() {
        if token.is_cancelled() {
            return;
        }
        match session(&chain, name, url, mempool, &to, &live, &token).await {
            Ok(Ended::Cancelled) => return,
            Ok(Ended::Dropped) => {
                tracing::warn!(message = "WebSocket subscription ended; polling over HTTP until it is back", chain = %chain, endpoint = %name);
                backoff = Duration::from_millis(250);
            }
            Err(e) => {
                let error = crate::rpc::without_url(&e, url);
                tracing::warn!(message = "WebSocket unavailable; polling over HTTP", chain = %chain, endpoint = %name, error = %error);
            }
        }
        live.set(false);
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

enum Ended {
    Cancelled,
    Dropped,
}

async fn session(
    chain: &str,
    name: &str,
    url: &str,
    mempool: bool,
    to: &mpsc::Sender<Push>,
    live: &Live,
    token: &CancellationToken,
) -> Result<Ended, String> {
    let connect = tokio::time::timeout(Duration::from_secs(10), RootProvider::connect(url));
    let provider: RootProvider = connect
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| e.to_string())?;
    // A deep buffer: the socket's reader must not outrun a busy watcher.
    if let Some(frontend) = provider.client().pubsub_frontend() {
        frontend.set_channel_size(4096);
    }
    let mut heads: Subscription<Header> = provider
        .subscribe_blocks()
        .await
        .map_err(|e| format!("newHeads: {e}"))?;
    let mut pending = if mempool {
        match provider.subscribe_full_pending_transactions().await {
            Ok(s) => Pending::Full(s),
            Err(e) => {
                tracing::debug!(message = "no full pending transactions; hashes instead", chain, endpoint = name, error = %e);
                provider
                    .subscribe_pending_transactions()
                    .await
                    .map(Pending::Hashes)
                    .map_err(|e| format!("newPendingTransactions: {e}"))?
            }
        }
    } else {
        Pending::Off
    };
    live.set(!matches!(pending, Pending::Off));
    tracing::info!(
        message = "WebSocket subscriptions up",
        chain,
        endpoint = name,
        mempool = !matches!(pending, Pending::Off)
    );
    loop {
        let push = tokio::select! {
            () = token.cancelled() => return Ok(Ended::Cancelled),
            h = heads.recv() => match h {
                Ok(h) => Push::Head(h.number),
                // A missed head is no loss: blocks are read by number.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return Ok(Ended::Dropped),
            },
            p = next_pending(&mut pending) => match p {
                Ok(p) => p,
                Err(RecvError::Lagged(n)) => {
                    // Those transactions are still seen when mined.
                    tracing::warn!(message = "pending transactions came faster than read; some are seen only when mined", chain, endpoint = name, missed = n);
                    continue;
                }
                Err(RecvError::Closed) => return Ok(Ended::Dropped),
            },
        };
        tracing::debug!(message = "pushed", chain, what = push.kind());
        if to.send(push).await.is_err() {
            return Ok(Ended::Cancelled);
        }
    }
}

async fn next_pending(pending: &mut Pending) -> Result<Push, RecvError> {
    match pending {
        Pending::Full(s) => s.recv().await.map(|t| Push::Tx(Box::new(t))),
        Pending::Hashes(s) => s.recv().await.map(Push::Hash),
        Pending::Off => std::future::pending().await,
    }
}
