//! `[[allow]]` and `[[expect]]` entries, as written → the policy's rules.

use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use toml::de::{DeTable, DeValue};

use super::file::{Doc, Value, integer};
use crate::model::rules::NetnsMatch;
use crate::model::{
    AddressMatch, AllowRule, ExpectRule, Holder, Kind, Place, PortMatch, Protocol, UserMatch,
};

const PLACE_KEYS: [&str; 6] = ["port", "protocol", "address", "netns", "kind", "interface"];
const HOLDER_KEYS: [&str; 5] = ["process", "exe", "user", "unit", "container"];

/// Every `[[allow]]` and `[[expect]]` entry of one file. `allow` and `expect` are the
/// values of those keys at the top of the file.
pub fn read_rules<'t>(
    doc: &mut Doc<'t>,
    allow: Option<&Value<'t>>,
    expect: Option<&Value<'t>>,
) -> (Vec<AllowRule>, Vec<ExpectRule>) {
    let mut allows = Vec::new();
    for (i, table) in entries_of(doc, "allow", allow).into_iter().enumerate() {
        allows.extend(allow_rule(doc, i, table));
    }
    let mut expects = Vec::new();
    for (i, (table, span)) in entries_of(doc, "expect", expect).into_iter().enumerate() {
        let Some(rule) = expect_rule(doc, i, (table, span.clone())) else {
            continue;
        };
        // The name (with the file) is what a required entry's state is kept under
        // across reloads, so it must tell the entries apart.
        if let Some(first) = expects.iter().find(|e: &&ExpectRule| e.name == rule.name) {
            doc.error(
                Some(span),
                format!(
                    "expect.name: \"{}\" already names the entry at {}; give each [[expect]] its own name",
                    rule.name, first.origin
                ),
            );
            continue;
        }
        expects.push(rule);
    }
    (allows, expects)
}

/// The tables of an array of tables (`[[allow]]`), with their spans.
fn entries_of<'a, 't>(
    doc: &mut Doc<'t>,
    key: &str,
    v: Option<&'a Value<'t>>,
) -> Vec<(&'a DeTable<'t>, std::ops::Range<usize>)> {
    let Some(v) = v else { return Vec::new() };
    let DeValue::Array(items) = v.get_ref() else {
        doc.error(Some(v.span()), format!("{key}: expected [[{key}]] entries"));
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item.get_ref() {
            DeValue::Table(t) => Some((t, item.span())),
            _ => {
                doc.error(
                    Some(item.span()),
                    format!("{key}: expected [[{key}]] entries"),
                );
                None
            }
        })
        .collect()
}

/// `config.toml:14`: where a rule was written, for verdicts.
fn origin(doc: &Doc<'_>, span: &std::ops::Range<usize>) -> String {
    let file = Path::new(doc.file())
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(doc.file());
    format!("{file}:{}", doc.location(span.start).line)
}

fn allow_rule<'t>(
    doc: &mut Doc<'t>,
    index: usize,
    (table, span): (&DeTable<'t>, std::ops::Range<usize>),
) -> Option<AllowRule> {
    let mut keys = vec!["name", "until"];
    keys.extend(PLACE_KEYS);
    keys.extend(HOLDER_KEYS);
    let errors = doc.errors.len();
    let entries = doc.entries(table, &keys);
    let mut rule = AllowRule {
        origin: origin(doc, &span),
        ..AllowRule::default()
    };
    for (key, v) in entries {
        match key {
            "name" => rule.name = doc.string("allow.name", v, "a label").map(str::to_owned),
            "until" => rule.until = until(doc, v),
            _ if PLACE_KEYS.contains(&key) => place_key(doc, "allow", key, v, &mut rule.place),
            _ => holder_key(doc, "allow", key, v, &mut rule.holder),
        }
    }
    if rule.place.is_empty() && rule.holder.is_empty() && doc.errors.len() == errors {
        doc.error(
            Some(span),
            format!(
                "[[allow]] entry {} matches every listener: give at least one of {}",
                index + 1,
                [&PLACE_KEYS[..], &HOLDER_KEYS[..]].concat().join(", ")
            ),
        );
    }
    (doc.errors.len() == errors).then_some(rule)
}

fn expect_rule<'t>(
    doc: &mut Doc<'t>,
    index: usize,
    (table, span): (&DeTable<'t>, std::ops::Range<usize>),
) -> Option<ExpectRule> {
    let mut keys = vec!["name", "required"];
    keys.extend(PLACE_KEYS);
    keys.extend(HOLDER_KEYS);
    let errors = doc.errors.len();
    let entries = doc.entries(table, &keys);
    let mut rule = ExpectRule {
        origin: origin(doc, &span),
        name: format!("expect {}", index + 1),
        ..ExpectRule::default()
    };
    for (key, v) in entries {
        match key {
            "name" => {
                if let Some(n) = doc.string("expect.name", v, "a label") {
                    rule.name = n.to_owned();
                }
            }
            "required" => rule.required = doc.boolean("expect.required", v).unwrap_or(false),
            _ if PLACE_KEYS.contains(&key) => place_key(doc, "expect", key, v, &mut rule.place),
            _ => holder_key(doc, "expect", key, v, &mut rule.holder),
        }
    }
    if doc.errors.len() == errors {
        if rule.place.ports.is_empty() {
            doc.error(
                Some(span.clone()),
                format!("[[expect]] \"{}\": give the port it is about", rule.name),
            );
        } else if rule.holder.is_empty() {
            doc.error(
                Some(span),
                format!(
                    "[[expect]] \"{}\": give at least one of exe, unit, process, user: who must hold the port",
                    rule.name
                ),
            );
        }
    }
    (doc.errors.len() == errors).then_some(rule)
}

fn place_key<'t>(doc: &mut Doc<'t>, table: &str, key: &str, v: &Value<'t>, place: &mut Place) {
    let k = format!("{table}.{key}");
    match key {
        "port" => {
            place.ports = doc.each(
                &k,
                v,
                "a port 0-65535, a range \"N-M\", \"ephemeral\", or a list of these",
                parse_port,
            );
        }
        "protocol" => {
            let allowed = "\"tcp\", \"udp\", \"udplite\" or \"sctp\"";
            if let Some(p) = doc.string(&k, v, allowed) {
                match p.parse::<Protocol>() {
                    Ok(p) => place.protocol = Some(p),
                    Err(_) => doc.error(
                        Some(v.span()),
                        format!("{k}: `{p}` is not a protocol; allowed: {allowed}"),
                    ),
                }
            }
        }
        "kind" => {
            place.kinds = doc.each(&k, v, "\"port\", \"packet\" or \"raw\", or a list", |v| {
                text(v).as_deref().and_then(Kind::parse).ok_or(None)
            });
        }
        "interface" => {
            place.interfaces = doc.each(
                &k,
                v,
                "an interface name, or \"any\" (bound to none), or a list",
                |v| match text(v) {
                    Some(name) if !name.is_empty() => Ok(name),
                    _ => Err(None),
                },
            );
        }
        "netns" => {
            place.netns = doc.each(
                &k,
                v,
                "\"host\", \"any\", a namespace name (`ip netns`), or \"netns:INODE\", or a list",
                |v| match text(v).as_deref() {
                    Some("host") => Ok(NetnsMatch::Host),
                    Some("any") => Ok(NetnsMatch::Any),
                    Some(name) if !name.is_empty() => Ok(NetnsMatch::Name(name.to_owned())),
                    _ => Err(None),
                },
            );
        }
        _ => {
            place.addresses = doc.each(
                &k,
                v,
                "\"loopback\", \"any\" (the wildcard address), an IP address or a CIDR network, or a list of these",
                |v| parse_address(v).ok_or(None),
            );
        }
    }
}

fn holder_key<'t>(doc: &mut Doc<'t>, table: &str, key: &str, v: &Value<'t>, holder: &mut Holder) {
    let k = format!("{table}.{key}");
    match key {
        "process" => {
            holder.processes = doc.each(
                &k,
                v,
                "a process name as `ps` shows it (at most 15 bytes), or a list",
                |v| {
                    text(v)
                        .filter(|s| !s.is_empty() && s.len() <= 15)
                        .ok_or(None)
                },
            );
        }
        "exe" => {
            holder.exes = doc.each(&k, v, "an absolute path to a program, or a list", |v| {
                text(v).filter(|s| s.starts_with('/')).ok_or(None)
            });
        }
        "container" => {
            holder.containers = doc.each(
                &k,
                v,
                "a container name, or the start of an id (12 digits or more), or a list",
                |v| text(v).filter(|s| !s.is_empty()).ok_or(None),
            );
        }
        "user" => {
            holder.users = doc.each(&k, v, "a user name or a numeric uid, or a list", |v| {
                parse_user(v).ok_or(None)
            });
        }
        _ => {
            holder.units = doc.each(
                &k,
                v,
                "a systemd unit name such as \"ssh.service\" (a user's own, \"user@1000.service/app.scope\"), or a list",
                |v| text(v).filter(|s| unit_name(s)).ok_or(None),
            );
            for unit in &holder.units {
                if !(unit.ends_with(".service") || unit.ends_with(".scope")) {
                    doc.warn(
                        v.span(),
                        format!(
                            "{k}: `{unit}` is not a .service or .scope unit: no process runs in it, so the rule never matches"
                        ),
                    );
                }
            }
        }
    }
}

/// `ssh.service`, or a unit of a user's service manager as the daemon names it:
/// `user@1000.service/app-foo.scope`.
fn unit_name(s: &str) -> bool {
    let own = match s.split_once('/') {
        Some((manager, own)) => {
            let uid = manager
                .strip_prefix("user@")
                .and_then(|m| m.strip_suffix(".service"));
            if uid.is_none_or(|u| u.parse::<u32>().is_err()) {
                return false;
            }
            own
        }
        None => s,
    };
    own.contains('.') && !own.contains('/')
}

fn text(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// `until`: a TOML date-time or a string, RFC 3339 in UTC.
fn until<'t>(doc: &mut Doc<'t>, v: &Value<'t>) -> Option<SystemTime> {
    let written = match v.get_ref() {
        DeValue::Datetime(d) => d.to_string(),
        DeValue::String(s) => s.to_string(),
        other => {
            let found = super::file::kind(other);
            doc.error(
                Some(v.span()),
                format!(
                    "allow.until: expected a date-time such as 2026-12-31T18:00:00Z, found {found}"
                ),
            );
            return None;
        }
    };
    match parse_moment(&written) {
        Ok(t) => Some(t),
        Err(e) => {
            doc.error(
                Some(v.span()),
                format!("allow.until: `{written}` is not a date-time ({e}); write it as RFC 3339, e.g. 2026-12-31T18:00:00Z or 2026-12-31T19:00:00+01:00"),
            );
            None
        }
    }
}

/// An RFC 3339 date-time, in UTC (`Z`) or with an offset (`+01:00`, `-05:30`).
pub fn parse_moment(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Ok(t) = humantime::parse_rfc3339(s) {
        return Ok(t);
    }
    // `...+HH:MM`: the same wall time read as UTC, then moved by the offset.
    let offset = s.len().checked_sub(6).and_then(|at| {
        // Not `split_at`: a multi-byte character may straddle `at`.
        let (rest, tail) = (s.get(..at)?, s.get(at..)?);
        let sign = match tail.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (h, m) = tail[1..].split_once(':')?;
        let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some((rest, sign, h * 3600 + m * 60))
    });
    let Some((rest, sign, secs)) = offset else {
        return humantime::parse_rfc3339(s).map_err(|e| e.to_string());
    };
    let wall = humantime::parse_rfc3339(&format!("{rest}Z")).map_err(|e| e.to_string())?;
    let by = std::time::Duration::from_secs(secs);
    let t = if sign > 0 {
        wall.checked_sub(by)
    } else {
        wall.checked_add(by)
    };
    t.ok_or_else(|| "out of range".to_owned())
}

fn parse_port(v: &DeValue<'_>) -> Result<PortMatch, Option<String>> {
    match v {
        DeValue::Integer(_) => {
            let p = integer(v).and_then(|n| u16::try_from(n).ok()).ok_or(None)?;
            Ok(PortMatch::Range(p, p))
        }
        DeValue::String(s) if s.trim() == "ephemeral" => Ok(PortMatch::Ephemeral),
        DeValue::String(s) => {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let (a, b) = (a.trim().parse::<u16>().ok(), b.trim().parse::<u16>().ok());
            match (a, b) {
                (Some(a), Some(b)) if a <= b => Ok(PortMatch::Range(a, b)),
                (Some(a), Some(b)) => Err(Some(format!("is written backwards; write \"{b}-{a}\""))),
                _ => Err(None),
            }
        }
        _ => Err(None),
    }
}

fn parse_user(v: &DeValue<'_>) -> Option<UserMatch> {
    match v {
        DeValue::Integer(_) => integer(v)
            .and_then(|n| u32::try_from(n).ok())
            .map(UserMatch::Uid),
        DeValue::String(s) if !s.is_empty() => Some(match s.parse::<u32>() {
            Ok(n) => UserMatch::Uid(n),
            Err(_) => UserMatch::Name(s.to_string()),
        }),
        _ => None,
    }
}

fn parse_address(v: &DeValue<'_>) -> Option<AddressMatch> {
    let s = text(v)?;
    match s.as_str() {
        "loopback" => Some(AddressMatch::Loopback),
        "any" => Some(AddressMatch::Any),
        _ => {
            let s = s.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = s.parse::<IpAddr>() {
                return Some(AddressMatch::Net(ip.into()));
            }
            s.parse().ok().map(AddressMatch::Net)
        }
    }
}
