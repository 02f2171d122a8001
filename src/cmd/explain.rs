//! `portsentinel explain PORT[/PROTO]`: what IANA says, what the policy says, and what
//! listens there now.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;

use serde::Serialize;

use super::{Failure, load_config, protocols, scan, snapshot, write_stdout};
use crate::cli::{ExplainArgs, PortOrName};
use crate::config::Config;
use crate::model::{
    Classifier, Host, Iana, Listener, Owner, PortRange, Protocol, Report, UnknownOwner, Verdict,
};
use crate::registry::Registry;
use crate::source::SourceMode;

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub protocol: Protocol,
    pub port: u16,
    pub iana: Iana,
    /// The ports around this one with the same registry facts (IANA's row or rows).
    pub registry_run: Option<(u16, u16)>,
    pub range: PortRange,
    /// What the policy would say of a listener on all interfaces and on loopback, whatever
    /// the program (rules that name a program are listed in `allow_rules`).
    pub policy: PolicyView,
    /// `[[allow]]` rules that cover this port and protocol.
    pub allow_rules: Vec<String>,
    /// The programs built-in rules allow here (see the README).
    pub builtin_rules: Vec<String>,
    /// `[[expect]]` entries that cover it: who must hold it.
    pub expected: Vec<String>,
    /// What listens on this port now.
    pub listeners: Vec<Report>,
}

#[derive(Debug, Serialize)]
pub struct PolicyView {
    pub all_interfaces: Verdict,
    pub loopback: Verdict,
}

pub fn run(args: &ExplainArgs) -> Result<ExitCode, Failure> {
    let (config, registry) = load_config(args.config.config.as_deref())?;
    let wanted: Vec<(Protocol, u16)> = match &args.port.port {
        PortOrName::Port(port) => protocols(args.port.protocol)
            .into_iter()
            .map(|p| (p, *port))
            .collect(),
        PortOrName::Name(name) => {
            let found = registry.ports_named(name, args.port.protocol);
            if found.is_empty() {
                let closest = registry.closest_names(name, 5).join(", ");
                return Err(Failure::Usage(format!(
                    "IANA assigns no port to a service `{name}`; the closest names: {closest}"
                )));
            }
            found
        }
    };
    let snap = snapshot(SourceMode::Auto, false, &args.netns.netns, |s| {
        wanted.contains(&(s.protocol, s.port))
    })?;
    let host = snap.host();
    let explanations: Vec<Explanation> = wanted
        .iter()
        .map(|&wanted| explain(&config, &registry, &host, wanted, &snap.listeners))
        .collect();
    write_stdout(|out| {
        if args.json {
            crate::text::json::to_writer_pretty(&mut *out, &explanations)?;
            return writeln!(out);
        }
        for (i, e) in explanations.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            out.write_all(render(e).as_bytes())?;
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn hypothetical(protocol: Protocol, port: u16, address: IpAddr) -> Listener {
    Listener {
        protocol,
        address,
        port,
        v6only: None,
        uid: 0,
        inodes: vec![],
        pids: vec![],
        owner: Owner::Unknown(UnknownOwner::Kernel),
        netns: 0,
        portless: None,
        zone: None,
    }
}

pub fn explain(
    config: &Config,
    registry: &Registry,
    host: &dyn Host,
    (protocol, port): (Protocol, u16),
    now: &[Listener],
) -> Explanation {
    let policy = &config.policy;
    let classifier = Classifier {
        registry,
        policy,
        host,
    };
    let facts = registry.lookup(protocol, port);
    let judge = |addr| {
        classifier
            .classify(&hypothetical(protocol, port, addr))
            .verdict
    };
    Explanation {
        protocol,
        port,
        iana: Iana::of(&facts),
        registry_run: facts.run.map(|r| (r.first, r.last)),
        range: PortRange::of(port),
        policy: PolicyView {
            all_interfaces: judge(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            loopback: judge(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        },
        allow_rules: policy
            .allow
            .iter()
            .filter(|r| r.place.covers_port(protocol, port))
            .map(|r| r.describe())
            .collect(),
        builtin_rules: policy
            .allow_rules()
            .skip(policy.allow.len())
            .filter(|r| r.place.covers_port(protocol, port))
            .map(|r| r.holder.describe())
            .collect(),
        expected: policy
            .expect
            .iter()
            .filter(|r| r.place.covers_port(protocol, port))
            .map(|r| {
                let required = if r.required { ", required" } else { "" };
                format!(
                    "{}: held by {}{required}",
                    r.describe(),
                    r.holder.describe()
                )
            })
            .collect(),
        listeners: scan::reports(
            &now.iter()
                .filter(|l| l.protocol == protocol && l.port == port)
                .cloned()
                .collect::<Vec<_>>(),
            &classifier,
        ),
    }
}

fn verdict_words(v: &Verdict) -> String {
    if v.alert {
        format!("ALERT ({})", v.severity)
    } else {
        "no alert".to_owned()
    }
}

pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let (lo, hi) = e.range.bounds();
    let mut iana = e.iana.words();
    if let Some((a, b)) = e.registry_run
        && a != b
        && e.iana.status != crate::model::Status::Assigned
    {
        let _ = write!(iana, " (registry: {a}-{b} {})", e.iana.status);
    }
    let _ = writeln!(out, "{}/{}", e.port, e.protocol);
    let _ = writeln!(out, "  IANA:      {iana}");
    let _ = writeln!(out, "  range:     {} ({lo}-{hi})", e.range);
    let (a, l) = (&e.policy.all_interfaces, &e.policy.loopback);
    let _ = writeln!(
        out,
        "  policy:    {} on all interfaces, {} on loopback",
        verdict_words(a),
        verdict_words(l)
    );
    let _ = writeln!(out, "             {}", a.reason);
    if e.allow_rules.is_empty() {
        let _ = writeln!(
            out,
            "  allowed by: no [[allow]] rule covers {}/{}",
            e.port, e.protocol
        );
    } else {
        for (i, rule) in e.allow_rules.iter().enumerate() {
            let label = if i == 0 {
                "  allowed by:"
            } else {
                "             "
            };
            let _ = writeln!(out, "{label} {rule} (when all its keys match)");
        }
    }
    if !e.builtin_rules.is_empty() {
        let _ = writeln!(
            out,
            "  built-in:  {}: allowed here by built-in rules (matched on the program's file, and a socket root made)",
            e.builtin_rules.join(", ")
        );
    }
    for (i, rule) in e.expected.iter().enumerate() {
        let label = if i == 0 {
            "  expected:  "
        } else {
            "             "
        };
        let _ = writeln!(out, "{label}{rule}");
    }
    if e.listeners.is_empty() {
        let _ = writeln!(
            out,
            "  now:       nothing listens on {}/{}",
            e.port, e.protocol
        );
    } else {
        let table = scan::render_table(&e.listeners);
        let _ = writeln!(out, "  now:");
        for line in table.lines() {
            let _ = writeln!(out, "    {line}");
        }
        for r in e.listeners.iter().filter(|r| !r.verdict.alert) {
            let _ = writeln!(out, "    {}: {}", r.endpoint(), r.verdict.reason);
        }
        out.push_str(&scan::render_alerts(&e.listeners).replace('\n', "\n  "));
    }
    out.trim_end().to_owned() + "\n"
}
