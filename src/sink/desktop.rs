//! Showing notifications on the freedesktop notification service (`notify-rust`, zbus on
//! tokio: no blocking call inside the runtime).
//!
//! The [`Planner`] decides; this executes. Every D-Bus call has a deadline, because a
//! notification server that stops answering would otherwise hang the call forever. When
//! there is no session bus or no notification server, that is said once, the notifications
//! wait in a short queue, and they are shown when the server answers again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use notify_rust::{Notification, Timeout};

use crate::model::desktop::{Action, Note, Planner, Urgency, escape_markup};
use crate::model::wire::WireEvent;

/// How long one D-Bus call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications kept while the server is unreachable.
const PENDING_MAX: usize = 64;
/// Between attempts while the server is unreachable.
pub const RETRY: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Desktop {
    planner: Planner,
    /// Planner slot → the server's notification id.
    ids: HashMap<u64, u32>,
    pending: Vec<Action>,
    /// Whether the server renders markup in bodies (asked once it answers).
    markup: Option<bool>,
    failing: Option<String>,
}

impl Desktop {
    pub fn new(burst_window: Duration) -> Desktop {
        Desktop {
            planner: Planner::new(burst_window),
            ids: HashMap::new(),
            pending: Vec::new(),
            markup: None,
            failing: None,
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

    /// True while notifications wait for the server.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
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

    /// Shows what is queued, in order; stops at the first failure and keeps the rest.
    pub async fn flush(&mut self) {
        while let Some(action) = self.pending.first().cloned() {
            match self.show(&action).await {
                Ok(()) => {
                    self.pending.remove(0);
                    if let Some(was) = self.failing.take() {
                        tracing::info!(
                            "desktop notifications work again (they failed with: {was})"
                        );
                    }
                }
                Err(e) => {
                    if self.failing.is_none() {
                        tracing::error!(
                            "cannot show desktop notifications: {e}; is a notification server running \
                             on this session bus (DBUS_SESSION_BUS_ADDRESS)? Retrying every {} s",
                            RETRY.as_secs()
                        );
                    }
                    self.failing = Some(e);
                    return;
                }
            }
        }
    }

    async fn show(&mut self, action: &Action) -> Result<(), String> {
        let (slot, note, replace) = match action {
            Action::Show { slot, note } => (*slot, note, None),
            Action::Update { slot, note } => (*slot, note, self.ids.get(slot).copied()),
        };
        if self.markup.is_none() {
            self.markup = Some(server_has_markup().await?);
        }
        let n = notification(note, replace, self.markup == Some(true));
        let handle = within_deadline(n.show_async())
            .await?
            .map_err(|e| e.to_string())?;
        self.ids.insert(slot, handle.id());
        Ok(())
    }
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
