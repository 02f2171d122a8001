//! `dist/` holds what the code says: the man pages and shell completions that
//! tools/gen_docs.rs writes from the clap definitions and the documented example config.

mod util;

use std::collections::BTreeMap;
use std::path::Path;

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["man", "completions"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let e = e.unwrap();
            let name = format!("{sub}/{}", e.file_name().to_string_lossy());
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

#[test]
fn dist_is_what_the_clap_definitions_and_the_example_config_say() {
    let generator = util::bin().parent().unwrap().join("examples/gen-docs");
    assert!(
        generator.exists(),
        "{} is missing: run `cargo build --examples`",
        generator.display()
    );
    let fresh = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&generator)
        .arg(fresh.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("dist"));
    let generated = files(fresh.path());
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "dist/ has other files than the generator writes: run `cargo run --example gen-docs`"
    );
    for (name, bytes) in &generated {
        assert!(
            committed[name] == *bytes,
            "dist/{name} is stale: run `cargo run --example gen-docs`"
        );
    }
    // A page per subcommand, and the config's page holds every table of the example.
    for sub in [
        "run",
        "scan",
        "explain",
        "history",
        "baseline",
        "check-config",
        "notify-agent",
    ] {
        assert!(
            generated.contains_key(&format!("man/portsentinel-{sub}.8")),
            "{sub}"
        );
    }
    let config = String::from_utf8_lossy(&generated["man/portsentinel.toml.5"]);
    for table in [
        "[daemon]",
        "[events]",
        "[metrics]",
        "[alertmanager]",
        "[policy]",
        "alert_on",
    ] {
        assert!(
            config.contains(table),
            "{table} not in portsentinel.toml(5)"
        );
    }
}
