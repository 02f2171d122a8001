//! `portsentinel history`: listener lives from the daemon's journal records.
//!
//! The journal is read through `journalctl -o json`, with field matches that leave the
//! filtering to journald's indexes. That needs no libsystemd headers to build, reads every
//! journal format journalctl reads (compressed, sealed, remote), and follows journalctl's
//! own forms for `--since`, `--until` and `--boot`; a pure-Rust journal reader would have
//! to keep up with the file format's changes itself.

use std::io::BufRead as _;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Failure, write_stdout};
use crate::cli::HistoryArgs;
use crate::model::history::{End, Entry, Life, lives};
use crate::model::{EventKind, expect::ExpectKind};
use crate::text::{clip, escape_control};

/// The journalctl command for `args`.
pub fn journalctl(args: &HistoryArgs) -> Command {
    let mut c = Command::new("journalctl");
    c.args(["--no-pager", "--quiet", "-o", "json"]);
    if let Some(dir) = &args.directory {
        c.arg("--directory").arg(dir);
    }
    for f in &args.file {
        c.arg("--file").arg(f);
    }
    if let Some(s) = &args.since {
        c.arg(format!("--since={s}"));
    }
    if let Some(u) = &args.until {
        c.arg(format!("--until={u}"));
    }
    if let Some(b) = &args.boot {
        c.arg(format!("--boot={b}"));
    }
    // Fields of different names must all match; the same name matches any of its values.
    if !args.all_sources {
        c.arg(format!("_SYSTEMD_UNIT={}", args.unit));
    }
    if let Some(p) = args.port {
        c.arg(format!("LISTEN_PORT={p}"));
    }
    if let Some(exe) = &args.exe {
        c.arg(format!("LISTENER_EXE={exe}"));
    }
    for kind in EventKind::ALL {
        c.arg(format!("PORTSENTINEL_EVENT={}", kind.as_str()));
    }
    for kind in [ExpectKind::Missing, ExpectKind::Restored] {
        c.arg(format!("PORTSENTINEL_EVENT={}", kind.as_str()));
    }
    c
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// A journal record (`journalctl -o json`) as a life needs it; `None` if it is not one of
/// the daemon's event records.
pub fn entry(v: &Value) -> Option<Entry> {
    let event = text(v, "PORTSENTINEL_EVENT")?;
    let time = text(v, "PORTSENTINEL_TIME")
        .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
        .or_else(|| {
            let us: u64 = text(v, "__REALTIME_TIMESTAMP")?.parse().ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_micros(us))
        })?;
    let field = |f: &str| text(v, f).unwrap_or_default();
    let expectation = event == "listener-missing" || event == "listener-restored";
    let key = match text(v, "LISTENER_ID") {
        Some(id) => id,
        None if expectation => format!(
            "expect:{}",
            crate::model::rules::expect_key(&field("EXPECT_NAME"), &field("EXPECT_RULE"))
        ),
        None => [
            "LISTEN_NETNS",
            "LISTEN_PROTO",
            "LISTEN_ADDRESS",
            "LISTEN_PORT",
            "LISTENER_EXE",
            "LISTENER_UNIT",
            "LISTENER_COMM",
        ]
        .map(field)
        .join("|"),
    };
    let reason = if expectation {
        text(v, "MESSAGE")
    } else {
        text(v, "ALERT_REASON").or_else(|| text(v, "VERDICT_REASON"))
    };
    Some(Entry {
        time,
        host: field("_HOSTNAME"),
        boot: field("_BOOT_ID"),
        key,
        protocol: field("LISTEN_PROTO"),
        address: text(v, "LISTEN_ADDRESS")
            .or_else(|| text(v, "PACKET_INTERFACE"))
            .unwrap_or_default(),
        port: field("LISTEN_PORT"),
        netns: text(v, "LISTEN_NETNS_NAME").unwrap_or_else(|| field("LISTEN_NETNS")),
        pid: text(v, "LISTENER_PID").and_then(|p| p.parse().ok()),
        exe: text(v, "LISTENER_EXE"),
        comm: text(v, "LISTENER_COMM").or_else(|| text(v, "EXPECT_HOLDER")),
        unit: text(v, "LISTENER_UNIT"),
        unknown: text(v, "LISTENER_UNKNOWN"),
        reason,
        severity: text(v, "ALERT_SEVERITY"),
        detail: text(v, "EVENT_DETAIL"),
        lifetime_ms: text(v, "LISTEN_LIFETIME_MS").and_then(|t| t.parse().ok()),
        event,
    })
}

pub fn run(args: &HistoryArgs) -> Result<ExitCode, Failure> {
    let mut child = journalctl(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Failure::Unavailable(format!(
                "cannot run journalctl, which reads the journal: {e} (it comes with systemd)"
            ))
        })?;
    let stdout = child.stdout.take().expect("piped");
    // Read as they come: a long journal is never held as text, only as lives.
    let entries = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .filter_map(|v| entry(&v));
    let mut found = lives(entries);
    let output = child.wait_with_output().map_err(anyhow::Error::from)?;
    if !output.status.success() {
        let why = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(if output.status.code() == Some(1) && !why.is_empty() {
            Failure::Usage(format!("journalctl: {why}"))
        } else {
            Failure::Unavailable(format!("journalctl failed ({}): {why}", output.status))
        });
    }
    if args.alerts {
        found.retain(|l| l.alerted);
    }
    // A life that still listens has lasted until now (unless the range read ends earlier).
    if args.until.is_none() {
        let now = SystemTime::now();
        for l in found.iter_mut().filter(|l| l.end == End::StillListening) {
            if let Ok(d) = now.duration_since(l.first_seen) {
                l.duration_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
        }
    }
    if args.json {
        write_stdout(|out| {
            crate::text::json::to_writer_pretty(&mut *out, &found)?;
            writeln!(out)
        })?;
    } else {
        if found.is_empty() {
            eprintln!("no listener records in the range read");
        }
        write_stdout(|out| table(out, &found))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `Nms` under a second, else `1h 2m 3s`.
pub fn duration_words(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

fn when(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn row(l: &Life, hosts: bool) -> Vec<String> {
    let last = match l.end {
        End::Closed => when(l.last_seen),
        End::StillListening => "still listening".to_owned(),
        End::Rebooted => "until reboot".to_owned(),
    };
    let duration = match l.end {
        End::Closed => duration_words(l.duration_ms),
        _ => format!("{}+", duration_words(l.duration_ms)),
    };
    let alert = if l.alerted {
        format!(
            "{}: {}",
            l.severity.as_deref().unwrap_or("alert"),
            l.reason.as_deref().unwrap_or("")
        )
    } else {
        "-".to_owned()
    };
    let pids: Vec<String> = l.pids.iter().map(u32::to_string).collect();
    let mut cells = vec![
        when(l.first_seen),
        last,
        duration,
        l.protocol.clone(),
        l.address.clone(),
        if l.kind == "missing" {
            format!("{} (missing)", l.port)
        } else {
            l.port.clone()
        },
        clip(&l.program, 40).into_owned(),
        if pids.is_empty() {
            "-".into()
        } else {
            pids.join(",")
        },
        clip(&alert, 70).into_owned(),
    ];
    if hosts {
        cells.insert(0, l.host.clone());
    }
    // Text from the journal is shown as text, whoever wrote it.
    cells
        .into_iter()
        .map(|c| escape_control(&c).into_owned())
        .collect()
}

fn table(out: &mut dyn std::io::Write, found: &[Life]) -> std::io::Result<()> {
    let hosts = found
        .iter()
        .any(|l| found.first().is_some_and(|f| f.host != l.host));
    let mut header = vec![
        "FIRST SEEN",
        "LAST SEEN",
        "DURATION",
        "PROTO",
        "ADDRESS",
        "PORT",
        "PROGRAM",
        "PIDS",
        "ALERT",
    ];
    if hosts {
        header.insert(0, "HOST");
    }
    let rows: Vec<Vec<String>> = found.iter().map(|l| row(l, hosts)).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn std::io::Write, cells: &[&str]| -> std::io::Result<()> {
        let last = cells.len() - 1;
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                writeln!(out, "{c}")?;
            } else {
                write!(out, "{c:<w$}  ")?;
            }
        }
        Ok(())
    };
    line(out, &header)?;
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(out, &cells)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_record_becomes_an_entry() {
        let v: Value = serde_json::from_str(
            r#"{"__REALTIME_TIMESTAMP":"1800000000000000","_HOSTNAME":"web-1","_BOOT_ID":"b",
                "PORTSENTINEL_EVENT":"alert-raised","LISTENER_ID":"abc","LISTEN_PROTO":"tcp",
                "LISTEN_ADDRESS":"0.0.0.0","LISTEN_PORT":"867","LISTENER_PID":"42",
                "LISTENER_EXE":"/usr/bin/nc","ALERT_REASON":"unassigned","ALERT_SEVERITY":"high",
                "PORTSENTINEL_TIME":"2027-01-15T08:00:00.250000Z","MESSAGE":"ALERT: ..."}"#,
        )
        .unwrap();
        let e = entry(&v).unwrap();
        assert_eq!(e.key, "abc");
        assert_eq!(e.pid, Some(42));
        assert_eq!(
            e.time,
            humantime::parse_rfc3339("2027-01-15T08:00:00.250Z").unwrap()
        );
        assert_eq!(e.reason.as_deref(), Some("unassigned"));
        // Not one of the daemon's event records.
        assert!(entry(&serde_json::json!({"MESSAGE": "x"})).is_none());
    }

    #[test]
    fn a_missing_listener_moved_by_an_edit_is_one_life() {
        let v = |secs: u64, event: &str, line: u32| {
            serde_json::json!({"__REALTIME_TIMESTAMP": format!("{}", secs * 1_000_000),
                "PORTSENTINEL_EVENT": event, "EXPECT_NAME": "ssh",
                "EXPECT_RULE": format!("config.toml:{line}"), "LISTEN_PORT": "22"})
        };
        // Missing, then the file edited (the entry now at line 4), then restored.
        let found = lives(
            [v(10, "listener-missing", 3), v(20, "listener-restored", 4)]
                .iter()
                .map(|v| entry(v).unwrap()),
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].end, End::Closed);
    }

    #[test]
    fn journalctl_is_asked_for_the_events_of_the_unit_only() {
        let args = HistoryArgs {
            since: Some("-2h".into()),
            until: Some("2027-01-01 00:00".into()),
            port: Some(867),
            exe: Some("/usr/bin/nc".into()),
            alerts: false,
            boot: Some("0".into()),
            json: false,
            directory: Some("/var/log/journal/remote".into()),
            file: vec!["/tmp/copy.journal".into()],
            unit: "portsentinel.service".into(),
            all_sources: false,
        };
        let c = journalctl(&args);
        let argv: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "--since=-2h",
            "--until=2027-01-01 00:00",
            "LISTENER_EXE=/usr/bin/nc",
            "--file",
            "/tmp/copy.journal",
            "--boot=0",
            "--directory",
            "/var/log/journal/remote",
            "_SYSTEMD_UNIT=portsentinel.service",
            "LISTEN_PORT=867",
            "PORTSENTINEL_EVENT=alert-raised",
            "PORTSENTINEL_EVENT=listener-missing",
        ] {
            assert!(argv.iter().any(|a| a == want), "{want} not in {argv:?}");
        }
    }

    #[test]
    fn a_host_column_appears_when_the_journal_holds_several() {
        let v = |host: &str| {
            serde_json::json!({"__REALTIME_TIMESTAMP": "1800000000000000", "_HOSTNAME": host,
                "PORTSENTINEL_EVENT": "listener-present", "LISTENER_ID": "a",
                "LISTEN_PROTO": "tcp", "LISTEN_PORT": "22", "LISTENER_EXE": "/usr/sbin/sshd"})
        };
        let render = |hosts: &[&str]| {
            let found = lives(hosts.iter().map(|h| entry(&v(h)).unwrap()));
            let mut out = Vec::new();
            table(&mut out, &found).unwrap();
            String::from_utf8(out).unwrap()
        };
        let one = render(&["web-1"]);
        assert!(
            one.starts_with("FIRST SEEN") && !one.contains("web-1"),
            "{one}"
        );
        let two = render(&["web-1", "web-2"]);
        assert!(two.starts_with("HOST"), "{two}");
        assert_eq!(
            two.lines().filter(|l| l.contains("/usr/sbin/sshd")).count(),
            2
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration_words(5), "5ms");
        assert_eq!(duration_words(20_400), "20s");
        assert_eq!(duration_words(3_723_000), "1h 2m 3s");
    }
}
