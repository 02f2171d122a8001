//! The configuration file as written: the TOML document with a span on every key and
//! value (toml's `DeTable`), read key by key so that every problem in a file is reported,
//! each with its `FILE:LINE:COL`, not only the first one a deserializer would stop at.
//!
//! [`Doc`] collects errors and warnings as it goes; the readers return `None` for a value
//! that is wrong (after saying why), so validation carries on past it.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{ConfigError, Location};

/// A value in the file, with its span.
pub type Value<'i> = Spanned<DeValue<'i>>;

/// One file being read: its text, where lines start, and what is wrong so far.
#[derive(Debug)]
pub struct Doc<'t> {
    text: &'t str,
    file: String,
    /// Byte offset of the start of each line, so a place is found by a binary search
    /// instead of a scan from the top: validation stays linear in the file's size.
    line_starts: Vec<usize>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

/// What kind of value it is, for "expected X, found Y".
pub fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'t> Doc<'t> {
    pub fn new(text: &'t str, path: &Path) -> Doc<'t> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Doc {
            text,
            file: path.display().to_string(),
            line_starts,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        Location {
            line,
            column: self
                .text
                .get(start..offset)
                .map_or(1, |s| s.chars().count() + 1),
        }
    }

    fn at(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            location: span.map(|s| self.location(s.start)),
            message,
        }
    }

    pub fn error(&mut self, span: Option<Range<usize>>, message: String) {
        let e = self.at(span, message);
        self.errors.push(e);
    }

    pub fn warn(&mut self, span: Range<usize>, message: String) {
        let w = self.at(Some(span), message);
        self.warnings.push(w);
    }

    /// Parses the text; syntax errors are collected (toml recovers where it can).
    pub fn parse(&mut self) -> Option<Spanned<DeTable<'t>>> {
        let (table, errors) = DeTable::parse_recoverable(self.text);
        for e in &errors {
            self.error(e.span(), e.message().trim_end().to_owned());
        }
        errors.is_empty().then_some(table)
    }

    /// The entries of a table, each key checked against `allowed`.
    pub fn entries<'a>(
        &mut self,
        table: &'a DeTable<'t>,
        allowed: &[&str],
    ) -> Vec<(&'a str, &'a Value<'t>)> {
        let mut out = Vec::with_capacity(table.len());
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                out.push((name, value));
            } else {
                let expected: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
                self.error(
                    Some(key.span()),
                    format!(
                        "unknown field `{name}`, expected one of {}",
                        expected.join(", ")
                    ),
                );
            }
        }
        out
    }

    /// A table, or an error naming the key and what was found.
    pub fn table<'a>(&mut self, key: &str, v: &'a Value<'t>) -> Option<&'a DeTable<'t>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                let found = kind(other);
                self.error(
                    Some(v.span()),
                    format!("{key}: expected a table, found {found}"),
                );
                None
            }
        }
    }

    /// A string, or an error naming the key, what was found and what is allowed.
    pub fn string<'a>(&mut self, key: &str, v: &'a Value<'t>, allowed: &str) -> Option<&'a str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s),
            other => {
                let found = kind(other);
                self.error(
                    Some(v.span()),
                    format!("{key}: expected {allowed}, found {found}"),
                );
                None
            }
        }
    }

    pub fn boolean(&mut self, key: &str, v: &Value<'t>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                let found = kind(other);
                self.error(
                    Some(v.span()),
                    format!("{key}: expected true or false, found {found}"),
                );
                None
            }
        }
    }

    /// A whole number from 1 to `max`.
    pub fn count(&mut self, key: &str, v: &Value<'t>, max: usize, unit: &str) -> Option<usize> {
        let n = integer(v.get_ref());
        let ok = n
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=max).contains(n));
        if ok.is_none() {
            let shown = shown(v.get_ref());
            self.error(
                Some(v.span()),
                format!("{key}: {shown} is out of range; allowed: 1-{max} {unit}"),
            );
        }
        ok
    }

    /// One value or a list of values: each item checked by `parse`, which says what is
    /// wrong with an item it refuses (or `None`: "not valid; expected {allowed}").
    pub fn each<T>(
        &mut self,
        key: &str,
        v: &Value<'t>,
        allowed: &str,
        parse: impl Fn(&DeValue<'t>) -> Result<T, Option<String>>,
    ) -> Vec<T> {
        // Each item with its own place: an error in a list points at the item.
        let items: Vec<(&DeValue<'t>, std::ops::Range<usize>)> = match v.get_ref() {
            DeValue::Array(items) if items.is_empty() => {
                self.error(
                    Some(v.span()),
                    format!("{key}: empty list; expected {allowed}"),
                );
                return Vec::new();
            }
            DeValue::Array(items) => items.iter().map(|i| (i.get_ref(), i.span())).collect(),
            one => vec![(one, v.span())],
        };
        let mut out = Vec::with_capacity(items.len());
        for (item, span) in items {
            match parse(item) {
                Ok(t) => out.push(t),
                Err(why) => {
                    let why = why.unwrap_or_else(|| format!("is not valid; expected {allowed}"));
                    self.error(Some(span), format!("{key}: {} {why}", shown(item)));
                }
            }
        }
        out
    }
}

/// An integer value, if it is one that fits.
pub fn integer(v: &DeValue<'_>) -> Option<i64> {
    match v {
        DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix()).ok(),
        _ => None,
    }
}

/// A value as written: `"text"` for strings, `` `70000` `` otherwise.
pub fn shown(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("{s:?}"),
        DeValue::Integer(n) => format!("`{n}`"),
        DeValue::Float(f) => format!("`{f}`"),
        DeValue::Boolean(b) => format!("`{b}`"),
        DeValue::Datetime(d) => format!("`{d}`"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}
