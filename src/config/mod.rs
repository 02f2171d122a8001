//! Configuration: parse the file as written ([`file`]), then validate it into a [`Config`]
//! the rest of the program uses. Defaults live in [`Config::default`] and nowhere else.
//!
//! Every error names the place (`FILE:LINE:COL`), the key, the bad value and what is
//! allowed. Validation is pure: it takes text and returns values; only [`load`] and
//! [`Config::registry`] touch the file system.

pub mod file;
mod fleet;
mod rules;
mod settings;

pub use rules::parse_moment;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{AllowRule, ExpectRule, Policy, UserMatch};
use crate::registry::Registry;
use crate::sink::LogMode;

use file::Doc;
pub use fleet::{AlertmanagerSettings, MetricsSettings};

/// Where the daemon looks for its configuration when none is given.
pub const DEFAULT_PATH: &str = "/etc/portsentinel/config.toml";

/// A place in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// A config that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{}:{}:{}: {}", self.file, l.line, l.column, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The daemon's own settings (`[daemon]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonSettings {
    /// Time between two snapshots.
    pub interval: Duration,
    /// How long a vanished listener may take to come back as a restart of itself.
    pub restart_grace: Duration,
    /// How long before a listener that was alerted is alerted again (flapping).
    pub realert_after: Duration,
    /// Time between two sweeps of every fd table for the other holders of each socket.
    pub owner_sweep: Duration,
    /// Where the alert state is kept; `None`: `$STATE_DIRECTORY` or `/var/lib/portsentinel`.
    pub state_directory: Option<PathBuf>,
    pub log: LogMode,
    /// Every network namespace on the machine, or the daemon's own.
    pub namespaces: crate::source::netns::Scope,
    /// Instant detection (`instant = "auto"`): the kernel's events make the daemon poll at
    /// once, and listeners that live between two polls are still recorded. `false`: `"off"`.
    pub instant: bool,
}

/// The event socket (`[events]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSettings {
    /// `None`: no event socket. Default: `$RUNTIME_DIRECTORY/events.sock`, else
    /// `/run/portsentinel/events.sock`.
    pub socket: Option<PathBuf>,
    /// The group whose members may subscribe (besides root).
    pub group: Option<String>,
    /// Lines queued per subscriber before a subscriber that does not read is dropped.
    pub buffer: usize,
    /// Subscribers at once, in all and per uid: a connection beyond either is closed at
    /// once, so no one can spend the daemon's descriptors.
    pub max_subscribers: usize,
    pub max_subscribers_per_user: usize,
}

pub const DEFAULT_EVENT_GROUP: &str = "portsentinel";

/// The most subscribers the config may allow: the unit's `LimitNOFILE=` (8192) keeps room
/// for them and for the daemon's own work.
pub const MAX_SUBSCRIBERS: usize = 4096;

/// Desktop notifications shown by the daemon itself (`[notify]`), for a daemon that runs
/// as the desktop user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifySettings {
    pub desktop: bool,
    /// Alerts closer together than this become one summary notification.
    pub burst_window: Duration,
}

impl Default for NotifySettings {
    fn default() -> NotifySettings {
        NotifySettings {
            desktop: false,
            burst_window: Duration::from_secs(2),
        }
    }
}

impl Default for EventSettings {
    fn default() -> EventSettings {
        EventSettings {
            socket: Some(crate::sink::socket::default_path()),
            group: Some(DEFAULT_EVENT_GROUP.to_owned()),
            buffer: 1024,
            max_subscribers: 64,
            max_subscribers_per_user: 8,
        }
    }
}

/// The shortest poll interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Parses a duration that may be no shorter than `min`.
pub fn parse_duration_at_least(s: &str, min: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min {
        return Err(format!(
            "`{s}` is too short; the least allowed is {}",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}

/// Parses a poll interval: a duration of at least [`MIN_INTERVAL`]. The command line and
/// the file both check it here.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    parse_duration_at_least(s, MIN_INTERVAL)
}

/// What the command line sets over the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub interval: Option<Duration>,
    pub log: Option<LogMode>,
    pub namespaces: Option<crate::source::netns::Scope>,
    pub instant: Option<bool>,
}

/// Where the daemon's config comes from, in layers: built-in defaults, then the file,
/// then the command line. Merged here once; the start and every reload load it the same
/// way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layers {
    /// The file named on the command line; `None`: the default path if it exists.
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

impl Layers {
    /// The merged config and the registry it asks for.
    pub fn load(&self) -> Result<(Config, Registry), ConfigErrors> {
        let mut config = load_or_default(self.file.as_deref())?;
        if let Some(i) = self.overrides.interval {
            config.daemon.interval = i;
        }
        if let Some(log) = self.overrides.log {
            config.daemon.log = log;
        }
        if let Some(scope) = self.overrides.namespaces {
            config.daemon.namespaces = scope;
        }
        if let Some(instant) = self.overrides.instant {
            config.daemon.instant = instant;
        }
        let registry = config.registry()?;
        Ok((config, registry))
    }
}

impl From<ConfigErrors> for Vec<ConfigError> {
    fn from(e: ConfigErrors) -> Vec<ConfigError> {
        e.0
    }
}

impl Default for DaemonSettings {
    fn default() -> DaemonSettings {
        DaemonSettings {
            interval: Duration::from_secs(1),
            restart_grace: Duration::from_secs(3),
            realert_after: Duration::from_secs(600),
            owner_sweep: Duration::from_secs(60),
            state_directory: None,
            log: LogMode::Auto,
            namespaces: crate::source::netns::Scope::All,
            instant: true,
        }
    }
}

/// Parses `"500ms"`, `"2s"`, `"1m"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"500ms\", \"2s\", \"1m\""))
}

/// The validated configuration. `Config::default()` is the built-in defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The file it came from; `None` for the built-in defaults.
    pub file: Option<PathBuf>,
    /// The drop-in files read after it (`config.d/*.toml`), in order.
    pub drop_ins: Vec<PathBuf>,
    /// What is valid but will not work as written, with its place.
    pub warnings: Vec<ConfigError>,
    pub daemon: DaemonSettings,
    pub events: EventSettings,
    pub notify: NotifySettings,
    pub metrics: MetricsSettings,
    pub alertmanager: AlertmanagerSettings,
    /// An IANA CSV to load instead of the built-in table, and where the key was written.
    pub registry_csv: Option<(PathBuf, Location)>,
    pub policy: Policy,
}

impl Config {
    /// The settings that differ in `new` and that only a restart applies.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut later = Vec::new();
        if new.daemon.log != self.daemon.log {
            later.push("daemon.log");
        }
        if new.daemon.instant != self.daemon.instant {
            later.push("daemon.instant");
        }
        if new.daemon.state_directory != self.daemon.state_directory {
            later.push("daemon.state_directory");
        }
        if new.events != self.events {
            later.push("[events]");
        }
        if new.notify != self.notify {
            later.push("[notify]");
        }
        if new.metrics != self.metrics {
            later.push("[metrics]");
        }
        if new.alertmanager != self.alertmanager {
            later.push("[alertmanager]");
        }
        later
    }

    /// `config FILE: alert_on [...], N allow rule(s), REGISTRY, interval I`, for the
    /// daemon's start and reload records.
    pub fn describe(&self, registry: &Registry) -> String {
        let file = self.file.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        let registry = match registry.origin() {
            crate::registry::Origin::BuiltIn => "built-in IANA registry".to_owned(),
            crate::registry::Origin::File(p) => format!("IANA registry {}", p.display()),
        };
        let alert_on: Vec<&str> = self.policy.alert_on.iter().map(|c| c.as_str()).collect();
        let mut rules = format!("{} allow rule(s)", self.policy.allow.len());
        if !self.policy.expect.is_empty() {
            rules.push_str(&format!(", {} expectation(s)", self.policy.expect.len()));
        }
        if !self.drop_ins.is_empty() {
            rules.push_str(&format!(" (with {} drop-in file(s))", self.drop_ins.len()));
        }
        let mut fleet = String::new();
        if let Some(path) = &self.metrics.textfile {
            fleet.push_str(&format!(", metrics to {}", path.display()));
        }
        if let Some(addr) = &self.metrics.listen {
            fleet.push_str(&format!(", metrics on {addr}"));
        }
        if let Some(url) = &self.alertmanager.url {
            fleet.push_str(&format!(", alerts to {url}"));
        }
        format!(
            "config {file}: alert_on [{}], {rules}, {registry}, interval {}{fleet}",
            alert_on.join(", "),
            humantime::format_duration(self.daemon.interval)
        )
    }

    /// The registry this config asks for: the built-in table, or the CSV it names.
    pub fn registry(&self) -> Result<Registry, ConfigError> {
        let Some((path, location)) = &self.registry_csv else {
            return Ok(Registry::builtin());
        };
        Registry::from_csv_file(path).map_err(|e| ConfigError {
            file: self.file_label(),
            location: Some(location.clone()),
            message: format!("registry.csv: {e}"),
        })
    }

    fn file_label(&self) -> String {
        self.file.as_ref().map_or_else(
            || "(built-in defaults)".to_owned(),
            |p| p.display().to_string(),
        )
    }
}

/// Every problem of one or more files, in file order, one `FILE:LINE:COL: ...` per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![e])
    }
}

impl ConfigErrors {
    /// All on one line (`; ` between them), for a record.
    pub fn one_line(&self) -> String {
        let all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        all.join("; ")
    }
}

/// Reads a file of the config: a regular file of a sane size, UTF-8.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let error = |message: String| ConfigError {
        file: path.display().to_string(),
        location: None,
        message,
    };
    // A FIFO put in its place must not hang a reload; a file another user could write
    // is not policy.
    let bytes = crate::files::read_trusted(path).map_err(|e| match e {
        crate::files::FileError::Unsafe(ref at, _) if at != path => ConfigError {
            file: at.display().to_string(),
            location: None,
            message: format!("{} (it holds {})", e.reason(), path.display()),
        },
        crate::files::FileError::Unsafe(..) => error(e.reason()),
        e => error(format!("cannot read the config file: {}", e.reason())),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        error(format!("the config file is not UTF-8 (at byte {at})"))
    })
}

/// Reads and validates a config file, and the drop-in files of `config.d/` beside it.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = read_text(path)?;
    match parse(&text, path) {
        Ok(mut config) => {
            add_drop_ins(&mut config, &drop_in_dir(path))?;
            Ok(config)
        }
        // The drop-ins' errors too: every error of every file at once.
        Err(mut errors) => {
            if let Err(more) = add_drop_ins(&mut Config::default(), &drop_in_dir(path)) {
                errors.0.extend(more.0);
            }
            Err(errors)
        }
    }
}

/// The config at `path` if given; otherwise the default path if that file exists;
/// otherwise the built-in defaults (with the default `config.d/`, if there is one). An
/// explicitly named file must exist.
pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigErrors> {
    match path {
        Some(p) => load(p),
        None if Path::new(DEFAULT_PATH).exists() => load(Path::new(DEFAULT_PATH)),
        None => {
            let mut config = Config::default();
            add_drop_ins(&mut config, &drop_in_dir(Path::new(DEFAULT_PATH)))?;
            Ok(config)
        }
    }
}

/// `config.d/` beside a config file.
pub fn drop_in_dir(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("config.d")
}

/// Reads every `*.toml` of `dir`, in name order, after the main file: their rules come
/// after its own. A missing directory is no drop-ins.
fn add_drop_ins(config: &mut Config, dir: &Path) -> Result<(), ConfigErrors> {
    // Any file put in it is read: no one but root and the reader may write to it.
    // (A directory that is not there holds no drop-ins: that is said below.)
    if let Err(crate::files::FileError::Unsafe(_, why)) = crate::files::trusted_dir(dir, false) {
        return Err(ConfigError {
            file: dir.display().to_string(),
            location: None,
            message: format!("refused: {why}"),
        }
        .into());
    }
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ConfigError {
                file: dir.display().to_string(),
                location: None,
                message: format!("cannot read the drop-in directory: {e}"),
            }
            .into());
        }
    };
    names.sort();
    let mut errors = Vec::new();
    for path in names {
        let read = read_text(&path)
            .map_err(ConfigErrors::from)
            .and_then(|text| parse_drop_in(&text, &path));
        match read {
            Ok((allow, expect, warnings)) => {
                config.policy.allow.extend(allow);
                config.policy.expect.extend(expect);
                config.warnings.extend(warnings);
                config.drop_ins.push(path);
            }
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Validates config text; `path` names it in errors and resolves relative paths in it.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut doc = Doc::new(text, path);
    let mut config = Config {
        file: Some(path.to_owned()),
        ..Config::default()
    };
    let Some(top) = doc.parse() else {
        return Err(ConfigErrors(doc.errors));
    };
    const TOP: [&str; 9] = [
        "daemon",
        "events",
        "notify",
        "registry",
        "policy",
        "metrics",
        "alertmanager",
        "allow",
        "expect",
    ];
    let (mut allow, mut expect) = (None, None);
    for (key, v) in doc.entries(top.get_ref(), &TOP) {
        match key {
            "allow" => allow = Some(v),
            "expect" => expect = Some(v),
            table => settings::read_table(&mut doc, table, v, path, &mut config),
        }
    }
    let (allows, expects) = rules::read_rules(&mut doc, allow, expect);
    config.policy.allow = allows;
    config.policy.expect = expects;
    if let Some(problem) = fleet::check_alertmanager(&config.alertmanager) {
        doc.error(None, problem);
    }
    config.warnings = std::mem::take(&mut doc.warnings);
    finish(doc, config)
}

/// What a drop-in file holds: its rules, and its warnings.
pub type DropIn = (Vec<AllowRule>, Vec<ExpectRule>, Vec<ConfigError>);

/// Validates a drop-in file: only `[[allow]]` and `[[expect]]` entries.
pub fn parse_drop_in(text: &str, path: &Path) -> Result<DropIn, ConfigErrors> {
    let mut doc = Doc::new(text, path);
    let Some(top) = doc.parse() else {
        return Err(ConfigErrors(doc.errors));
    };
    let (mut allow, mut expect) = (None, None);
    for (key, v) in doc.entries(top.get_ref(), &["allow", "expect"]) {
        match key {
            "allow" => allow = Some(v),
            _ => expect = Some(v),
        }
    }
    let (allows, expects) = rules::read_rules(&mut doc, allow, expect);
    let warnings = std::mem::take(&mut doc.warnings);
    finish(doc, (allows, expects, warnings))
}

/// The value, or every error in file order.
fn finish<T>(doc: Doc<'_>, value: T) -> Result<T, ConfigErrors> {
    let mut errors = doc.errors;
    if errors.is_empty() {
        return Ok(value);
    }
    errors.sort_by_key(|e| e.location.as_ref().map(|l| (l.line, l.column)));
    Err(ConfigErrors(errors))
}

impl Config {
    /// What is valid but will not work as written: users the system does not know, rules
    /// that have expired. (Found through the host, so not part of the pure parsing.)
    pub fn lint(&self, host: &dyn crate::model::Host) -> Vec<String> {
        let mut notes: Vec<String> = self.warnings.iter().map(ToString::to_string).collect();
        let now = host.now();
        let holders = self
            .policy
            .allow
            .iter()
            .map(|r| (r.describe(), &r.holder))
            .chain(self.policy.expect.iter().map(|r| (r.describe(), &r.holder)));
        for (rule, holder) in holders {
            for user in &holder.users {
                if let UserMatch::Name(name) = user
                    && host.uid_of(name).is_none()
                {
                    notes.push(format!(
                        "{rule}: no user `{name}` on this system: that key never matches"
                    ));
                }
            }
        }
        for rule in &self.policy.allow {
            if let Some(t) = rule.until.filter(|t| *t <= now) {
                let at = humantime::format_rfc3339_seconds(t);
                notes.push(format!(
                    "{}: expired at {at}, it no longer matches",
                    rule.describe()
                ));
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AddressMatch, Condition, PortMatch, Protocol};

    fn err(text: &str) -> String {
        parse(text, Path::new("/etc/portsentinel/config.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("", Path::new("c.toml")).unwrap();
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.registry_csv, None);
    }

    #[test]
    fn unknown_key_names_file_line_column_and_key() {
        let e = err("[policy]\nalert_on = []\n\n[[allow]]\nprot = 22\n");
        assert!(e.starts_with("/etc/portsentinel/config.toml:5:1: "), "{e}");
        assert!(e.contains("unknown field `prot`"), "{e}");
        assert!(e.contains("`port`"), "lists what is allowed: {e}");
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        let e = err("[[allow]]\nport = 70000\n");
        assert!(
            e.starts_with("/etc/portsentinel/config.toml:2:8: allow.port: `70000` is not valid"),
            "{e}"
        );
        assert!(e.contains("0-65535"), "{e}");
        let e = err("[[allow]]\nport = 22\naddress = [\"loopback\", \"10.0.0.0/33\"]\n");
        assert!(e.contains(":3:24: allow.address: \"10.0.0.0/33\""), "{e}");
        let e = err("[policy]\nalert_on = [\"well-known\", \"everything\"]\n");
        assert!(
            e.contains(":2:27: policy.alert_on: unknown condition `everything`"),
            "{e}"
        );
        assert!(e.contains("registered-unassigned"), "{e}");
        let e = err("[[allow]]\nprotocol = \"dccp\"\n");
        assert!(e.contains(":2:12: allow.protocol: `dccp`"), "{e}");
        let e = err("[[allow]]\nname = \"nothing\"\n");
        assert!(e.contains("matches every listener"), "{e}");
        let e = err("[[allow]]\nexe = \"sshd\"\n");
        assert!(e.contains("absolute path"), "{e}");
        let e = err("[policy\n");
        assert!(e.starts_with("/etc/portsentinel/config.toml:1:"), "{e}");
        let e = err("[[expect]]\nname = \"ssh\"\nport = 22\nuser = \"root\"\n\n\
             [[expect]]\nname = \"ssh\"\nport = 2222\nuser = \"root\"\n");
        assert!(
            e.contains(":6:1: expect.name: \"ssh\" already names the entry at config.toml:1"),
            "{e}"
        );
    }

    /// Valid, but never matching as written: said as warnings, not errors.
    #[test]
    fn rules_that_can_never_match_are_warned_of() {
        let c = parse(
            "[[allow]]\nname = \"a\"\nport = 1\nuser = \"nosuchuser\"\n\
             [[allow]]\nname = \"b\"\nport = 2\nunit = \"nginx.socket\"\n\
             [[allow]]\nname = \"c\"\nport = 3\nuntil = \"2001-01-01T00:00:00Z\"\n\
             [[allow]]\nname = \"d\"\nport = 4\nuser = \"root\"\nunit = \"ssh.service\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let notes = c.lint(&crate::model::classify::TestHost);
        assert_eq!(notes.len(), 3, "{notes:#?}");
        let said = |what: &str| notes.iter().any(|n| n.contains(what));
        assert!(said("no user `nosuchuser`"), "{notes:#?}");
        assert!(
            said("`nginx.socket` is not a .service or .scope unit"),
            "{notes:#?}"
        );
        // A user manager's unit, as the daemon names it, is a unit; a made-up path is not.
        let rule = |unit: &str| format!("[[allow]]\nport = 1\nunit = \"{unit}\"\n");
        let c = parse(&rule("user@1000.service/app-x.scope"), Path::new("c.toml")).unwrap();
        assert_eq!(
            c.policy.allow[0].holder.units,
            ["user@1000.service/app-x.scope"]
        );
        for bad in [
            "nginx",
            "a/b.service",
            "user@x.service/a.scope",
            "user@1.service/a/b.scope",
        ] {
            assert!(parse(&rule(bad), Path::new("c.toml")).is_err(), "{bad}");
        }
        assert!(
            said("[[allow]] \"c\" (c.toml:9): expired at 2001-01-01T00:00:00Z"),
            "{notes:#?}"
        );
    }

    #[test]
    fn until_takes_rfc_3339_with_an_offset_too() {
        let utc = parse_moment("2026-12-31T18:00:00Z").unwrap();
        for same in [
            "2026-12-31T19:00:00+01:00",
            "2026-12-31T12:30:00-05:30",
            "2026-12-31T18:00:00+00:00",
        ] {
            assert_eq!(parse_moment(same), Ok(utc), "{same}");
        }
        let half = parse_moment("2026-12-31T19:00:00.5+01:00").unwrap();
        assert_eq!(
            half.duration_since(utc).unwrap(),
            Duration::from_millis(500)
        );
        for bad in [
            "2026-12-31T19:00:00+25:00",
            "tomorrow",
            "2026-12-31 19:00",
            "2026-12-31T19:00:00é+1:00",
        ] {
            assert!(parse_moment(bad).is_err(), "{bad}");
        }
        // A bare TOML date-time with an offset, and the same as a string.
        for until in ["2026-12-31T19:00:00+01:00", "\"2026-12-31T19:00:00+01:00\""] {
            let c = parse(
                &format!("[[allow]]\nport = 867\nuntil = {until}\n"),
                Path::new("c.toml"),
            )
            .unwrap();
            assert_eq!(c.policy.allow[0].until, Some(utc), "{until}");
        }
    }

    #[test]
    fn drop_ins_are_read_in_name_order_and_their_errors_come_with_the_main_files() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        let d = dir.path().join("config.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(&main, "[policy]\nalert_on = \"any\"\n").unwrap();
        std::fs::write(d.join("20-b.toml"), "[[allow]]\nport = 2\n").unwrap();
        std::fs::write(d.join("10-a.toml"), "\n[[allow]]\nport = 1\n").unwrap();
        std::fs::write(d.join("README"), "not a drop-in").unwrap();
        let c = load(&main).unwrap();
        let origins: Vec<&str> = c.policy.allow.iter().map(|r| r.origin.as_str()).collect();
        assert_eq!(origins, ["10-a.toml:2", "20-b.toml:1"]);
        // A bad main file: its errors and every drop-in's, each naming its file.
        std::fs::write(&main, "[policy]\nalert_on = \"sometimes\"\n").unwrap();
        std::fs::write(d.join("30-c.toml"), "[daemon]\ninterval = \"1s\"\n").unwrap();
        std::fs::write(d.join("40-d.toml"), "[[allow]]\nport = 70000\n").unwrap();
        let e = load(&main).unwrap_err().to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].contains("config.toml:2:12: policy.alert_on"),
            "{e}"
        );
        assert!(
            lines[1].contains("30-c.toml:1:2: unknown field `daemon`"),
            "{e}"
        );
        assert!(lines[2].contains("40-d.toml:2:8: allow.port"), "{e}");
    }

    #[test]
    fn allow_rules_accept_one_value_or_lists() {
        let c = parse(
            r#"
[policy]
alert_on = ["well-known", "registered-unassigned"]

[[allow]]
name = "web"
port = [80, "8000-8099"]
protocol = "TCP"
address = ["any", "::1", "[fe80::1]", "10.0.0.0/8"]
process = "nginx"
exe = ["/usr/sbin/nginx"]
user = ["www-data", 0, "33"]
unit = "nginx.service"
"#,
            Path::new("/etc/x/c.toml"),
        )
        .unwrap();
        assert_eq!(
            c.policy.alert_on,
            [Condition::WellKnown, Condition::RegisteredUnassigned].into()
        );
        let r = &c.policy.allow[0];
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.origin, "c.toml:5");
        assert_eq!(
            r.place.ports,
            [PortMatch::Range(80, 80), PortMatch::Range(8000, 8099)]
        );
        assert_eq!(r.place.protocol, Some(Protocol::Tcp));
        assert_eq!(r.place.addresses.len(), 4);
        assert_eq!(r.place.addresses[0], AddressMatch::Any);
        assert_eq!(
            r.holder.users,
            [
                UserMatch::Name("www-data".into()),
                UserMatch::Uid(0),
                UserMatch::Uid(33)
            ]
        );
        assert_eq!(r.holder.units, ["nginx.service"]);
    }

    #[test]
    fn fleet_tables_are_off_unless_written_and_checked_when_they_are() {
        let c = parse("", Path::new("c.toml")).unwrap();
        assert!(!c.metrics.enabled() && c.alertmanager.url.is_none());
        let c = parse(
            "[metrics]\ntextfile = \"/run/p/portsentinel.prom\"\nlisten = \"[::1]:9867\"\n\
             [alertmanager]\nurl = \"https://am.example:9093/\"\nresend = \"30s\"\n\
             bearer_token_file = \"/etc/t\"\ninstance = \"web-1\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(
            c.metrics.textfile.as_deref(),
            Some(Path::new("/run/p/portsentinel.prom"))
        );
        assert_eq!(c.metrics.listen, Some("[::1]:9867".parse().unwrap()));
        let am = &c.alertmanager;
        assert_eq!(am.url.as_deref(), Some("https://am.example:9093"));
        assert_eq!(am.resend, Duration::from_secs(30));
        assert_eq!(am.instance.as_deref(), Some("web-1"));
        assert!(c.describe(&Registry::builtin()).ends_with(
            "metrics to /run/p/portsentinel.prom, metrics on [::1]:9867, alerts to https://am.example:9093"
        ));
        for (text, want) in [
            (
                "[metrics]\ntextfile = \"/x/p.txt\"",
                "config.toml:2:12: metrics.textfile: `/x/p.txt` does not end in .prom",
            ),
            (
                "[metrics]\ntextfile = \"p.prom\"",
                "config.toml:2:12: metrics.textfile: `p.prom` is not an absolute path",
            ),
            (
                "[metrics]\nlisten = \"localhost\"",
                "config.toml:2:10: metrics.listen: `localhost` is not an address and port",
            ),
            (
                "[alertmanager]\nurl = \"am:9093\"",
                "config.toml:2:7: alertmanager.url: `am:9093` is not an http:// or https:// URL",
            ),
            (
                "[alertmanager]\nresend = \"10ms\"",
                "config.toml:2:10: alertmanager.resend: `10ms` is too short",
            ),
            (
                "[alertmanager]\nbasic_auth_username = \"u\"",
                "config.toml: alertmanager: basic_auth_username and basic_auth_password_file go together",
            ),
            (
                "[alertmanager]\nport = 1",
                "config.toml:2:1: unknown field `port`",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: want {want:?} in {e}");
        }
    }

    #[test]
    fn daemon_settings() {
        let c = parse(
            "[daemon]\ninterval = \"250ms\"\nrestart_grace = \"2s\"\nrealert_after = \"1m\"\nowner_sweep = \"5s\"\nstate_directory = \"/var/lib/x\"\nlog = \"json\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.daemon.interval, Duration::from_millis(250));
        assert_eq!(c.daemon.restart_grace, Duration::from_secs(2));
        assert_eq!(c.daemon.owner_sweep, Duration::from_secs(5));
        assert_eq!(c.daemon.realert_after, Duration::from_secs(60));
        assert_eq!(
            c.daemon.state_directory.as_deref(),
            Some(Path::new("/var/lib/x"))
        );
        assert_eq!(c.daemon.log, LogMode::Json);
        assert!(
            c.daemon.instant,
            "instant detection is on unless turned off"
        );
        let off = parse("[daemon]\ninstant = \"off\"\n", Path::new("c.toml")).unwrap();
        assert!(!off.daemon.instant);
        let e = err("[daemon]\ninstant = \"always\"\n");
        assert!(
            e.contains(
                ":2:11: daemon.instant: `always` is not allowed; allowed: \"auto\", \"off\""
            ),
            "{e}"
        );
        let e = err("[daemon]\ninterval = \"10ms\"\n");
        assert!(
            e.contains(":2:12: daemon.interval: `10ms` is too short; the least allowed is 100ms"),
            "{e}"
        );
        let e = err("[daemon]\ninterval = \"soon\"\n");
        assert!(
            e.contains(":2:12: daemon.interval: `soon` is not a duration"),
            "{e}"
        );
        let e = err("[events]\nbuffer = 0\n");
        assert!(
            e.contains(":2:10: events.buffer: `0` is out of range"),
            "{e}"
        );
        let c = parse(
            "[events]\nsocket = \"\"\ngroup = \"\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!((c.events.socket, c.events.group), (None, None));
        let c = parse(
            "[events]\nmax_subscribers = 100\nmax_subscribers_per_user = 3\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(
            (c.events.max_subscribers, c.events.max_subscribers_per_user),
            (100, 3)
        );
        let e = err("[events]\nmax_subscribers_per_user = 0\n");
        assert!(
            e.contains(":2:28: events.max_subscribers_per_user: `0` is out of range"),
            "{e}"
        );
        let e = err("[daemon]\nlog = \"syslog\"\n");
        assert!(e.contains("daemon.log: unknown log mode `syslog`"), "{e}");
    }

    #[test]
    fn relative_registry_csv_is_relative_to_the_config() {
        let c = parse(
            "[registry]\ncsv = \"iana.csv\"\n",
            Path::new("/etc/portsentinel/config.toml"),
        )
        .unwrap();
        let (p, loc) = c.registry_csv.unwrap();
        assert_eq!(p, Path::new("/etc/portsentinel/iana.csv"));
        assert_eq!((loc.line, loc.column), (2, 7));
    }

    #[test]
    fn missing_registry_csv_is_a_config_error() {
        let c = parse(
            "[registry]\ncsv = \"/nonexistent/iana.csv\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let e = c.registry().unwrap_err().to_string();
        assert!(
            e.starts_with(
                "c.toml:2:7: registry.csv: cannot open IANA registry /nonexistent/iana.csv"
            ),
            "{e}"
        );
    }
}
