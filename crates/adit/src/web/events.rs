//! `GET /events`: the page's Server-Sent Events stream (a snapshot, then
//! deltas, alerts and beats; a fresh snapshot after a lag or when points
//! were added). `GET /api/trends`: the sparkline history.

use std::sync::{Arc, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use super::feed::{ClientSlot, Feed, Frame, TREND_STEP};

struct Client {
    feed: Arc<Feed>,
    rx: tokio::sync::broadcast::Receiver<Frame>,
    first: Option<Bytes>,
    _slot: ClientSlot,
}

async fn next_frame(mut c: Client) -> Option<(Result<Bytes, std::convert::Infallible>, Client)> {
    if let Some(first) = c.first.take() {
        return Some((Ok(first), c));
    }
    let received = tokio::select! {
        r = c.rx.recv() => r,
        () = c.feed.stop.cancelled() => return None,
    };
    let bytes = match received {
        Ok(Frame::Text(bytes)) => bytes,
        Ok(Frame::Resync) => c.feed.snapshot(),
        Err(RecvError::Lagged(_)) => {
            c.feed.metrics.lagged.inc();
            // What it missed is superseded by the present.
            c.rx = c.rx.resubscribe();
            c.feed.snapshot()
        }
        Err(RecvError::Closed) => return None,
    };
    Some((Ok(bytes), c))
}

pub async fn events(State(feed): State<Arc<Feed>>) -> Response {
    // Subscribed before joining (joining wakes the feed, which must then
    // see a watcher) and before the snapshot (no change falls between).
    let rx = feed.tx.subscribe();
    let Some(slot) = feed.join() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "too many page clients (http.max_clients)\n",
        )
            .into_response();
    };
    let first = Some(feed.snapshot());
    let client = Client {
        feed,
        rx,
        first,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(client, next_frame);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

pub async fn trends(State(feed): State<Arc<Feed>>) -> Response {
    let body = feed
        .trends
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .to_json(u64::try_from(TREND_STEP.as_millis()).unwrap_or(2000));
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use adit_core::PointRegistry;
    use adit_pipeline::LiveState;
    use adit_watchdog::deliver::AlertState;
    use tokio_util::sync::CancellationToken;

    use super::super::feed::{Feed, FeedSettings, PageMetrics, CLIENT_QUEUE};
    use super::{next_frame, Client};

    fn feed() -> Arc<Feed> {
        let registry = Arc::new(PointRegistry::new());
        let live = Arc::new(Mutex::new(LiveState::new(&registry)));
        let (_tx, alerts) = tokio::sync::watch::channel(Arc::new(AlertState::default()));
        let metrics = PageMetrics::register(&prometheus::Registry::new()).unwrap();
        Feed::new(
            FeedSettings {
                site: "t".into(),
                interval: Duration::from_millis(250),
                max_clients: 2,
            },
            live,
            registry,
            alerts,
            metrics,
            CancellationToken::new(),
        )
    }

    fn client(feed: &Arc<Feed>) -> Client {
        Client {
            feed: feed.clone(),
            rx: feed.tx.subscribe(),
            first: None,
            _slot: feed.join().unwrap(),
        }
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_gets_a_snapshot_and_is_counted_and_nobody_waits() {
        let feed = feed();
        let slow = client(&feed);
        let mut fast = client(&feed);
        // Three times what a client may queue: `send` never blocks the feed.
        for i in 0..CLIENT_QUEUE * 3 {
            feed.send_for_test("delta", &format!("{{\"seq\":{i}}}"));
            // The fast client keeps up.
            let (bytes, c) = next_frame(fast).await.unwrap();
            fast = c;
            assert!(String::from_utf8_lossy(&bytes.unwrap()).starts_with("event: delta"));
        }
        assert_eq!(feed.metrics.lagged.get(), 0);
        let (bytes, slow) = next_frame(slow).await.unwrap();
        let text = String::from_utf8_lossy(&bytes.unwrap()).to_string();
        assert!(text.starts_with("event: snapshot"), "{text}");
        assert_eq!(feed.metrics.lagged.get(), 1);
        // After the snapshot it follows the live frames again.
        feed.send_for_test("delta", "{\"seq\":999}");
        let (bytes, _slow) = next_frame(slow).await.unwrap();
        assert!(String::from_utf8_lossy(&bytes.unwrap()).contains("999"));
        // A third client is refused at max_clients = 2, and counted.
        assert!(feed.join().is_none());
        assert_eq!(feed.metrics.refused.get(), 1);
    }

    #[tokio::test]
    async fn clients_arriving_together_share_one_snapshot_until_a_frame_is_sent() {
        let feed = feed();
        let rendered = |f: &Feed| f.metrics.frames.with_label_values(&["snapshot"]).get();
        let a = feed.snapshot();
        let b = feed.snapshot();
        assert_eq!(a, b);
        assert_eq!(
            rendered(&feed),
            1,
            "the second client shares the first rendering"
        );
        // A frame was sent: a client subscribing now must not miss what it
        // carried, so its snapshot is rendered afresh.
        feed.send_for_test("delta", "{}");
        let _c = feed.snapshot();
        assert_eq!(rendered(&feed), 2);
    }
}
