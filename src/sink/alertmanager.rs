//! Alertmanager: every active alert POSTed to `/api/v2/alerts`, sent again every `resend`
//! so that Alertmanager keeps it, and once more with `endsAt` when it is over.
//!
//! A thread of its own does the HTTP (blocking `ureq`): the loop hands over the whole set
//! of active alerts whenever it changes, into one slot where the newest set replaces an
//! older one not yet taken, so nothing queues up while Alertmanager is slow or away. The
//! thread works out what ended by comparing sets, so an alert cleared while Alertmanager
//! was unreachable is still sent as ended when it comes back. A failure is said once at
//! warning, retried with a backoff of 1 s doubling to a minute, and its recovery said once;
//! the journal has every record whatever happens here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::RecordSink;
use super::fleet::FleetAlert;
use super::record::{Record, priority};
use crate::config::AlertmanagerSettings;
use crate::latch::Latch;

/// Ended alerts kept for sending at most: beyond this the oldest are dropped, and
/// Alertmanager ends them itself after its `resolve_timeout`.
const ENDED_MAX: usize = 4096;
/// Alerts per request.
const BATCH: usize = 500;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What the loop hands over.
#[derive(Debug, Default)]
struct Slot {
    /// The active set, newest only.
    active: Option<Vec<Arc<FleetAlert>>>,
    /// Alerts that began and ended between two hand-overs.
    ended: Vec<FleetAlert>,
    stop: bool,
}

/// The loop's side.
#[derive(Debug)]
pub struct Alertmanager {
    slot: Arc<(Mutex<Slot>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One alert in Alertmanager's API (`postableAlert`).
#[derive(Debug, Serialize)]
pub struct Postable<'a> {
    labels: BTreeMap<&'static str, &'a str>,
    annotations: BTreeMap<&'static str, &'a str>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// An alert as Alertmanager takes it; empty labels are left out (Alertmanager treats an
/// empty label as an absent one).
pub fn postable<'a>(
    a: &'a FleetAlert,
    instance: &'a str,
    generator_url: Option<&'a str>,
) -> Postable<'a> {
    let l = &a.labels;
    let labels: BTreeMap<&'static str, &'a str> = [
        ("alertname", a.alertname),
        ("instance", instance),
        ("severity", a.severity.as_str()),
        ("protocol", l.protocol.as_str()),
        ("port", l.port.as_str()),
        ("address", l.address.as_str()),
        ("program", l.program.as_str()),
        ("netns", l.netns.as_str()),
        ("container", l.container.as_str()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    let annotations = [
        ("summary", a.summary.as_str()),
        ("description", a.description.as_str()),
    ]
    .into_iter()
    .collect();
    Postable {
        labels,
        annotations,
        starts_at: rfc3339(a.starts_at),
        // Never before its start (a clock set back meanwhile): Alertmanager refuses
        // such an alert, and with it the whole batch, at every retry.
        ends_at: a.ends_at.map(|t| rfc3339(t.max(a.starts_at))),
        generator_url,
    }
}

/// The host's name, for the `instance` label.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The `Authorization` header the settings ask for, read from its file.
fn authorization(s: &AlertmanagerSettings) -> Result<Option<String>, String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    if let Some(p) = &s.bearer_token_file {
        return Ok(Some(format!("Bearer {}", read(p)?)));
    }
    match (&s.basic_auth_username, &s.basic_auth_password_file) {
        (Some(user), Some(p)) => {
            let password = read(p)?;
            Ok(Some(format!(
                "Basic {}",
                base64(format!("{user}:{password}").as_bytes())
            )))
        }
        _ => Ok(None),
    }
}

/// Standard base64 with padding (RFC 4648), for basic authentication.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Where the thread sends, and how.
struct Target {
    agent: ureq::Agent,
    endpoint: String,
    authorization: Option<String>,
    instance: String,
    generator_url: Option<String>,
    resend: Duration,
}

impl Alertmanager {
    /// Starts the sender; `Err` says why it cannot run (an unreadable credentials file).
    pub fn start(
        settings: &AlertmanagerSettings,
        records: Arc<dyn RecordSink>,
    ) -> Result<Alertmanager, String> {
        let Some(url) = &settings.url else {
            return Err("no url".into());
        };
        let authorization = authorization(settings)?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .tls_config(tls)
            .build()
            .into();
        let target = Target {
            agent,
            endpoint: format!("{url}/api/v2/alerts"),
            authorization,
            instance: settings.instance.clone().unwrap_or_else(hostname),
            generator_url: settings.generator_url.clone(),
            resend: settings.resend,
        };
        let slot = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let theirs = Arc::clone(&slot);
        let thread = std::thread::Builder::new()
            .name("alertmanager".into())
            .spawn(move || Sender::new(target, records).run(&theirs))
            .map_err(|e| format!("cannot start its thread: {e}"))?;
        Ok(Alertmanager {
            slot,
            thread: Some(thread),
        })
    }

    /// The active set now, and the alerts that began and ended since the last call.
    pub fn update(&self, active: Vec<Arc<FleetAlert>>, ended: Vec<FleetAlert>) {
        let (lock, wake) = &*self.slot;
        let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
        slot.active = Some(active);
        let room = ENDED_MAX.saturating_sub(slot.ended.len());
        slot.ended.extend(ended.into_iter().take(room));
        wake.notify_one();
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let (lock, wake) = &*self.slot;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_one();
        // The thread may be inside a request: it ends within the timeout, but the daemon
        // does not wait for it.
        drop(self.thread.take());
    }
}

/// The thread's side: what Alertmanager should know, and when to tell it.
struct Sender {
    target: Target,
    records: Arc<dyn RecordSink>,
    /// The active alerts, by key.
    known: BTreeMap<String, Arc<FleetAlert>>,
    /// Ended alerts not yet delivered.
    ended: Vec<FleetAlert>,
    /// Something changed since the last delivery.
    dirty: bool,
    next_resend: Instant,
    retry_at: Option<Instant>,
    backoff: Duration,
    latch: Latch,
}

impl Sender {
    fn new(target: Target, records: Arc<dyn RecordSink>) -> Sender {
        Sender {
            target,
            records,
            known: BTreeMap::new(),
            ended: Vec::new(),
            dirty: false,
            next_resend: Instant::now(),
            retry_at: None,
            backoff: BACKOFF_MIN,
            latch: Latch::new(
                "cannot deliver alerts to Alertmanager",
                "the journal has every record; retrying with backoff",
                "alerts delivered to Alertmanager again",
            ),
        }
    }

    fn run(mut self, slot: &(Mutex<Slot>, Condvar)) {
        loop {
            let (active, ended) = {
                let (lock, wake) = slot;
                let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if s.stop {
                        return;
                    }
                    if s.active.is_some() || !s.ended.is_empty() {
                        break;
                    }
                    let now = Instant::now();
                    let due = self.due();
                    if due <= now {
                        break;
                    }
                    s = wake
                        .wait_timeout(s, due - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                (s.active.take(), std::mem::take(&mut s.ended))
            };
            self.take(active, ended, SystemTime::now());
            if self.due() <= Instant::now() {
                self.deliver();
            }
        }
    }

    /// When the next delivery is due.
    fn due(&self) -> Instant {
        match (self.dirty, self.retry_at) {
            (true, Some(t)) => t.min(self.next_resend),
            (true, None) => Instant::now(),
            (false, _) => self.next_resend,
        }
    }

    /// Folds in a new active set: what left it has ended at `now`.
    fn take(
        &mut self,
        active: Option<Vec<Arc<FleetAlert>>>,
        ended: Vec<FleetAlert>,
        now: SystemTime,
    ) {
        if let Some(active) = active {
            let next: BTreeMap<String, Arc<FleetAlert>> =
                active.into_iter().map(|a| (a.key.clone(), a)).collect();
            self.dirty |= next.len() != self.known.len()
                || next
                    .iter()
                    .any(|(k, a)| self.known.get(k).is_none_or(|b| **b != **a));
            for (key, a) in std::mem::take(&mut self.known) {
                if !next.contains_key(&key) {
                    let mut a = Arc::unwrap_or_clone(a);
                    a.ends_at = Some(now);
                    self.ended.push(a);
                }
            }
            // An ended alert raised again is active, not ended.
            self.ended.retain(|a| !next.contains_key(&a.key));
            self.known = next;
        }
        if !ended.is_empty() {
            self.ended.extend(ended);
            self.dirty = true;
        }
        if self.ended.len() > ENDED_MAX {
            let drop = self.ended.len() - ENDED_MAX;
            self.ended.drain(..drop);
        }
    }

    /// Sends everything Alertmanager should know now: the ended alerts, then the active.
    fn deliver(&mut self) {
        let now = Instant::now();
        let t = &self.target;
        let all: Vec<Postable<'_>> = self
            .ended
            .iter()
            .chain(self.known.values().map(|a| &**a))
            .map(|a| postable(a, &t.instance, t.generator_url.as_deref()))
            .collect();
        let mut result = Ok(());
        for batch in all.chunks(BATCH) {
            result = post(t, batch);
            if result.is_err() {
                break;
            }
        }
        drop(all);
        match result {
            Ok(()) => {
                self.ended.clear();
                self.dirty = false;
                self.retry_at = None;
                self.backoff = BACKOFF_MIN;
                self.next_resend = now + self.target.resend;
                if let Some(back) = self.latch.recover() {
                    self.records
                        .send(Record::plain(priority::NOTICE, None, back));
                }
            }
            Err(e) => {
                self.dirty = true;
                self.retry_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.next_resend = now + self.target.resend;
                if let Some(problem) = self.latch.fail(format!("{}: {e}", self.target.endpoint)) {
                    self.records
                        .send(Record::plain(priority::WARNING, None, problem));
                }
            }
        }
    }
}

fn post(t: &Target, batch: &[Postable<'_>]) -> Result<(), String> {
    // Invisible and bidi characters as `\u` escapes, as in every JSON output.
    let body = crate::text::json::to_string(batch).into_bytes();
    let mut request = t
        .agent
        .post(&t.endpoint)
        .header("Content-Type", "application/json");
    if let Some(auth) = &t.authorization {
        request = request.header("Authorization", auth);
    }
    match request.send(&body[..]) {
        Ok(_) => Ok(()),
        Err(ureq::Error::StatusCode(code)) => Err(format!("HTTP status {code}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::record::tests::event;

    #[test]
    fn an_alert_has_the_labels_and_annotations_alertmanager_routes_by() {
        let e = event("listen");
        let mut a = FleetAlert::raised(&e);
        let p = serde_json::to_value(postable(&a, "web-1", None)).unwrap();
        let labels = &p["labels"];
        for (k, v) in [
            ("alertname", "UnexpectedListener"),
            ("instance", "web-1"),
            ("protocol", "tcp"),
            ("port", "867"),
            ("address", "0.0.0.0"),
            ("program", "/tmp/listen"),
            ("netns", "host"),
        ] {
            assert_eq!(labels[k], v, "{p}");
        }
        assert!(
            labels.get("container").is_none(),
            "empty labels are left out: {p}"
        );
        assert_eq!(p["annotations"]["summary"], a.summary.as_str());
        assert_eq!(p["annotations"]["description"], a.description.as_str());
        assert_eq!(p["startsAt"], "1970-01-01T00:00:00.000Z");
        assert!(p.get("endsAt").is_none() && p.get("generatorURL").is_none());
        a.ends_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(60));
        let p = serde_json::to_value(postable(&a, "web-1", Some("http://x/"))).unwrap();
        assert_eq!(p["endsAt"], "1970-01-01T00:01:00.000Z");
        assert_eq!(p["generatorURL"], "http://x/");
        // The clock set back between start and end: it ends where it started.
        a.starts_at = SystemTime::UNIX_EPOCH + Duration::from_secs(120);
        let p = serde_json::to_value(postable(&a, "web-1", None)).unwrap();
        assert_eq!(p["endsAt"], p["startsAt"]);
    }

    #[test]
    fn a_name_that_hides_characters_shows_them_in_labels_and_the_body() {
        let e = event("ss\u{200b}hd\u{202e}");
        let a = FleetAlert::raised(&e);
        assert_eq!(a.labels.program, "/tmp/ss\\u{200b}hd\\u{202e}");
        let body = crate::text::json::to_string(&[postable(&a, "h", None)]);
        assert!(
            !body.contains('\u{200b}') && !body.contains('\u{202e}'),
            "{body}"
        );
        let back: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(back[0]["labels"]["program"], a.labels.program.as_str());
    }

    #[test]
    fn what_left_the_set_is_ended_and_what_came_back_is_active_again() {
        #[derive(Debug)]
        struct Discard;
        impl RecordSink for Discard {
            fn send(&self, _: Record) {}
        }
        let target = Target {
            agent: ureq::Agent::new_with_defaults(),
            endpoint: "http://127.0.0.1:1/api/v2/alerts".into(),
            authorization: None,
            instance: "h".into(),
            generator_url: None,
            resend: Duration::from_secs(60),
        };
        let mut s = Sender::new(target, Arc::new(Discard));
        let a = Arc::new(FleetAlert::raised(&event("listen")));
        let t = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        s.take(Some(vec![a.clone()]), vec![], t(1));
        assert!(s.dirty && s.ended.is_empty());
        // The same set again: nothing new to say before the next resend.
        s.dirty = false;
        s.take(Some(vec![a.clone()]), vec![], t(2));
        assert!(!s.dirty);
        // Gone from the set: sent as ended, at the moment it left.
        s.take(Some(vec![]), vec![], t(3));
        assert!(s.dirty);
        assert_eq!(s.ended.len(), 1);
        assert_eq!(s.ended[0].ends_at, Some(t(3)));
        assert_eq!(s.ended[0].starts_at, a.starts_at);
        // Raised again before that was delivered: active, not ended.
        s.take(Some(vec![a.clone()]), vec![], t(4));
        assert!(s.ended.is_empty());
        assert_eq!(s.known.len(), 1);
        // Ended ones are bounded.
        let many: Vec<FleetAlert> = (0..ENDED_MAX + 10)
            .map(|i| FleetAlert {
                key: i.to_string(),
                ..(*a).clone()
            })
            .collect();
        s.take(None, many, t(5));
        assert_eq!(s.ended.len(), ENDED_MAX);
    }

    #[test]
    fn basic_auth_is_standard_base64() {
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
