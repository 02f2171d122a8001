//! The fleet tables: `[metrics]` (a textfile for node_exporter, an HTTP endpoint) and
//! `[alertmanager]`. Both are off unless written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{Doc, Value};
use super::parse_duration_at_least;

/// Prometheus metrics (`[metrics]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// A file for node_exporter's textfile collector, replaced whole after each poll that
    /// changed a value.
    pub textfile: Option<PathBuf>,
    /// Where to serve `GET /metrics`.
    pub listen: Option<SocketAddr>,
}

impl MetricsSettings {
    pub fn enabled(&self) -> bool {
        self.textfile.is_some() || self.listen.is_some()
    }
}

/// Alertmanager's API (`[alertmanager]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertmanagerSettings {
    /// `http://host:9093` (no trailing slash); `None`: off.
    pub url: Option<String>,
    /// How often active alerts are sent again, so that Alertmanager keeps them.
    pub resend: Duration,
    /// How long one request may take.
    pub timeout: Duration,
    /// A file holding a bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// Basic authentication: the user, and a file holding the password.
    pub basic_auth_username: Option<String>,
    pub basic_auth_password_file: Option<PathBuf>,
    /// The `generatorURL` of every alert; absent when unset.
    pub generator_url: Option<String>,
    /// The `instance` label; `None`: the host name.
    pub instance: Option<String>,
}

impl Default for AlertmanagerSettings {
    fn default() -> AlertmanagerSettings {
        AlertmanagerSettings {
            url: None,
            resend: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            bearer_token_file: None,
            basic_auth_username: None,
            basic_auth_password_file: None,
            generator_url: None,
            instance: None,
        }
    }
}

pub const METRICS_KEYS: &[&str] = &["textfile", "listen"];
pub const ALERTMANAGER_KEYS: &[&str] = &[
    "url",
    "resend",
    "timeout",
    "bearer_token_file",
    "basic_auth_username",
    "basic_auth_password_file",
    "generator_url",
    "instance",
];

fn absolute<'t>(doc: &mut Doc<'t>, key: &str, v: &Value<'t>) -> Option<PathBuf> {
    let p = doc.string(key, v, "an absolute path")?;
    if p.starts_with('/') {
        return Some(PathBuf::from(p));
    }
    doc.error(
        Some(v.span()),
        format!("{key}: `{p}` is not an absolute path"),
    );
    None
}

fn http_url<'t>(doc: &mut Doc<'t>, key: &str, v: &Value<'t>) -> Option<String> {
    let u = doc.string(key, v, "an http:// or https:// URL")?;
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    match rest {
        Some(host)
            if !host.is_empty() && !host.starts_with('/') && !u.contains(char::is_whitespace) =>
        {
            Some(u.trim_end_matches('/').to_owned())
        }
        _ => {
            doc.error(
                Some(v.span()),
                format!("{key}: `{u}` is not an http:// or https:// URL with a host"),
            );
            None
        }
    }
}

pub fn metrics_key<'t>(doc: &mut Doc<'t>, key: &str, v: &Value<'t>, m: &mut MetricsSettings) {
    if key == "textfile" {
        if let Some(p) = absolute(doc, "metrics.textfile", v) {
            if p.extension().is_some_and(|e| e == "prom") {
                m.textfile = Some(p);
            } else {
                doc.error(
                    Some(v.span()),
                    format!(
                        "metrics.textfile: `{}` does not end in .prom, which node_exporter's textfile collector reads",
                        p.display()
                    ),
                );
            }
        }
        return;
    }
    let Some(a) = doc.string(
        "metrics.listen",
        v,
        "an address and port such as \"127.0.0.1:9867\"",
    ) else {
        return;
    };
    match a.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => m.listen = Some(addr),
        _ => doc.error(
            Some(v.span()),
            format!(
                "metrics.listen: `{a}` is not an address and port such as \"127.0.0.1:9867\" or \"[::1]:9867\""
            ),
        ),
    }
}

pub fn alertmanager_key<'t>(
    doc: &mut Doc<'t>,
    key: &str,
    v: &Value<'t>,
    am: &mut AlertmanagerSettings,
) {
    let duration = |doc: &mut Doc<'t>, name: &str, min: Duration| {
        let written = doc.string(name, v, "a duration such as \"60s\"")?;
        parse_duration_at_least(written, min)
            .map_err(|e| doc.error(Some(v.span()), format!("{name}: {e}")))
            .ok()
    };
    match key {
        "url" => am.url = http_url(doc, "alertmanager.url", v).or(am.url.take()),
        "generator_url" => am.generator_url = http_url(doc, "alertmanager.generator_url", v),
        "resend" => {
            am.resend =
                duration(doc, "alertmanager.resend", Duration::from_secs(1)).unwrap_or(am.resend);
        }
        "timeout" => {
            am.timeout = duration(doc, "alertmanager.timeout", Duration::from_millis(100))
                .unwrap_or(am.timeout);
        }
        "bearer_token_file" => {
            am.bearer_token_file = absolute(doc, "alertmanager.bearer_token_file", v);
        }
        "basic_auth_password_file" => {
            am.basic_auth_password_file = absolute(doc, "alertmanager.basic_auth_password_file", v);
        }
        "basic_auth_username" => {
            am.basic_auth_username = doc
                .string("alertmanager.basic_auth_username", v, "a user name")
                .map(str::to_owned);
        }
        _ => {
            am.instance = doc
                .string("alertmanager.instance", v, "a name for this host")
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
        }
    }
}

/// What the two tables say together that neither says alone.
pub fn check_alertmanager(am: &AlertmanagerSettings) -> Option<String> {
    if am.bearer_token_file.is_some() && am.basic_auth_username.is_some() {
        return Some(
            "alertmanager: bearer_token_file and basic_auth_username exclude each other".into(),
        );
    }
    if am.basic_auth_username.is_some() != am.basic_auth_password_file.is_some() {
        return Some(
            "alertmanager: basic_auth_username and basic_auth_password_file go together".into(),
        );
    }
    None
}
