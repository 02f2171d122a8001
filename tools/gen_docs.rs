//! Regenerates the man pages and shell completions in `dist/` from the clap definitions
//! (`src/cli.rs`) and the documented example config (`config/portsentinel.toml`):
//!
//!     cargo run --example gen-docs            # writes dist/
//!     cargo run --example gen-docs -- DIR     # writes DIR (the test compares the two)
//!
//! The Debian package installs what this writes; `tests/docs.rs` fails when `dist/` is not
//! what the code says.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| root.join("dist"), PathBuf::from);
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;

    let cli = portsentinel::cli::Cli::command();
    write_man(&man.join("portsentinel.8"), cli.clone())?;
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("portsentinel-{}", sub.get_name());
        // clap takes a name that lives as long as the program: this one does.
        let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
        let page = sub
            .clone()
            .name(leaked)
            .bin_name(format!("portsentinel {}", sub.get_name()));
        write_man(&man.join(format!("{name}.8")), page)?;
    }
    let example = std::fs::read_to_string(root.join("config/portsentinel.toml"))?;
    std::fs::write(man.join("portsentinel.toml.5"), config_page(&example))?;

    for (shell, file) in [
        (Shell::Bash, "portsentinel.bash"),
        (Shell::Zsh, "_portsentinel"),
        (Shell::Fish, "portsentinel.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cli.clone(), "portsentinel", &mut buf);
        std::fs::write(completions.join(file), buf)?;
    }
    Ok(())
}

fn write_man(path: &Path, cmd: clap::Command) -> std::io::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .source(format!("portsentinel {}", env!("CARGO_PKG_VERSION")))
        .manual("System Administration")
        .render(&mut buf)?;
    std::fs::write(path, buf)
}

/// Text as roff shows it: backslashes and leading dots or quotes escaped.
fn roff(line: &str) -> String {
    let line = line.replace('\\', "\\e");
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line
    }
}

/// portsentinel.toml(5): the format, then the documented example, every key with its
/// default and its comment.
fn config_page(example: &str) -> String {
    let mut p = String::new();
    let version = env!("CARGO_PKG_VERSION");
    let _ = writeln!(
        p,
        ".TH PORTSENTINEL.TOML 5 \"\" \"portsentinel {version}\" \"File Formats\""
    );
    p.push_str(
        ".SH NAME\n\
         portsentinel.toml \\- configuration of the portsentinel daemon and its commands\n\
         .SH SYNOPSIS\n\
         /etc/portsentinel/config.toml\n\
         .br\n\
         /etc/portsentinel/config.d/*.toml\n\
         .SH DESCRIPTION\n\
         The daemon (\\fBportsentinel run\\fR) and the commands \\fBscan\\fR, \\fBexplain\\fR, \
         \\fBbaseline\\fR and \\fBnotify-agent\\fR read /etc/portsentinel/config.toml when it \
         exists, or the file given with \\fB--config\\fR. Every key is optional: with no file \
         at all, the built-in defaults apply.\n\
         .PP\n\
         Every *.toml file in config.d/ beside the config file is read after it, in name \
         order; such a file may hold [[allow]] and [[expect]] entries only. A reload \
         (SIGHUP, \\fBsystemctl reload portsentinel\\fR) reads them all again; changes to \
         daemon.log, daemon.state_directory, [events], [notify], [metrics] and \
         [alertmanager] take effect at the next restart.\n\
         .PP\n\
         Errors name the file, line and column, the key, the bad value and what is allowed; \
         \\fBportsentinel check-config\\fR reports every one. Durations are written \
         \"500ms\", \"2s\", \"1m\".\n\
         .SH KEYS\n\
         The documented example below lists every table and key, each with its default \
         and what it does.\n\
         .PP\n\
         .RS 4\n\
         .nf\n",
    );
    for line in example.lines() {
        p.push_str(&roff(line));
        p.push('\n');
    }
    p.push_str(
        ".fi\n\
         .RE\n\
         .SH FILES\n\
         .TP\n\
         /etc/portsentinel/config.toml\n\
         The config file.\n\
         .TP\n\
         /etc/portsentinel/config.d/\n\
         Drop-in files of [[allow]] and [[expect]] entries, e.g. the output of \
         \\fBportsentinel baseline\\fR.\n\
         .SH SEE ALSO\n\
         \\fBportsentinel\\fR(8), \\fBportsentinel-run\\fR(8), \\fBportsentinel-check-config\\fR(8), \
         \\fBjournalctl\\fR(1)\n",
    );
    p
}
