//! Required listeners: an `[[expect]]` entry with `required = true` must be held by its
//! program. When nothing matching listens there for longer than the restart grace, that
//! is a `listener-missing` record (once); when a match returns, `listener-restored`.
//!
//! Pure: which expectations are satisfied comes in as indices (the tracker knows which
//! present listener satisfies which entry), time as [`Now`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::events::Now;
use super::rules::ExpectRule;

/// What happened to a required listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectKind {
    Missing,
    Restored,
}

impl ExpectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectKind::Missing => "listener-missing",
            ExpectKind::Restored => "listener-restored",
        }
    }

    /// The journal `MESSAGE_ID` (also in `systemd/portsentinel.catalog`).
    pub fn message_id(self) -> &'static str {
        match self {
            ExpectKind::Missing => "2975a25f7edb45c8b58378cf7bfa50ca",
            ExpectKind::Restored => "bc9d4f2596d945ea906fb3e8dc6d7612",
        }
    }
}

/// A required listener gone missing or come back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectEvent {
    pub kind: ExpectKind,
    pub rule: ExpectRule,
    pub time: SystemTime,
    /// How long it was missing (on `Restored`), or has been (on `Missing`).
    pub missing_for: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Present,
    /// Nothing matching since `since`; `said` once the record is out.
    Missing {
        since: Now,
        said: bool,
    },
}

/// The state of each required `[[expect]]` entry, keyed by its name and place so that a
/// reload that keeps an entry keeps its state.
#[derive(Debug, Default)]
pub struct Watch {
    states: HashMap<String, State>,
    started: bool,
}

impl Watch {
    /// True while some missing listener has not been said yet: the next poll must look
    /// again even if nothing changed.
    pub fn pending(&self) -> bool {
        self.states
            .values()
            .any(|s| matches!(s, State::Missing { said: false, .. }))
    }

    /// Folds in which entries are satisfied now; returns what changed. The first call is
    /// the daemon's start: a listener missing then is said at once.
    pub fn update(
        &mut self,
        now: Now,
        expects: &[ExpectRule],
        satisfied: &HashSet<usize>,
        grace: Duration,
    ) -> Vec<ExpectEvent> {
        let first = !self.started;
        self.started = true;
        let mut out = Vec::new();
        let mut keep = HashMap::with_capacity(self.states.len());
        for (i, rule) in expects.iter().enumerate().filter(|(_, r)| r.required) {
            let key = rule.key();
            let before = self.states.get(&key).copied();
            let state = if satisfied.contains(&i) {
                if let Some(State::Missing { since, said: true }) = before {
                    out.push(event(ExpectKind::Restored, rule, now, since));
                }
                State::Present
            } else {
                let (since, said) = match before {
                    Some(State::Missing { since, said }) => (since, said),
                    _ => (now, false),
                };
                let due = first || now.at.saturating_duration_since(since.at) >= grace;
                if !said && due {
                    out.push(event(ExpectKind::Missing, rule, now, since));
                }
                State::Missing {
                    since,
                    said: said || due,
                }
            };
            keep.insert(key, state);
        }
        self.states = keep;
        out
    }

    /// Required entries missing now (said or not), for `scan --check` and the status.
    pub fn missing(&self) -> usize {
        self.states
            .values()
            .filter(|s| matches!(s, State::Missing { .. }))
            .count()
    }
}

fn event(kind: ExpectKind, rule: &ExpectRule, now: Now, since: Now) -> ExpectEvent {
    ExpectEvent {
        kind,
        rule: rule.clone(),
        time: now.wall,
        missing_for: now.at.saturating_duration_since(since.at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn rule() -> ExpectRule {
        ExpectRule {
            name: "ssh".into(),
            origin: "c.toml:1".into(),
            required: true,
            ..ExpectRule::default()
        }
    }

    #[test]
    fn missing_after_grace_once_then_restored() {
        let t0 = Instant::now();
        let at = |s: u64| Now {
            at: t0 + Duration::from_secs(s),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        };
        let (rules, grace) = (vec![rule()], Duration::from_secs(3));
        let yes: HashSet<usize> = [0].into();
        let no = HashSet::new();
        let mut w = Watch::default();
        assert!(w.update(at(0), &rules, &yes, grace).is_empty());
        assert!(
            w.update(at(1), &rules, &no, grace).is_empty(),
            "within grace"
        );
        assert!(w.pending());
        let ev = w.update(at(4), &rules, &no, grace);
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].kind, ev[0].missing_for),
            (ExpectKind::Missing, Duration::from_secs(3))
        );
        assert!(w.update(at(9), &rules, &no, grace).is_empty(), "said once");
        let ev = w.update(at(10), &rules, &yes, grace);
        assert_eq!(ev[0].kind, ExpectKind::Restored);
        assert_eq!(ev[0].missing_for, Duration::from_secs(9));
        // Back within grace: nothing said either way.
        assert!(w.update(at(11), &rules, &no, grace).is_empty());
        assert!(w.update(at(12), &rules, &yes, grace).is_empty());
    }

    #[test]
    fn an_entry_moved_by_an_edit_keeps_its_state() {
        let t0 = Instant::now();
        let at = |s: u64| Now {
            at: t0 + Duration::from_secs(s),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        };
        let grace = Duration::from_secs(3);
        let mut w = Watch::default();
        let ev = w.update(at(0), &[rule()], &HashSet::new(), grace);
        assert_eq!(ev.len(), 1, "missing at start");
        // A line added above it: the reload reads it at line 2. Still missing, not said
        // again; restored when it returns.
        let moved = ExpectRule {
            origin: "c.toml:2".into(),
            ..rule()
        };
        assert!(
            w.update(at(5), std::slice::from_ref(&moved), &HashSet::new(), grace)
                .is_empty()
        );
        let ev = w.update(at(6), &[moved], &[0].into(), grace);
        assert_eq!(ev[0].kind, ExpectKind::Restored);
    }

    #[test]
    fn missing_at_start_is_said_at_once() {
        let now = Now {
            at: Instant::now(),
            wall: SystemTime::UNIX_EPOCH,
        };
        let mut w = Watch::default();
        let ev = w.update(now, &[rule()], &HashSet::new(), Duration::from_secs(3));
        assert_eq!(ev.len(), 1);
        assert_eq!(w.missing(), 1);
    }
}
