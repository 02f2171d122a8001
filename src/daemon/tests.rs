//! The loop in-process, in virtual time (`tokio::time::pause`): a scripted socket table
//! and owners, records collected in memory, the real tracker, state file and fan-out.
//! Grace and quiet times of minutes pass in microseconds, and a poll's lateness is exact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;
use crate::model::classify::{TestHost, path_file_id};
use crate::model::{Inode, Owner, Pid, Process, Protocol, Socket, UnknownOwner};
use crate::sink::diagnostics::RecordLayer;
use crate::sink::fanout::Fanout;
use crate::sink::socket::{Admission, Join, Peer};
use crate::sink::{Record, RecordSink};
use crate::source::owners::AttributionStats;
use crate::source::{Backend, OwnerSource, SocketSource, SourceError};
use crate::state::StateStore;

/// The machine as the test scripts it: sockets and who holds them.
#[derive(Debug, Default, Clone)]
struct World {
    sockets: Arc<Mutex<Vec<Socket>>>,
    owners: Arc<Mutex<HashMap<Inode, Owner>>>,
}

impl World {
    /// A TCP listener on 0.0.0.0:`port` held by `pid` running `exe`.
    fn open(&self, port: u16, inode: u64, pid: u32, exe: &str) {
        self.sockets.lock().unwrap().push(Socket {
            protocol: Protocol::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port,
            v6only: None,
            uid: 0,
            inode: Inode(inode),
            cookie: 0,
            netns: 0,
            portless: None,
            zone: None,
        });
        let process = Process {
            pid: Pid(pid),
            name: exe.rsplit('/').next().unwrap_or(exe).to_owned(),
            exe: Some(exe.to_owned()),
            cmdline: vec![exe.to_owned()],
            uid: Some(0),
            user: Some("root".to_owned()),
            unit: None,
            name_lossy: false,
            exe_file: Some(path_file_id(exe)),
            mount_ns: Some(1),
            start_time: u64::from(pid),
            container: None,
            ns_pid: None,
        };
        let owner = Owner::Process(Arc::new(process));
        self.owners.lock().unwrap().insert(Inode(inode), owner);
    }

    fn close(&self, inode: u64) {
        self.sockets.lock().unwrap().retain(|s| s.inode.0 != inode);
    }
}

impl SocketSource for World {
    fn listeners(&mut self, out: &mut Vec<Socket>) -> Result<Backend, SourceError> {
        out.clone_from(&self.sockets.lock().unwrap());
        Ok(Backend::SockDiag)
    }
}

impl OwnerSource for World {
    fn attribute(&mut self, _: &[Socket], _: bool) -> AttributionStats {
        AttributionStats::default()
    }

    fn owner_of(&self, socket: &Socket) -> Owner {
        let owners = self.owners.lock().unwrap();
        let owner = owners.get(&socket.inode).cloned();
        owner.unwrap_or(Owner::Unknown(UnknownOwner::Kernel))
    }
}

/// Records, in memory.
#[derive(Debug, Default)]
struct Collect(Mutex<Vec<Record>>);

impl RecordSink for Collect {
    fn send(&self, record: Record) {
        self.0.lock().unwrap().push(record);
    }
}

impl Collect {
    /// `(event kind, port)` of every event record so far.
    fn events(&self) -> Vec<(String, String)> {
        let records = self.0.lock().unwrap();
        let pairs = records.iter().filter_map(|r| {
            let kind = r.field("PORTSENTINEL_EVENT")?;
            Some((kind.to_owned(), r.field("LISTEN_PORT")?.to_owned()))
        });
        pairs.collect()
    }

    fn count(&self, kind: &str) -> usize {
        self.events().iter().filter(|(k, _)| k == kind).count()
    }

    fn messages(&self) -> Vec<String> {
        let records = self.0.lock().unwrap();
        records.iter().map(|r| r.message.clone()).collect()
    }

    fn field_of(&self, kind: &str, field: &str) -> Option<String> {
        let records = self.0.lock().unwrap();
        let r = records
            .iter()
            .find(|r| r.field("PORTSENTINEL_EVENT") == Some(kind))?;
        r.field(field).map(str::to_owned)
    }
}

/// A supervisor that is told nothing it needs to act on.
struct Quiet;

impl Supervisor for Quiet {
    fn ready(&self, _: &str) {}
    fn reloading(&self) {}
    fn status(&self, _: &str) {}
    fn watchdog(&self) {}
    fn stopping(&self) {}
    fn watchdog_period(&self) -> Option<Duration> {
        None
    }
}

/// A daemon on the world, running on its own task.
struct Running {
    requests: mpsc::Sender<Request>,
    task: JoinHandle<()>,
    records: Arc<Collect>,
}

/// The state and config directory a test (and a restarted daemon) uses.
fn dir_with_config(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), text).unwrap();
    dir
}

fn start(world: &World, dir: &tempfile::TempDir, fanout: bool) -> Running {
    let layers = Layers {
        file: Some(dir.path().join("config.toml")),
        ..Layers::default()
    };
    let loaded = layers.load().expect("a valid test config");
    let records = Arc::new(Collect::default());
    let delivery = fanout.then(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Fanout::new(loaded.0.events.buffer, None).run(rx));
        tx
    });
    let edges = Edges {
        source: Box::new(world.clone()),
        owners: Box::new(world.clone()),
        host: Box::new(TestHost),
        records: records.clone(),
        delivery,
        state: StateStore::new(dir.path().to_owned(), "boot".into(), Some(1)),
        supervisor: Box::new(Quiet),
        instant: crate::daemon::InstantDetection::Off,
        fleet: crate::daemon::Fleet::default(),
    };
    let daemon = Daemon::new(layers, loaded, edges);
    let (requests, incoming) = mpsc::channel(8);
    let task = tokio::spawn(run(daemon, incoming));
    Running {
        requests,
        task,
        records,
    }
}

impl Running {
    async fn stop(self) -> Arc<Collect> {
        self.requests.send(Request::Stop).await.unwrap();
        self.task.await.unwrap();
        self.records
    }
}

/// Lets `secs` of virtual time pass (the daemon polls meanwhile).
async fn pass(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

const CONFIG: &str = "[daemon]\ninterval = \"1s\"\nrestart_grace = \"3s\"\nrealert_after = \"10m\"\n[events]\nsocket = \"\"\n";

#[tokio::test(start_paused = true)]
async fn a_restart_within_the_grace_window_is_one_restart_and_a_close_waits_it_out() {
    let world = World::default();
    let dir = dir_with_config(CONFIG);
    world.open(867, 10, 100, "/usr/bin/labd");
    let d = start(&world, &dir, false);
    pass(1.5).await;
    world.close(10);
    pass(2.0).await;
    world.open(867, 11, 101, "/usr/bin/labd");
    pass(2.0).await;
    assert_eq!(d.records.count("alert-cleared"), 0, "back within grace");
    world.close(11);
    pass(2.5).await;
    assert_eq!(d.records.count("alert-cleared"), 0, "not yet: grace is 3 s");
    pass(2.0).await;
    let records = d.stop().await;
    let kinds: Vec<_> = records.events().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "listener-present",
            "alert-raised",
            "listener-restarted",
            "alert-cleared"
        ]
    );
    let previous = records.field_of("listener-restarted", "LISTENER_PREVIOUS_PID");
    assert_eq!(previous.as_deref(), Some("100"));
}

#[tokio::test(start_paused = true)]
async fn a_flapping_listener_is_alerted_again_only_after_the_quiet_time() {
    let world = World::default();
    let dir = dir_with_config(CONFIG);
    let d = start(&world, &dir, false);
    pass(0.5).await;
    for round in 0..3u64 {
        world.open(867, 20 + round, 200 + round as u32, "/tmp/flap");
        pass(2.0).await;
        world.close(20 + round);
        pass(5.0).await;
    }
    assert_eq!(d.records.count("alert-raised"), 1, "once in the quiet time");
    assert_eq!(d.records.count("listener-opened"), 2);
    let suppressed = d.records.field_of("listener-opened", "ALERT_SUPPRESSED");
    assert_eq!(suppressed.as_deref(), Some("flapping"));
    pass(600.0).await;
    world.open(867, 30, 300, "/tmp/flap");
    pass(2.0).await;
    let records = d.stop().await;
    assert_eq!(records.count("alert-raised"), 2, "again after 10 minutes");
}

#[tokio::test(start_paused = true)]
async fn a_reload_judges_every_listener_again() {
    let world = World::default();
    let dir = dir_with_config(CONFIG);
    world.open(867, 10, 100, "/usr/bin/labd");
    world.open(22, 11, 101, "/usr/sbin/sshd");
    let d = start(&world, &dir, false);
    pass(1.5).await;
    let allowed = format!(
        "{CONFIG}[policy]\nalert_on = [\"well-known\"]\n[[allow]]\nname = \"lab\"\nport = 867\nexe = \"/usr/bin/labd\"\n"
    );
    std::fs::write(dir.path().join("config.toml"), allowed).unwrap();
    d.requests.send(Request::Reload).await.unwrap();
    pass(1.5).await;
    let records = d.stop().await;
    let events = records.events();
    assert!(
        events.contains(&("alert-cleared".into(), "867".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&("alert-raised".into(), "22".into())),
        "{events:?}"
    );
    let detail = records.field_of("alert-cleared", "EVENT_DETAIL").unwrap();
    assert!(
        detail.starts_with("allowed after config reload: allowed by [[allow]] \"lab\""),
        "{detail}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_asked_while_one_reads_reads_again() {
    let world = World::default();
    let dir = dir_with_config(CONFIG);
    world.open(867, 10, 100, "/usr/bin/labd");
    let d = start(&world, &dir, false);
    pass(1.5).await;
    d.requests.send(Request::Reload).await.unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    // Edited after the first reload began to read: the second request must not be lost.
    let allowed = format!("{CONFIG}[[allow]]\nport = 867\nexe = \"/usr/bin/labd\"\n");
    std::fs::write(dir.path().join("config.toml"), allowed).unwrap();
    d.requests.send(Request::Reload).await.unwrap();
    pass(1.5).await;
    let records = d.stop().await;
    assert_eq!(records.count("alert-cleared"), 1, "{:?}", records.events());
}

#[tokio::test(start_paused = true)]
async fn alerts_carry_over_a_restart_of_the_daemon() {
    let world = World::default();
    let dir = dir_with_config(CONFIG);
    world.open(867, 10, 100, "/usr/bin/labd");
    world.open(868, 11, 101, "/usr/bin/labd");
    let first = start(&world, &dir, false).stop().await;
    assert_eq!(first.count("alert-raised"), 2);
    // While it was down, 868 closed and 867's program restarted with a new pid.
    world.close(11);
    world.close(10);
    world.open(867, 12, 102, "/usr/bin/labd");
    let second = start(&world, &dir, false);
    pass(1.5).await;
    let records = second.stop().await;
    assert_eq!(records.count("alert-raised"), 0, "{:?}", records.events());
    assert_eq!(
        records.events(),
        [
            ("listener-present".to_owned(), "867".to_owned()),
            ("alert-cleared".to_owned(), "868".to_owned())
        ]
    );
}

/// The poll loop never waits for a subscriber: one that connects and never reads, then
/// a burst of 1,000 listeners; every poll starts on time (to the microsecond, in virtual
/// time), and the stalled subscriber is dropped.
#[tokio::test(start_paused = true)]
async fn a_stalled_subscriber_in_a_burst_delays_no_poll() {
    let world = World::default();
    let dir = dir_with_config("[daemon]\ninterval = \"1s\"\n[events]\nbuffer = 64\n");
    let d = start(&world, &dir, true);
    let diagnostics = d.records.clone();
    let layer = RecordLayer::new(diagnostics.clone());
    let _guard = tracing::subscriber::set_default(tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        layer,
    ));
    let (stream, _held_never_read) = tokio::net::UnixStream::pair().unwrap();
    let peer = Peer {
        pid: None,
        uid: Some(0),
    };
    let slot = Admission::new(1, 1).admit(0).unwrap();
    let join = Join { stream, peer, slot };
    d.requests.send(Request::Subscribe(join)).await.unwrap();
    pass(1.5).await;
    for i in 0..1000u16 {
        world.open(10_000 + i, 1000 + u64::from(i), 5000, "/tmp/burst");
    }
    pass(5.0).await;
    let records = d.stop().await;
    assert_eq!(
        records.count("alert-raised"),
        0,
        "registered ports: no alert"
    );
    assert_eq!(records.count("listener-opened"), 1000);
    let dropped = records
        .messages()
        .into_iter()
        .any(|m| m.contains("event subscriber") && m.contains("dropped"));
    assert!(dropped, "{:?}", records.messages());
    let stopping = records
        .messages()
        .into_iter()
        .find(|m| m.starts_with("portsentinel stopping"))
        .unwrap();
    assert!(stopping.ends_with("max late 0 ms"), "{stopping}");
}
