//! `portsentinel::config::parse`: TOML syntax, then validation into a `Config`.
//!
//! Invariants: no panic; an error's Display starts with the file label it was given,
//! and a location in it is 1-based.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

const PATH: &str = "/etc/portsentinel/config.toml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match portsentinel::config::parse(&text, Path::new(PATH)) {
        Ok(config) => {
            assert_eq!(config.file.as_deref(), Some(Path::new(PATH)));
            for rule in &config.policy.allow {
                assert!(
                    rule.origin.starts_with("config.toml:"),
                    "allow rule origin {:?}",
                    rule.origin
                );
            }
            if let Some((_, location)) = &config.registry_csv {
                assert!(location.line >= 1 && location.column >= 1, "{location:?}");
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("{PATH}:")),
                "error does not start with the path label: {shown:?}"
            );
            assert!(!e.0.is_empty(), "an error without any: {shown:?}");
            for l in e.0.iter().filter_map(|e| e.location.as_ref()) {
                assert!(l.line >= 1 && l.column >= 1, "{l:?} in {shown:?}");
                assert!(
                    l.line <= text.split('\n').count(),
                    "line {} past the end of a {}-line text: {shown:?}",
                    l.line,
                    text.split('\n').count()
                );
            }
        }
    }
});
