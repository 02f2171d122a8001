//! `portsentinel notify-agent`: the per-user desktop notifier.
//!
//! Subscribes to the daemon's event socket and shows a notification for each alert. While
//! the daemon is down or restarting it reconnects with a growing pause (0.2 s to 30 s); what
//! it has shown it remembers, so the alerts a daemon replays after a restart or a reconnect
//! are not shown twice. Problems (no permission on the socket, no session bus) are said
//! once, not on every retry.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::UnixStream;
use tokio::signal::unix::{SignalKind, signal};

use super::Failure;
use crate::cli::NotifyAgentArgs;
use crate::latch::Latch;
use crate::model::wire::{MAX_LINE, Message};
use crate::sink::desktop::{self, Desktop};
use crate::sink::{LogMode, LogSink, RecordSink, socket};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub fn run(args: &NotifyAgentArgs) -> Result<ExitCode, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    // Under the user unit its lines are native journal records, else text on stderr.
    let mut log = LogSink::start(LogMode::Auto);
    super::init_diagnostics(log.handle().map(|h| Arc::new(h) as Arc<dyn RecordSink>));
    // The daemon's config says where its socket is, and how alerts are folded.
    let config = crate::config::load_or_default(args.config.config.as_deref())?;
    let path = args
        .socket
        .clone()
        .or_else(|| config.events.socket.clone())
        .unwrap_or_else(socket::default_path);
    let burst_window = args.burst_window.unwrap_or(config.notify.burst_window);
    let result = runtime.block_on(agent(path, burst_window));
    log.close();
    result?;
    Ok(ExitCode::SUCCESS)
}

fn connect_hint(path: &Path, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot read events from {}: {e}. Only root and the `portsentinel` group may: \
             `sudo usermod -aG portsentinel $USER`, then log in again",
            path.display()
        ),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
            "cannot read events from {}: {e}; is the daemon running (`systemctl status portsentinel`)?",
            path.display()
        ),
        _ => format!("cannot read events from {}: {e}", path.display()),
    }
}

async fn agent(path: PathBuf, burst_window: Duration) -> Result<(), Failure> {
    let mut term = signal(SignalKind::terminate()).map_err(anyhow::Error::from)?;
    let mut int = signal(SignalKind::interrupt()).map_err(anyhow::Error::from)?;
    let mut desktop = Desktop::new(burst_window);
    let mut backoff = BACKOFF_MIN;
    let mut connection = Latch::new("", "retrying", "connected");
    loop {
        let stream = tokio::select! {
            s = UnixStream::connect(&path) => s,
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        };
        match stream {
            Ok(stream) => {
                connection.recover();
                tracing::info!("connected to {}", path.display());
                backoff = BACKOFF_MIN;
                let ended = tokio::select! {
                    r = read_events(stream, &mut desktop) => r,
                    _ = term.recv() => return Ok(()),
                    _ = int.recv() => return Ok(()),
                };
                let problem = format!(
                    "event stream from {} ended: {ended}; reconnecting",
                    path.display()
                );
                tracing::warn!("{problem}");
            }
            Err(e) => {
                if let Some(problem) = connection.fail(connect_hint(&path, &e)) {
                    tracing::error!("{problem}");
                }
            }
        }
        // While waiting to reconnect, notifications that could not be shown are retried.
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            let due = desktop.next_flush();
            tokio::select! {
                _ = &mut pause => break,
                _ = desktop::until(due), if due.is_some() => desktop.flush().await,
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Reads events until the stream ends; returns why it ended.
async fn read_events(mut stream: UnixStream, desktop: &mut Desktop) -> String {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let due = desktop.next_flush();
        let n = tokio::select! {
            n = stream.read(&mut chunk) => n,
            _ = desktop::until(due), if due.is_some() => {
                desktop.flush().await;
                continue;
            }
        };
        let n = match n {
            Ok(0) => return "the daemon closed it".into(),
            Ok(n) => n,
            Err(e) => return e.to_string(),
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            match Message::from_line(&text) {
                Ok(Message::Event(e)) => desktop.plan(&e),
                Ok(Message::Hello(h)) => {
                    tracing::info!("{} ({} active alert(s))", h.daemon, h.active_alerts)
                }
                Err(e) => tracing::warn!("ignoring a line from the daemon: {e}"),
            }
        }
        // Everything read so far in one go: a burst updates each notification once.
        desktop.flush().await;
        if buf.len() > MAX_LINE {
            return format!("a line longer than {MAX_LINE} bytes");
        }
    }
}
