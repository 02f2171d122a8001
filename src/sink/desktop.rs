//! Showing notifications on the freedesktop notification service (`notify-rust`, zbus on
//! tokio: no blocking call inside the runtime).
//!
//! The [`Planner`] decides; this executes. Every D-Bus call has a deadline, because a
//! notification server that stops answering would otherwise hang the call forever. When
//! there is no session bus or no notification server, that is said once, the notifications
//! wait in a short queue, and they are shown when the server answers again. One
//! notification is redrawn at most every [`UPDATE_GAP`]: in a flood, the summary's count
//! moves in steps instead of flickering through every number.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use notify_rust::{Notification, Timeout};

use crate::latch::Latch;
use crate::model::desktop::{Action, Note, Planner, Urgency, escape_markup};
use crate::model::wire::WireEvent;

/// How long one D-Bus call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications kept while the server is unreachable.
const PENDING_MAX: usize = 64;
/// Between attempts while the server is unreachable.
pub const RETRY: Duration = Duration::from_secs(3);
/// The shortest time between two calls for the same notification.
pub const UPDATE_GAP: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Desktop {
    planner: Planner,
    /// Planner slot → the server's notification id, and when it was last sent.
    ids: HashMap<u64, (u32, Instant)>,
    pending: Vec<Action>,
    /// While the server fails: when to try again.
    retry_at: Option<Instant>,
    /// Whether the server renders markup in bodies (asked once it answers).
    markup: Option<bool>,
    failing: Latch,
}

impl Desktop {
    pub fn new(burst_window: Duration) -> Desktop {
        Desktop {
            planner: Planner::new(burst_window),
            ids: HashMap::new(),
            pending: Vec::new(),
            retry_at: None,
            markup: None,
            failing: Latch::new(
                "cannot show desktop notifications",
                "is a notification server running on this session bus (DBUS_SESSION_BUS_ADDRESS)? \
                 Retrying every 3 s",
                "desktop notifications work again",
            ),
        }
    }

    /// Plans what one event calls for, without showing it yet: a burst of events queued
    /// this way becomes one update of each notification at the next [`flush`](Self::flush).
    pub fn plan(&mut self, e: &WireEvent) {
        for action in self.planner.on_event(Instant::now(), e) {
            self.queue(action);
        }
    }

    /// Plans and shows what one event calls for.
    pub async fn on_event(&mut self, e: &WireEvent) {
        self.plan(e);
        self.flush().await;
    }

    /// When [`flush`](Self::flush) has something to do next: after [`RETRY`] while the
    /// server fails, or when the earliest held-back update may be sent.
    pub fn next_flush(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        let now = Instant::now();
        self.pending
            .iter()
            .map(|a| self.held_until(a).unwrap_or(now))
            .min()
    }

    /// An update waits until [`UPDATE_GAP`] after the last call for its notification;
    /// anything else may go at once (None).
    fn held_until(&self, action: &Action) -> Option<Instant> {
        match action {
            Action::Update { slot, .. } => self.ids.get(slot).map(|(_, sent)| *sent + UPDATE_GAP),
            Action::Show { .. } => None,
        }
    }

    fn queue(&mut self, action: Action) {
        let slot = match &action {
            Action::Show { slot, .. } | Action::Update { slot, .. } => *slot,
        };
        // A later state of the same notification replaces the queued one.
        if let Some(i) = self.pending.iter().position(|a| matches!(a, Action::Show { slot: s, .. } | Action::Update { slot: s, .. } if *s == slot)) {
            let keep_show = matches!(self.pending[i], Action::Show { .. });
            self.pending[i] = match action {
                Action::Update { slot, note } if keep_show => Action::Show { slot, note },
                other => other,
            };
            return;
        }
        if self.pending.len() >= PENDING_MAX {
            self.pending.remove(0);
        }
        self.pending.push(action);
    }

    /// Shows what is queued and due, in order; stops at the first failure and keeps the
    /// rest. Updates that come too soon after the last call for their notification stay
    /// queued (a later state replaces them) until [`next_flush`](Self::next_flush).
    pub async fn flush(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            if self
                .held_until(&self.pending[i])
                .is_some_and(|t| t > Instant::now())
            {
                i += 1;
                continue;
            }
            let action = self.pending[i].clone();
            match self.show(&action).await {
                Ok(()) => {
                    self.pending.remove(i);
                    self.retry_at = None;
                    if let Some(back) = self.failing.recover() {
                        tracing::info!("{back}");
                    }
                }
                Err(e) => {
                    // Said when it starts, not again while it goes on.
                    let new = !self.failing.is_failing();
                    if let Some(problem) = self.failing.fail(e)
                        && new
                    {
                        tracing::error!("{problem}");
                    }
                    self.retry_at = Some(Instant::now() + RETRY);
                    return;
                }
            }
        }
    }

    async fn show(&mut self, action: &Action) -> Result<(), String> {
        let (slot, note, replace) = match action {
            Action::Show { slot, note } => (*slot, note, None),
            Action::Update { slot, note } => (*slot, note, self.ids.get(slot).map(|(id, _)| *id)),
        };
        if self.markup.is_none() {
            self.markup = Some(server_has_markup().await?);
        }
        let n = notification(note, replace, self.markup == Some(true));
        let handle = within_deadline(n.show_async())
            .await?
            .map_err(|e| e.to_string())?;
        self.ids.insert(slot, (handle.id(), Instant::now()));
        Ok(())
    }
}

/// With `[notify] desktop = true`: shows the notifications of the events that come, until
/// the daemon goes away.
pub async fn serve(
    mut rx: tokio::sync::mpsc::Receiver<std::sync::Arc<WireEvent>>,
    burst_window: Duration,
) {
    let mut desktop = Desktop::new(burst_window);
    loop {
        let due = desktop.next_flush();
        tokio::select! {
            e = rx.recv() => match e {
                Some(e) => {
                    desktop.plan(&e);
                    while let Ok(more) = rx.try_recv() {
                        desktop.plan(&more);
                    }
                    desktop.flush().await;
                }
                None => return,
            },
            _ = until(due), if due.is_some() => desktop.flush().await,
        }
    }
}

/// Sleeps until `due` (from [`Desktop::next_flush`]); for a `select!` branch guarded by
/// `due.is_some()`.
pub fn until(due: Option<Instant>) -> tokio::time::Sleep {
    let at = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
    tokio::time::sleep_until(at.into())
}

fn notification(note: &Note, replace: Option<u32>, markup: bool) -> Notification {
    let mut n = Notification::new();
    n.appname("portsentinel");
    // The summary is plain text by the specification: never escaped.
    n.summary(&note.summary);
    n.body(&if markup {
        escape_markup(&note.body)
    } else {
        note.body.clone()
    });
    n.urgency(match note.urgency {
        Urgency::Low => notify_rust::Urgency::Low,
        Urgency::Normal => notify_rust::Urgency::Normal,
        Urgency::Critical => notify_rust::Urgency::Critical,
    });
    // A critical alert stays until the person dismisses it.
    if note.urgency == Urgency::Critical {
        n.timeout(Timeout::Never);
    }
    if let Some(id) = replace {
        n.id(id);
    }
    n
}

/// A D-Bus call, or the error a person reads when the server does not answer.
async fn within_deadline<T>(call: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| {
        format!(
            "the notification server did not answer within {} s",
            CALL_TIMEOUT.as_secs()
        )
    })
}

/// Asks the server whether it renders `body-markup`. The crate offers only a blocking
/// call for this, so it runs on the blocking pool, with a deadline.
async fn server_has_markup() -> Result<bool, String> {
    let caps = within_deadline(tokio::task::spawn_blocking(notify_rust::get_capabilities))
        .await?
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(caps.iter().any(|c| c == "body-markup"))
}
