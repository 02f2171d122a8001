//! Alerts as a fleet's engines see them: one [`FleetAlert`] per active alert, with the
//! labels Prometheus and Alertmanager group and route by. Built from what the model worked
//! out (the raising event, the missing `[[expect]]` entry) and the record's own message;
//! nothing is judged again here.
//!
//! Labels never hold a pid, an inode or a socket's ephemeral port of a connection: only
//! what names the alert's identity (protocol, address, port, program, namespace), so a
//! restart of the same program is the same series and the same Alertmanager alert.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use serde::Serialize;

use super::record::Record;
use crate::model::expect::{ExpectEvent, ExpectKind};
use crate::model::rules::ExpectRule;
use crate::model::{Condition, Event, EventKind, Owner, PortMatch};

/// What identifies an alert to Prometheus and Alertmanager (besides its name, severity
/// and the host).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, EncodeLabelSet)]
pub struct AlertLabels {
    pub protocol: String,
    /// Empty for a socket without a port (packet, raw).
    pub port: String,
    /// The bound address, or a packet socket's interface.
    pub address: String,
    /// The executable's path when it could be read, else the process name, else why the
    /// owner is unknown (`no-permission`, `kernel`, ...).
    pub program: String,
    /// `host`, the namespace's name, or `netns:INODE`.
    pub netns: String,
    /// `docker:web-1` when the program runs in a container, else empty.
    pub container: String,
}

/// One alert, active now or ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetAlert {
    /// Stable across polls and restarts: the listener's alert id, or the `[[expect]]`
    /// entry's name and file.
    pub key: String,
    /// `UnexpectedListener`, `UnexpectedOwner`, `ListenerMissing`.
    pub alertname: &'static str,
    pub severity: String,
    pub labels: AlertLabels,
    /// The record's MESSAGE.
    pub summary: String,
    /// Why: the verdict's reason, or the expectation's.
    pub description: String,
    pub starts_at: SystemTime,
    /// Set once the alert is over.
    pub ends_at: Option<SystemTime>,
}

/// The key of a required listener's alert: its `[[expect]]` entry's name and file.
fn expect_key(rule: &ExpectRule) -> String {
    format!("expect:{}", rule.key())
}

/// The program label of an owner, escaped as every output shows a name: a path or a
/// name is the process's choice, zero-width and bidi characters included.
fn program(owner: &Owner) -> String {
    match owner {
        Owner::Process(p) => visible(p.exe.as_deref().unwrap_or(&p.name)),
        Owner::Unknown(why) => why.as_str().to_owned(),
    }
}

fn visible(s: &str) -> String {
    crate::text::escape_control(s).into_owned()
}

impl FleetAlert {
    /// The alert an `alert-raised` event raised.
    pub fn raised(e: &Event) -> FleetAlert {
        let l = &e.listener;
        let class = &e.class;
        let (port, address) = match l.portless.as_deref() {
            None => (l.port.to_string(), l.address_words()),
            Some(p) if l.protocol == crate::model::Protocol::Packet => {
                (String::new(), p.interface_words())
            }
            Some(_) => (String::new(), l.address.to_string()),
        };
        let alertname = match class.verdict.condition {
            Some(Condition::UnexpectedOwner) => "UnexpectedOwner",
            _ => "UnexpectedListener",
        };
        FleetAlert {
            key: class.alert_id.clone(),
            alertname,
            severity: class.verdict.severity.to_string(),
            labels: AlertLabels {
                protocol: l.protocol.to_string(),
                port,
                address,
                program: program(&l.owner),
                netns: visible(&class.netns.label()),
                container: class
                    .container
                    .as_ref()
                    .map(|c| visible(&format!("{}:{}", c.runtime, c.label())))
                    .unwrap_or_default(),
            },
            summary: Record::from_event(e).message,
            description: class.verdict.reason.clone(),
            starts_at: e.time,
            ends_at: None,
        }
    }

    /// The alert of a required listener that is missing since `since`.
    pub fn missing(rule: &ExpectRule, since: SystemTime, summary: String) -> FleetAlert {
        let port = match rule.place.ports[..] {
            [PortMatch::Range(a, b)] if a == b => a.to_string(),
            _ => rule.where_(),
        };
        FleetAlert {
            key: expect_key(rule),
            alertname: "ListenerMissing",
            severity: "medium".to_owned(),
            labels: AlertLabels {
                protocol: rule
                    .place
                    .protocol
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                port,
                address: String::new(),
                program: rule.holder.describe(),
                netns: "host".to_owned(),
                container: String::new(),
            },
            summary,
            description: format!(
                "{} is required and nothing it allows listens",
                rule.describe()
            ),
            starts_at: since,
            ends_at: None,
        }
    }
}

/// The alerts active now, kept beside the loop's own state so that the fleet sinks get
/// the whole set whenever it changes: the tracker's active alerts and the missing required
/// listeners.
#[derive(Debug, Default)]
pub struct AlertBook {
    /// Each active alert as built from the event that raised it, kept while that event
    /// stays the raising one: a change in the set builds only what is new.
    built: HashMap<String, (Arc<Event>, Arc<FleetAlert>)>,
    /// Missing `[[expect]]` entries, by key, once said.
    missing: HashMap<String, Arc<FleetAlert>>,
    /// Alerts raised and cleared within one poll (the kernel's events saw a listener that
    /// was gone before the poll): ended before any set held them.
    short: Vec<FleetAlert>,
}

/// The most short-lived alerts kept between two hand-overs.
const SHORT_MAX: usize = 1024;

impl AlertBook {
    /// Notes a poll's events; true when the set of active alerts may have changed.
    pub fn events(&mut self, events: &[Arc<Event>]) -> bool {
        let mut changed = false;
        let mut raised: HashMap<&str, &Event> = HashMap::new();
        for e in events {
            match e.kind {
                EventKind::AlertRaised => {
                    raised.insert(&e.class.alert_id, e);
                    changed = true;
                }
                EventKind::AlertCleared => {
                    changed = true;
                    let Some(r) = raised.remove(e.class.alert_id.as_str()) else {
                        continue;
                    };
                    if self.short.len() < SHORT_MAX {
                        let mut a = FleetAlert::raised(r);
                        a.ends_at = Some(e.time);
                        self.short.push(a);
                    }
                }
                EventKind::ListenerOwnerChanged => changed = true,
                _ => {}
            }
        }
        changed
    }

    /// Notes what the required listeners did; true when it changed the set.
    pub fn expectations(&mut self, events: &[ExpectEvent]) -> bool {
        for e in events {
            let key = expect_key(&e.rule);
            match e.kind {
                ExpectKind::Missing => {
                    let since = e.time.checked_sub(e.missing_for).unwrap_or(e.time);
                    let summary = Record::from_expectation(e).message;
                    let alert = FleetAlert::missing(&e.rule, since, summary);
                    self.missing.insert(key, Arc::new(alert));
                }
                ExpectKind::Restored => {
                    self.missing.remove(&key);
                }
            }
        }
        !events.is_empty()
    }

    /// Forgets the missing entries a reload removed from the config.
    pub fn keep_expectations(&mut self, rules: &[ExpectRule]) {
        self.missing
            .retain(|k, _| rules.iter().any(|r| r.required && *k == expect_key(r)));
    }

    /// The set active now, given the alerts' raising events; sorted by key.
    pub fn active<'e>(
        &mut self,
        raised: impl Iterator<Item = &'e Arc<Event>>,
    ) -> Vec<Arc<FleetAlert>> {
        let mut before = std::mem::take(&mut self.built);
        for e in raised {
            let id = &e.class.alert_id;
            let alert = match before.remove(id) {
                Some((from, alert)) if Arc::ptr_eq(&from, e) => alert,
                _ => Arc::new(FleetAlert::raised(e)),
            };
            self.built.insert(id.clone(), (Arc::clone(e), alert));
        }
        let mut all: Vec<Arc<FleetAlert>> = self
            .built
            .values()
            .map(|(_, a)| Arc::clone(a))
            .chain(self.missing.values().cloned())
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// The short-lived alerts noted since the last call.
    pub fn take_short(&mut self) -> Vec<FleetAlert> {
        std::mem::take(&mut self.short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::record::tests::event;

    #[test]
    fn an_alert_is_labelled_by_its_identity_not_its_pid() {
        let e = event("listen");
        assert_eq!(e.kind, EventKind::AlertRaised);
        let a = FleetAlert::raised(&e);
        assert_eq!(a.alertname, "UnexpectedListener");
        assert_eq!(a.labels.protocol, "tcp");
        assert_eq!(a.labels.port, "867");
        assert_eq!(a.labels.address, "0.0.0.0");
        assert_eq!(a.labels.netns, "host");
        assert_eq!(a.key, e.class.alert_id);
        assert!(!format!("{:?}", a.labels).contains("42"), "{a:?}");
        assert_eq!(a.summary, Record::from_event(&e).message);
        assert_eq!(a.description, e.class.verdict.reason);
    }

    #[test]
    fn an_alert_raised_and_cleared_in_one_poll_is_kept_as_ended() {
        let raised = Arc::new(event("listen"));
        let mut cleared = (*raised).clone();
        cleared.kind = EventKind::AlertCleared;
        cleared.time = raised.time + std::time::Duration::from_millis(5);
        let mut book = AlertBook::default();
        assert!(book.events(&[raised.clone(), Arc::new(cleared)]));
        let short = book.take_short();
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].starts_at, raised.time);
        assert_eq!(
            short[0].ends_at,
            Some(raised.time + std::time::Duration::from_millis(5))
        );
        assert!(book.take_short().is_empty());
        // An alert raised and still active is in the set, not among the ended ones.
        assert!(book.events(std::slice::from_ref(&raised)));
        assert!(book.take_short().is_empty());
        let first = book.active([&raised].into_iter());
        assert_eq!(first.len(), 1);
        // The same raising event again: the same alert, not built anew.
        let again = book.active([&raised].into_iter());
        assert!(Arc::ptr_eq(&first[0], &again[0]));
        assert!(book.active(std::iter::empty()).is_empty());
    }
}
