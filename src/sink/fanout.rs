//! The fan-out: every event as one JSON line to every event-socket subscriber, and to the
//! desktop notifier, on a task of its own beside the poll loop.
//!
//! The loop hands each poll's events over and goes on; waiting for a slow subscriber
//! costs this task's time, never a poll's. Each event is serialized once and the same line
//! is shared by every subscriber's queue. A subscriber whose queue is full gets a moment
//! (250 ms) to make room, and a burst waits for subscribers at most its budget in all:
//! one that reads catches up, one that stopped reading is dropped with a log line. A new
//! subscriber first gets a `hello` line and the alerts active when it joined (each
//! serialized once, however many subscribers replay it), then every event after them: the
//! join comes down the same channel as the events, so nothing falls between the two.
//! Subscribers cannot send commands: whatever they write is read and discarded.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::socket::{Join, Slot};
use crate::model::Event;
use crate::model::wire::{Hello, Message, VERSION, WireEvent, event_line};

/// How long one congested subscriber may take to make room for a line.
const PATIENCE: Duration = Duration::from_millis(250);
/// A subscriber that takes no bytes for this long while some wait for it is dropped,
/// whether or not new events come.
pub const STALL: Duration = Duration::from_secs(10);
/// Events handed out between two yields to the poll loop.
const SLICE: usize = 64;

/// What the loop hands the fan-out task.
#[derive(Debug)]
pub enum Delivery {
    /// A poll's events, and how long they may wait for subscribers in all.
    Events {
        events: Vec<Arc<Event>>,
        budget: Duration,
    },
    /// A new subscriber, and the events that raised the alerts active when it joined.
    Join { join: Join, replay: Vec<Arc<Event>> },
}

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<Arc<str>>,
    peer: String,
}

/// The subscribers and the desktop notifier.
#[derive(Debug)]
pub struct Fanout {
    /// Lines queued per subscriber before one that does not read is dropped.
    capacity: usize,
    subscribers: Vec<Subscriber>,
    desktop: Option<mpsc::Sender<Arc<WireEvent>>>,
    desktop_dropped: u64,
}

/// An alert's replay line, serialized once and kept with the event.
fn replay_line(e: &Event) -> Arc<str> {
    let line = e.replay_line.get_or_init(|| {
        let mut w = WireEvent::new(e);
        w.replay = true;
        event_line(&w).into()
    });
    Arc::clone(line)
}

impl Fanout {
    pub fn new(capacity: usize, desktop: Option<mpsc::Sender<Arc<WireEvent>>>) -> Fanout {
        Fanout {
            capacity: capacity.max(1),
            subscribers: Vec::new(),
            desktop,
            desktop_dropped: 0,
        }
    }

    /// Delivers until the loop goes away.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Delivery>) {
        while let Some(d) = rx.recv().await {
            match d {
                Delivery::Events { events, budget } => self.publish(&events, budget).await,
                Delivery::Join { join, replay } => self.join(join, replay),
            }
        }
    }

    fn join(&mut self, join: Join, replay: Vec<Arc<Event>>) {
        let (tx, rx) = mpsc::channel(self.capacity);
        let peer = join.peer.to_string();
        let subscriber = Feed {
            replay,
            rx,
            peer: peer.clone(),
            _slot: join.slot,
        };
        tokio::spawn(subscriber.run(join.stream));
        self.subscribers.push(Subscriber { tx, peer });
    }

    /// Sends each event to every subscriber and to the desktop, a slice at a time.
    async fn publish(&mut self, events: &[Arc<Event>], budget: Duration) {
        self.subscribers.retain(|s| !s.tx.is_closed());
        if self.subscribers.is_empty() && self.desktop.is_none() {
            return;
        }
        let deadline = Instant::now() + budget;
        for (i, e) in events.iter().enumerate() {
            let wire = Arc::new(WireEvent::new(e));
            self.send_desktop(&wire);
            if !self.subscribers.is_empty() {
                let line: Arc<str> = event_line(&wire).into();
                self.send_subscribers(&line, deadline).await;
            }
            if (i + 1) % SLICE == 0 {
                tokio::task::yield_now().await;
            }
        }
    }

    fn send_desktop(&mut self, wire: &Arc<WireEvent>) {
        let Some(tx) = &self.desktop else { return };
        if tx.try_send(Arc::clone(wire)).is_err() {
            // The journal has every event; the desktop may miss some in a flood.
            self.desktop_dropped += 1;
            if self.desktop_dropped.is_power_of_two() {
                tracing::warn!(
                    "desktop notifications fell behind: {} event(s) not shown",
                    self.desktop_dropped
                );
            }
        }
    }

    /// One line to every subscriber; one whose queue stays full is dropped.
    async fn send_subscribers(&mut self, line: &Arc<str>, deadline: Instant) {
        let mut congested = Vec::new();
        self.subscribers
            .retain(|s| match s.tx.try_send(Arc::clone(line)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    congested.push(s.tx.clone());
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        for tx in congested {
            let until = deadline.min(Instant::now() + PATIENCE);
            if let Ok(Ok(())) = tokio::time::timeout_at(until, tx.send(Arc::clone(line))).await {
                continue;
            }
            if let Some(i) = self.subscribers.iter().position(|s| s.tx.same_channel(&tx)) {
                let s = self.subscribers.swap_remove(i);
                tracing::warn!(
                    "event subscriber {} dropped: it stopped reading and its buffer of {} lines filled",
                    s.peer,
                    self.capacity
                );
            }
        }
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }
}

/// One subscriber's side of the fan-out: the alerts to replay, its queue, its place
/// (given back when it goes).
struct Feed {
    replay: Vec<Arc<Event>>,
    rx: mpsc::Receiver<Arc<str>>,
    peer: String,
    _slot: Slot,
}

impl Feed {
    /// Writes `hello`, the replay (each alert's line serialized once, whoever asks first),
    /// then the queue; discards what the subscriber sends; ends when it goes away, when
    /// the fan-out drops it, or when it takes nothing for [`STALL`].
    async fn run(mut self, stream: UnixStream) {
        let (mut reader, mut writer) = stream.into_split();
        let hello = Message::Hello(Hello {
            version: VERSION,
            daemon: format!("portsentinel {}", env!("CARGO_PKG_VERSION")),
            active_alerts: self.replay.len(),
        });
        let replay = std::mem::take(&mut self.replay);
        let first = std::iter::once(Arc::from(hello.to_line()))
            .chain(replay.iter().map(|e| replay_line(e)));
        for line in first {
            if !self.write(&mut writer, &line).await {
                return;
            }
        }
        drop(replay);
        let mut sink = [0u8; 512];
        loop {
            let line = tokio::select! {
                line = self.rx.recv() => match line {
                    Some(line) => line,
                    None => return, // dropped by the fan-out
                },
                read = reader.read(&mut sink) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue, // no commands: discard
                },
            };
            if !self.write(&mut writer, &line).await {
                return;
            }
        }
    }

    /// One line; false when the subscriber is gone or took nothing for [`STALL`].
    async fn write(&self, writer: &mut tokio::net::unix::OwnedWriteHalf, line: &str) -> bool {
        match tokio::time::timeout(STALL, writer.write_all(line.as_bytes())).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(
                    "event subscriber {} dropped: it took nothing for {} s",
                    self.peer,
                    STALL.as_secs()
                );
                false
            }
        }
    }
}
