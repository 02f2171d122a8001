//! The shape the tree keeps: the loop stays a loop, the sinks only format what the model
//! worked out, and no function grows past what a reader can hold.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source tree") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn the_daemon_file_holds_the_loop_and_little_else() {
    let text = std::fs::read_to_string(src("src/daemon.rs")).expect("read src/daemon.rs");
    let lines = text.lines().count();
    assert!(
        lines < 300,
        "src/daemon.rs has {lines} lines: move what is not the loop into src/daemon/"
    );
}

#[test]
fn no_sink_knows_the_iana_registry() {
    let mut files = Vec::new();
    rust_files(&src("src/sink"), &mut files);
    assert!(!files.is_empty());
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read a sink");
        for (n, line) in text.lines().enumerate() {
            if line.contains("registry") {
                found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "sinks format the classification, they do not consult the registry:\n{}",
        found.join("\n")
    );
}

/// The functions of a rustfmt-formatted file longer than `limit` lines: a function runs
/// from its `fn` line to the first `}` at the same indentation.
fn long_functions(text: &str, limit: usize) -> Vec<(usize, usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let signature = trimmed
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("const ")
            .trim_start_matches("async ")
            .trim_start_matches("unsafe ");
        if !signature.starts_with("fn ") || trimmed.starts_with("//") {
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let close = format!("{indent}}}");
        // Find where the body opens; a declaration without one ends in `;`.
        let mut body = None;
        for (j, l) in lines.iter().enumerate().skip(i) {
            let l = l.trim_end();
            if l.ends_with('{') {
                body = Some(j);
                break;
            }
            if l.ends_with(';') || (l.contains('{') && l.ends_with('}')) {
                break;
            }
        }
        let Some(open) = body else { continue };
        if let Some(end) = (open..lines.len()).find(|&j| lines[j] == close) {
            let length = end - i + 1;
            if length > limit {
                long.push((i + 1, length, trimmed.to_owned()));
            }
        }
    }
    long
}

#[test]
fn the_length_check_sees_a_long_function() {
    let body = "        x += 1;\n".repeat(90);
    let text = format!(
        "impl A {{\n    pub(super) fn long(\n        x: u8,\n    ) -> u8 {{\n{body}    }}\n\n    fn short() -> u8 {{ 1 }}\n}}\n"
    );
    let long = long_functions(&text, 80);
    assert_eq!(long.len(), 1, "{long:?}");
    assert_eq!(long[0].0, 2);
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let mut files = Vec::new();
    rust_files(&src("src"), &mut files);
    let mut found = Vec::new();
    for f in files {
        // The generated IANA table is data, not code.
        if f.ends_with("registry/table.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read a source file");
        for (line, length, head) in long_functions(&text, 80) {
            found.push(format!("{}:{line}: {length} lines: {head}", f.display()));
        }
    }
    assert!(found.is_empty(), "split these:\n{}", found.join("\n"));
}
