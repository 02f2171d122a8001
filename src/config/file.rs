//! The configuration file as written: every key optional, unknown keys rejected.
//!
//! Values whose shape varies (a port or a range, one value or a list) are kept as
//! `toml::Value` with their span, so validation can say exactly what is wrong and where.

use serde::Deserialize;
use toml::{Spanned, Value};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub daemon: Option<DaemonFile>,
    pub events: Option<EventsFile>,
    pub notify: Option<NotifyFile>,
    pub registry: Option<RegistryFile>,
    pub policy: Option<PolicyFile>,
    pub allow: Option<Vec<Spanned<AllowFile>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonFile {
    pub interval: Option<Spanned<String>>,
    pub restart_grace: Option<Spanned<String>>,
    pub realert_after: Option<Spanned<String>>,
    pub state_directory: Option<Spanned<String>>,
    pub log: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsFile {
    pub socket: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub buffer: Option<Spanned<i64>>,
    pub max_subscribers: Option<Spanned<i64>>,
    pub max_subscribers_per_user: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    pub desktop: Option<bool>,
    pub burst_window: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    pub csv: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub alert_on: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowFile {
    pub name: Option<Spanned<String>>,
    pub port: Option<Spanned<Value>>,
    pub protocol: Option<Spanned<String>>,
    pub address: Option<Spanned<Value>>,
    pub process: Option<Spanned<Value>>,
    pub exe: Option<Spanned<Value>>,
    pub user: Option<Spanned<Value>>,
    pub unit: Option<Spanned<Value>>,
}
