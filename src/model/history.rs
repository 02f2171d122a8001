//! Listener lives from the daemon's own records: `portsentinel history`.
//!
//! A life begins with the record that first shows a listener identity (`listener-present`,
//! `listener-opened`, `alert-raised`, or any record of it when the range read starts in
//! the middle of its life) and ends with the record that closes it (`listener-closed`, or
//! `alert-cleared` because it closed). Restarts, changes of hands and alerts in between
//! belong to the same life: an identity is its namespace, protocol, address, port and
//! program (`LISTENER_ID`), never its pid. A required listener's absence
//! (`listener-missing` until `listener-restored`) is a life of its own.
//!
//! Pure: records come in as values, in the journal's order.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One record, as far as a life needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub time: SystemTime,
    pub host: String,
    pub boot: String,
    /// `PORTSENTINEL_EVENT`.
    pub event: String,
    /// `LISTENER_ID`, or for older records and expectations a key made of the fields.
    pub key: String,
    pub protocol: String,
    pub address: String,
    pub port: String,
    pub netns: String,
    pub pid: Option<u32>,
    pub exe: Option<String>,
    pub comm: Option<String>,
    pub unit: Option<String>,
    pub unknown: Option<String>,
    /// `ALERT_REASON` or `VERDICT_REASON`, or the message of an expectation.
    pub reason: Option<String>,
    pub severity: Option<String>,
    pub detail: Option<String>,
    pub lifetime_ms: Option<u64>,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH,
            host: String::new(),
            boot: String::new(),
            event: String::new(),
            key: String::new(),
            protocol: String::new(),
            address: String::new(),
            port: String::new(),
            netns: String::new(),
            pid: None,
            exe: None,
            comm: None,
            unit: None,
            unknown: None,
            reason: None,
            severity: None,
            detail: None,
            lifetime_ms: None,
        }
    }
}

/// How a life ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum End {
    /// A record closed it.
    Closed,
    /// No record closed it: it still listens (or the range read ends first).
    StillListening,
    /// The machine booted again before any record closed it.
    Rebooted,
}

/// One listener's life, or one required listener's absence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Life {
    pub host: String,
    pub listener_id: String,
    /// `listener` or `missing` (a required listener's absence).
    pub kind: &'static str,
    #[serde(serialize_with = "rfc3339")]
    pub first_seen: SystemTime,
    /// The last record of it: its close when `end` is `closed`.
    #[serde(serialize_with = "rfc3339")]
    pub last_seen: SystemTime,
    pub end: End,
    /// From first seen to its close (to the last record when it did not close).
    pub duration_ms: u64,
    pub protocol: String,
    pub address: String,
    pub port: String,
    pub netns: String,
    /// The executable, else the unit, else the process name, else why it is unknown.
    pub program: String,
    pub exe: Option<String>,
    pub pids: Vec<u32>,
    pub alerted: bool,
    pub severity: Option<String>,
    /// Why it was alerted, else why it was allowed.
    pub reason: Option<String>,
    pub restarts: u32,
    pub records: u32,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

fn program(e: &Entry) -> Option<String> {
    e.exe
        .clone()
        .or_else(|| e.unit.clone())
        .or_else(|| e.comm.clone())
        .or_else(|| e.unknown.as_ref().map(|u| format!("({u})")))
}

impl Life {
    fn begin(e: &Entry) -> Life {
        let missing = e.event == "listener-missing";
        Life {
            host: e.host.clone(),
            listener_id: e.key.clone(),
            kind: if missing { "missing" } else { "listener" },
            first_seen: e.time,
            last_seen: e.time,
            end: End::StillListening,
            duration_ms: 0,
            protocol: e.protocol.clone(),
            address: e.address.clone(),
            port: e.port.clone(),
            netns: e.netns.clone(),
            program: program(e).unwrap_or_default(),
            exe: e.exe.clone(),
            pids: Vec::new(),
            alerted: missing,
            severity: None,
            reason: None,
            restarts: 0,
            records: 0,
        }
    }

    fn take(&mut self, e: &Entry) {
        self.records += 1;
        self.last_seen = e.time;
        if let Some(pid) = e.pid
            && !self.pids.contains(&pid)
        {
            self.pids.push(pid);
        }
        if self.exe.is_none() && e.exe.is_some() {
            self.exe = e.exe.clone();
            self.program = program(e).unwrap_or_default();
        }
        match e.event.as_str() {
            "alert-raised" | "listener-missing" => {
                self.alerted = true;
                self.severity = e.severity.clone().or(self.severity.take());
                self.reason = e.reason.clone().or(self.reason.take());
            }
            "listener-restarted" => self.restarts += 1,
            _ if !self.alerted && self.reason.is_none() => self.reason = e.reason.clone(),
            _ => {}
        }
        self.duration_ms = duration_ms(self.first_seen, e.time);
    }

    fn close(&mut self, e: &Entry) {
        self.take(e);
        self.end = End::Closed;
        // The kernel's own times, for a listener it announced: more exact than the polls'.
        if let Some(ms) = e.lifetime_ms {
            self.duration_ms = ms;
        }
    }
}

fn duration_ms(from: SystemTime, to: SystemTime) -> u64 {
    to.duration_since(from)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// Whether a record ends the life it belongs to.
fn closes(e: &Entry) -> bool {
    match e.event.as_str() {
        "listener-closed" | "listener-restored" => true,
        // Closed while the daemon ran, or found closed when it started again.
        "alert-cleared" => e.detail.as_deref().is_some_and(|d| {
            d == "listener closed" || d == "listener closed while portsentinel was not running"
        }),
        _ => false,
    }
}

/// The lives the records tell of, in the order they began.
pub fn lives(entries: impl IntoIterator<Item = Entry>) -> Vec<Life> {
    let mut done: Vec<Life> = Vec::new();
    // Open lives by (host, key), with the boot each was last seen in.
    let mut open: HashMap<(String, String), (Life, String)> = HashMap::new();
    for e in entries {
        let id = (e.host.clone(), e.key.clone());
        if let Some((_, boot)) = open.get(&id)
            && *boot != e.boot
            && !e.boot.is_empty()
        {
            let (mut life, _) = open.remove(&id).expect("present");
            life.end = End::Rebooted;
            done.push(life);
        }
        let (life, boot) = open
            .entry(id.clone())
            .or_insert_with(|| (Life::begin(&e), e.boot.clone()));
        boot.clone_from(&e.boot);
        if closes(&e) {
            life.close(&e);
            let (life, _) = open.remove(&id).expect("present");
            done.push(life);
        } else {
            life.take(&e);
        }
    }
    done.extend(open.into_values().map(|(life, _)| life));
    done.sort_by(|a, b| {
        (a.first_seen, &a.host, &a.listener_id).cmp(&(b.first_seen, &b.host, &b.listener_id))
    });
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn entry(secs: u64, event: &str, key: &str, pid: u32) -> Entry {
        Entry {
            time: at(secs),
            host: "web-1".into(),
            boot: "b1".into(),
            event: event.into(),
            key: key.into(),
            protocol: "tcp".into(),
            address: "0.0.0.0".into(),
            port: "867".into(),
            pid: Some(pid),
            exe: Some("/usr/bin/nc".into()),
            ..Entry::default()
        }
    }

    #[test]
    fn a_life_runs_from_its_first_record_to_its_close() {
        let mut cleared = entry(30, "alert-cleared", "a", 11);
        cleared.detail = Some("listener closed".into());
        let mut raised = entry(10, "alert-raised", "a", 10);
        raised.reason = Some("867/tcp is unassigned".into());
        raised.severity = Some("high".into());
        let lives = lives([
            entry(0, "listener-present", "ssh", 1),
            raised,
            entry(20, "listener-restarted", "ssh", 2),
            entry(25, "listener-restarted", "a", 11),
            cleared,
        ]);
        assert_eq!(lives.len(), 2, "{lives:#?}");
        let (ssh, a) = (&lives[0], &lives[1]);
        assert_eq!(
            (ssh.end, ssh.pids.clone(), ssh.restarts),
            (End::StillListening, vec![1, 2], 1)
        );
        assert_eq!(ssh.duration_ms, 20_000);
        assert!(!ssh.alerted);
        assert_eq!(a.end, End::Closed);
        assert_eq!(a.duration_ms, 20_000);
        assert!(a.alerted);
        assert_eq!(a.severity.as_deref(), Some("high"));
        assert_eq!(a.reason.as_deref(), Some("867/tcp is unassigned"));
        assert_eq!(a.pids, [10, 11]);
    }

    #[test]
    fn an_alert_found_closed_at_the_daemons_start_ends_its_life() {
        let mut cleared = entry(50, "alert-cleared", "a", 10);
        cleared.detail = Some("listener closed while portsentinel was not running".into());
        let lives = lives([
            entry(0, "alert-raised", "a", 10),
            cleared,
            entry(60, "alert-raised", "a", 12),
        ]);
        assert_eq!(lives.len(), 2, "{lives:#?}");
        assert_eq!((lives[0].end, lives[0].duration_ms), (End::Closed, 50_000));
        assert_eq!(lives[1].end, End::StillListening);
    }

    #[test]
    fn a_cleared_alert_that_did_not_close_continues_the_life() {
        let mut cleared = entry(5, "alert-cleared", "a", 10);
        cleared.detail = Some("allowed after config reload: [[allow]] \"x\"".into());
        let lives = lives([entry(0, "alert-raised", "a", 10), cleared]);
        assert_eq!(lives.len(), 1);
        assert_eq!(lives[0].end, End::StillListening);
        assert!(lives[0].alerted);
    }

    #[test]
    fn the_same_identity_again_after_a_close_is_a_new_life_and_a_reboot_ends_one() {
        let mut short = entry(3, "listener-closed", "a", 10);
        short.lifetime_ms = Some(5);
        let mut after_boot = entry(100, "listener-present", "a", 12);
        after_boot.boot = "b2".into();
        let lives = lives([
            entry(2, "listener-opened", "a", 10),
            short,
            entry(50, "listener-opened", "a", 11),
            after_boot,
        ]);
        assert_eq!(lives.len(), 3, "{lives:#?}");
        assert_eq!((lives[0].end, lives[0].duration_ms), (End::Closed, 5));
        assert_eq!(lives[1].end, End::Rebooted);
        assert_eq!(lives[2].end, End::StillListening);
    }

    #[test]
    fn hosts_are_apart() {
        let mut other = entry(1, "listener-present", "a", 10);
        other.host = "web-2".into();
        let lives = lives([entry(0, "listener-present", "a", 10), other]);
        assert_eq!(lives.len(), 2);
    }
}
