//! The tables of the main file other than the rules: `[daemon]`, `[events]`, `[notify]`,
//! `[registry]`, `[policy]` (and, through [`super::fleet`], `[metrics]` and `[alertmanager]`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeValue;

use super::file::{Doc, Value};
use super::{Config, MAX_SUBSCRIBERS, MIN_INTERVAL, parse_duration, parse_duration_at_least};
use crate::model::Condition;
use crate::sink::LogMode;

/// Reads one table of the main file into `config`.
pub fn read_table<'t>(
    doc: &mut Doc<'t>,
    name: &str,
    v: &Value<'t>,
    path: &Path,
    config: &mut Config,
) {
    let Some(table) = doc.table(name, v) else {
        return;
    };
    let allowed: &[&str] = match name {
        "daemon" => &[
            "interval",
            "restart_grace",
            "realert_after",
            "owner_sweep",
            "state_directory",
            "log",
            "namespaces",
            "instant",
        ],
        "events" => &[
            "socket",
            "group",
            "buffer",
            "max_subscribers",
            "max_subscribers_per_user",
        ],
        "notify" => &["desktop", "burst_window"],
        "registry" => &["csv"],
        "metrics" => super::fleet::METRICS_KEYS,
        "alertmanager" => super::fleet::ALERTMANAGER_KEYS,
        _ => &["alert_on", "builtin_allow"],
    };
    for (key, v) in doc.entries(table, allowed) {
        match name {
            "daemon" => daemon_key(doc, key, v, config),
            "events" => events_key(doc, key, v, config),
            "notify" => notify_key(doc, key, v, config),
            "registry" => registry_key(doc, v, path, config),
            "metrics" => super::fleet::metrics_key(doc, key, v, &mut config.metrics),
            "alertmanager" => super::fleet::alertmanager_key(doc, key, v, &mut config.alertmanager),
            _ => policy_key(doc, key, v, config),
        }
    }
}

fn duration<'t>(doc: &mut Doc<'t>, key: &str, v: &Value<'t>, min: Duration) -> Option<Duration> {
    let written = doc.string(key, v, "a duration such as \"500ms\", \"2s\", \"1m\"")?;
    match parse_duration_at_least(written, min) {
        Ok(d) => Some(d),
        Err(e) => {
            doc.error(Some(v.span()), format!("{key}: {e}"));
            None
        }
    }
}

fn daemon_key<'t>(doc: &mut Doc<'t>, key: &str, v: &Value<'t>, config: &mut Config) {
    let d = &mut config.daemon;
    match key {
        "interval" => {
            d.interval = duration(doc, "daemon.interval", v, MIN_INTERVAL).unwrap_or(d.interval)
        }
        "restart_grace" => {
            d.restart_grace =
                duration(doc, "daemon.restart_grace", v, Duration::ZERO).unwrap_or(d.restart_grace);
        }
        "realert_after" => {
            d.realert_after =
                duration(doc, "daemon.realert_after", v, Duration::ZERO).unwrap_or(d.realert_after);
        }
        "owner_sweep" => {
            let least = Duration::from_secs(1);
            d.owner_sweep = duration(doc, "daemon.owner_sweep", v, least).unwrap_or(d.owner_sweep);
        }
        "state_directory" => {
            if let Some(dir) = doc.string("daemon.state_directory", v, "an absolute path") {
                if dir.starts_with('/') {
                    d.state_directory = Some(PathBuf::from(dir));
                } else {
                    doc.error(
                        Some(v.span()),
                        format!("daemon.state_directory: `{dir}` is not an absolute path"),
                    );
                }
            }
        }
        "instant" => {
            d.instant = match doc.string("daemon.instant", v, "\"auto\" or \"off\"") {
                Some("auto") => true,
                Some("off") => false,
                Some(other) => {
                    doc.error(
                        Some(v.span()),
                        format!(
                            "daemon.instant: `{other}` is not allowed; allowed: \"auto\", \"off\""
                        ),
                    );
                    d.instant
                }
                None => d.instant,
            };
        }
        "namespaces" => {
            d.namespaces = match doc.string("daemon.namespaces", v, "\"all\" or \"host\"") {
                Some("all") => crate::source::netns::Scope::All,
                Some("host") => crate::source::netns::Scope::Host,
                Some(other) => {
                    doc.error(
                        Some(v.span()),
                        format!("daemon.namespaces: `{other}` is not allowed; allowed: \"all\", \"host\""),
                    );
                    d.namespaces
                }
                None => d.namespaces,
            };
        }
        _ => {
            let allowed = "\"auto\", \"journald\", \"text\", \"json\"";
            d.log = match doc.string("daemon.log", v, allowed) {
                Some("auto") => LogMode::Auto,
                Some("journald") => LogMode::Journald,
                Some("text") => LogMode::Text,
                Some("json") => LogMode::Json,
                Some(other) => {
                    doc.error(
                        Some(v.span()),
                        format!("daemon.log: unknown log mode `{other}`; allowed: {allowed}"),
                    );
                    d.log
                }
                None => d.log,
            };
        }
    }
}

fn events_key<'t>(doc: &mut Doc<'t>, key: &str, v: &Value<'t>, config: &mut Config) {
    let ev = &mut config.events;
    match key {
        "socket" => match doc.string("events.socket", v, "an absolute path, or \"\"") {
            Some("") => ev.socket = None,
            Some(p) if p.starts_with('/') => ev.socket = Some(PathBuf::from(p)),
            Some(p) => doc.error(
                Some(v.span()),
                format!("events.socket: `{p}` is not an absolute path; give one, or \"\" for no event socket"),
            ),
            None => {}
        },
        "group" => match doc.string("events.group", v, "a group name, or \"\"") {
            Some("") => ev.group = None,
            Some(name) if name.len() <= 32 && !name.contains([':', '/', ' ']) => {
                ev.group = Some(name.to_owned());
            }
            Some(name) => doc.error(
                Some(v.span()),
                format!("events.group: `{name}` is not a group name; give one, or \"\" for root only"),
            ),
            None => {}
        },
        "buffer" => {
            ev.buffer = doc.count("events.buffer", v, 1_000_000, "lines").unwrap_or(ev.buffer);
        }
        "max_subscribers" => {
            ev.max_subscribers = doc
                .count("events.max_subscribers", v, MAX_SUBSCRIBERS, "subscribers")
                .unwrap_or(ev.max_subscribers);
        }
        _ => {
            ev.max_subscribers_per_user = doc
                .count("events.max_subscribers_per_user", v, MAX_SUBSCRIBERS, "subscribers")
                .unwrap_or(ev.max_subscribers_per_user);
        }
    }
}

fn notify_key<'t>(doc: &mut Doc<'t>, key: &str, v: &Value<'t>, config: &mut Config) {
    let n = &mut config.notify;
    if key == "desktop" {
        n.desktop = doc.boolean("notify.desktop", v).unwrap_or(n.desktop);
        return;
    }
    let Some(w) = doc.string("notify.burst_window", v, "a duration such as \"2s\"") else {
        return;
    };
    match parse_duration(w) {
        Ok(d) => n.burst_window = d,
        Err(e) => doc.error(Some(v.span()), format!("notify.burst_window: {e}")),
    }
}

fn registry_key<'t>(doc: &mut Doc<'t>, v: &Value<'t>, path: &Path, config: &mut Config) {
    let Some(csv) = doc.string("registry.csv", v, "a path to IANA's CSV") else {
        return;
    };
    let mut p = PathBuf::from(csv);
    if p.is_relative() {
        p = path.parent().unwrap_or(Path::new(".")).join(p);
    }
    config.registry_csv = Some((p, doc.location(v.span().start)));
}

fn policy_key<'t>(doc: &mut Doc<'t>, key: &str, v: &Value<'t>, config: &mut Config) {
    let policy = &mut config.policy;
    if key == "builtin_allow" {
        policy.builtin_allow = doc.boolean("policy.builtin_allow", v).unwrap_or(true);
        return;
    }
    // One condition, or a list of them.
    let items: Vec<&Value<'t>> = match v.get_ref() {
        DeValue::Array(items) => items.iter().collect(),
        _ => vec![v],
    };
    policy.alert_on.clear();
    for item in items {
        let Some(name) = doc.string("policy.alert_on", item, "a condition name, or a list") else {
            continue;
        };
        match Condition::parse(name) {
            Some(c) => {
                policy.alert_on.insert(c);
            }
            None => doc.error(
                Some(item.span()),
                format!(
                    "policy.alert_on: unknown condition `{name}`; allowed: {}",
                    Condition::ALL.map(Condition::as_str).join(", ")
                ),
            ),
        }
    }
}
