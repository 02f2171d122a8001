//! `portsentinel scan`: one look at what listens, as a table or JSON.

use std::fmt::Write as _;
use std::process::ExitCode;

use super::{Failure, exit, load_config, snapshot_with, write_stdout};
use crate::cli::ScanArgs;
use crate::model::{Classifier, ExpectRule, Listener, Report, UnknownOwner, display_address};
use crate::source::Backend;
use crate::text::clip;

pub fn run(args: &ScanArgs) -> Result<ExitCode, Failure> {
    let (config, registry) = load_config(args.config.config.as_deref())?;
    let mut snap = snapshot_with(
        args.source,
        args.all,
        &args.netns.netns,
        args.all_holders,
        |_| true,
    )?;
    let host = snap.host();
    let classifier = Classifier {
        registry: &registry,
        policy: &config.policy,
        host: &host,
    };
    for (i, also) in std::mem::take(&mut snap.also) {
        classifier.judge_as_holders(&mut snap.listeners[i], also);
    }
    let reports = reports(&snap.listeners, &classifier);
    let alerts = reports.iter().filter(|r| r.verdict.alert).count();
    let expected = expectations(&config.policy.expect, &reports);
    let missing = expected.iter().filter(|e| e.missing).count();
    let owners_hidden = reports
        .iter()
        .any(|r| r.owner_unknown == Some(UnknownOwner::NoPermission));
    write_stdout(|out| {
        if args.json {
            crate::text::json::to_writer_pretty(&mut *out, &reports)?;
            return writeln!(out);
        }
        out.write_all(render_table(&reports).as_bytes())?;
        out.write_all(render_alerts(&reports).as_bytes())?;
        out.write_all(render_expected(&expected).as_bytes())?;
        let missing = if missing > 0 {
            format!(", {missing} required listener(s) missing")
        } else {
            String::new()
        };
        writeln!(
            out,
            "{} listener(s), {} alert(s){missing}{}{}",
            reports.len(),
            alerts,
            if snap.backend == Backend::ProcNet {
                "; read from /proc/net (sock_diag unavailable, IPV6_V6ONLY unknown)"
            } else {
                ""
            },
            if owners_hidden {
                "; some owners need root to be named"
            } else {
                ""
            }
        )
    })?;
    Ok(if args.check && (alerts > 0 || missing > 0) {
        ExitCode::from(exit::ALERT)
    } else {
        ExitCode::SUCCESS
    })
}

/// One `[[expect]]` entry and whether something holds its port as it should.
#[derive(Debug)]
pub struct Expected<'a> {
    pub rule: &'a ExpectRule,
    /// The listener that satisfies it.
    pub held: Option<&'a Report>,
    /// Required, and nothing satisfies it.
    pub missing: bool,
}

/// Every `[[expect]]` entry, with the listener that satisfies it.
pub fn expectations<'a>(expect: &'a [ExpectRule], reports: &'a [Report]) -> Vec<Expected<'a>> {
    expect
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let held = reports.iter().find(|r| r.verdict.expect == Some(i));
            Expected {
                rule,
                held,
                missing: rule.required && held.is_none(),
            }
        })
        .collect()
}

/// After the alerts: each expectation and its state.
pub fn render_expected(expected: &[Expected<'_>]) -> String {
    let mut out = String::new();
    if expected.is_empty() {
        return out;
    }
    out.push_str("EXPECTED\n");
    for e in expected {
        let state = match (e.held, e.missing) {
            (Some(r), _) => format!("held by {}", program(r)),
            (None, true) => "MISSING".to_owned(),
            (None, false) => "nothing listens (not required)".to_owned(),
        };
        let required = if e.rule.required { ", required" } else { "" };
        let _ = writeln!(
            out,
            "  \"{}\" {}: {}{required}: {state}",
            clip(&e.rule.name, 40),
            e.rule.where_(),
            clip(&e.rule.holder.describe(), 120)
        );
    }
    out.push('\n');
    out
}

/// Each listener classified, as shown.
pub fn reports(listeners: &[Listener], classifier: &Classifier<'_>) -> Vec<Report> {
    listeners
        .iter()
        .map(|l| Report::new(l, &classifier.classify(l)))
        .collect()
}

fn program(r: &Report) -> String {
    match (&r.process, r.owner_unknown) {
        (Some(p), _) => {
            let more = if r.pids.len() > 1 {
                format!(" +{}", r.pids.len() - 1)
            } else {
                String::new()
            };
            format!("{}[{}]{more}", clip(&p.name, 20), p.pid)
        }
        (None, Some(why)) => match why {
            UnknownOwner::NoPermission => "? (no permission)".to_owned(),
            UnknownOwner::Kernel => "(kernel)".to_owned(),
            UnknownOwner::Vanished => "? (exited)".to_owned(),
            UnknownOwner::InFlight => "? (in flight)".to_owned(),
        },
        (None, None) => "?".to_owned(),
    }
}

fn user(r: &Report) -> String {
    match &r.process {
        Some(p) => p
            .user
            .as_deref()
            .map(|u| clip(u, 16).into_owned())
            .or_else(|| p.uid.map(|u| u.to_string()))
            .unwrap_or_else(|| r.uid.to_string()),
        None => format!("uid {}", r.uid),
    }
}

fn verdict(r: &Report) -> String {
    if r.verdict.alert {
        format!("ALERT {}", r.verdict.severity)
    } else if r.verdict.rule.is_some() {
        "allowed".to_owned()
    } else {
        "ok".to_owned()
    }
}

/// The table: one row per listener, columns sized to their content; packet and raw
/// sockets, which have no port, in a table of their own after it.
pub fn render_table(reports: &[Report]) -> String {
    let (ports, portless): (Vec<&Report>, Vec<&Report>) =
        reports.iter().partition(|r| r.portless.is_none());
    let mut out = port_table(&ports);
    if !portless.is_empty() {
        out.push_str("\nWITHOUT A PORT (packet and raw sockets)\n");
        out.push_str(&portless_table(&portless));
    }
    out
}

/// Packet and raw sockets: what they receive, on which interface, through which filter.
fn portless_table(reports: &[&Report]) -> String {
    let header = [
        "NETNS",
        "KIND",
        "TYPE",
        "PROTOCOL",
        "INTERFACE",
        "FILTER",
        "PROGRAM",
        "USER",
        "VERDICT",
    ];
    let rows: Vec<Vec<String>> = reports
        .iter()
        .filter_map(|r| {
            let p = r.portless.as_ref()?;
            Some(vec![
                clip(&r.netns.label(), 24).into_owned(),
                r.kind.to_string(),
                p.socket_type.clone(),
                crate::model::listener::portless_protocol_name(r.protocol, r.port),
                p.interface.clone().unwrap_or_else(|| "*".to_owned()),
                match (p.filter.attached, p.filter.instructions) {
                    (Some(true), Some(n)) => format!("{n} insns"),
                    (Some(true), None) => "yes".to_owned(),
                    (Some(false), _) => "none".to_owned(),
                    (None, _) => "unknown".to_owned(),
                },
                program(r),
                user(r),
                verdict(r),
            ])
        })
        .collect();
    columns(&header, &rows)
}

fn port_table(reports: &[&Report]) -> String {
    let with_container = reports.iter().any(|r| r.container.is_some());
    let mut header = vec![
        "NETNS", "PROTO", "ADDRESS", "PORT", "REACH", "IANA", "RANGE", "PROGRAM", "USER", "UNIT",
    ];
    if with_container {
        header.push("CONTAINER");
    }
    header.push("VERDICT");
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let mut row = vec![
                clip(&r.netns.label(), 24).into_owned(),
                r.protocol.to_string(),
                display_address(r.address, r.zone.as_deref()),
                r.port.to_string(),
                r.reach.as_str().to_owned(),
                clip(&r.iana.column(), 24).into_owned(),
                r.range.to_string(),
                program(r),
                user(r),
                r.process
                    .as_ref()
                    .and_then(|p| p.unit.as_deref())
                    .map_or_else(|| "-".to_owned(), |u| clip(u, 32).into_owned()),
            ];
            if with_container {
                row.push(
                    r.container
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |c| clip(c.label(), 32).into_owned()),
                );
            }
            row.push(verdict(r));
            row
        })
        .collect();
    columns(&header, &rows)
}

/// Lines of cells, each column as wide as its widest cell.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ", w = *w);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

/// After the table: each alert with its reason and the full program details.
pub fn render_alerts(reports: &[Report]) -> String {
    let mut out = String::new();
    for r in reports.iter().filter(|r| r.verdict.alert) {
        let place = crate::model::classify::reach_words(r.reach, &r.netns, r.container.as_deref());
        let what = match &r.portless {
            None => format!("{}/{} on {}: {place}", r.port, r.protocol, r.endpoint()),
            Some(p) => {
                format!(
                    "{} socket ({}) on {}",
                    r.kind,
                    crate::model::listener::portless_protocol_name(r.protocol, r.port),
                    p.interface.as_deref().unwrap_or("all interfaces"),
                ) + &crate::model::classify::place_words(&r.netns, r.container.as_deref())
                    .map(|w| format!(", {w}"))
                    .unwrap_or_default()
            }
        };
        let _ = writeln!(out, "\nALERT ({}) {what}", r.verdict.severity);
        let _ = writeln!(out, "  why:     {}", r.verdict.reason);
        match &r.process {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "  program: {} (pid {}, user {}{})",
                    p.exe.as_deref().map_or_else(
                        || clip(&p.name, 64).into_owned(),
                        |e| clip(e, 200).into_owned()
                    ),
                    p.pid,
                    user(r),
                    p.unit
                        .as_deref()
                        .map(|u| format!(", unit {}", clip(u, 64)))
                        .unwrap_or_default()
                );
                if !p.cmdline.is_empty() {
                    let _ = writeln!(
                        out,
                        "  command: {}",
                        crate::text::truncate(crate::text::join_cmdline(&p.cmdline).into(), 160)
                    );
                }
            }
            None => {
                let why = r.owner_unknown.map_or("owner unknown", |w| w.describe());
                let _ = writeln!(out, "  program: unknown: {why} (socket uid {})", r.uid);
            }
        }
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}
