//! The Prometheus exposition of the daemon's metrics: the metric families and their
//! labels, registered once with their help texts, and encoded in either text format at
//! most once per change of the values, whatever the number of readers.
//!
//! What the values are, and when they change, is the metrics sink's business
//! ([`crate::sink::metrics`]); this module is only the families and their encoding.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::EventKind;
use crate::model::listener::UnknownOwner;
use crate::sink::fleet::AlertLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub protocol: String,
    pub range: String,
    pub iana_status: String,
    pub reach: String,
}

/// One active alert: its name and severity, then the labels Alertmanager gets too.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabelSet {
    pub alertname: String,
    pub severity: String,
    #[prometheus(flatten)]
    pub labels: AlertLabels,
}

/// A family keyed by one label whose name is fixed per family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabel {
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// One encoding, and the generation of the values it holds.
type Encoded = (u64, Arc<str>);

/// The registry and its encoded forms, shared by the loop, the textfile writer and the
/// endpoint.
#[derive(Debug)]
pub struct Exposition {
    pub registry: Registry,
    /// Bumped by every change of a value.
    pub generation: AtomicU64,
    /// The last encoding of each format, with the generation it encodes.
    pub cache: Mutex<[Option<Encoded>; 2]>,
}

/// The two text formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' text format 0.0.4: node_exporter's textfile collector reads only this.
    Text,
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Exposition {
    /// Every metric registered, at its starting value, and the handles that change them.
    pub fn new() -> (Arc<Exposition>, Families) {
        let mut registry = Registry::with_prefix("portsentinel");
        let m = Families {
            listeners: Family::default(),
            alerts: Family::default(),
            alert_active: Family::default(),
            events: Family::default(),
            polls: Family::default(),
            misses: Family::default(),
            fallback: Family::default(),
            poll_duration: Histogram::new(poll_buckets()),
        };
        register(&mut registry, &m);
        let exposition = Arc::new(Exposition {
            registry,
            generation: AtomicU64::new(1),
            cache: Mutex::new([None, None]),
        });
        (exposition, m)
    }

    /// A value changed: the next reader gets a new encoding.
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The metrics now, in `format`: encoded again only when a value changed.
    pub fn encoded(&self, format: Format) -> Arc<str> {
        let generation = self.generation.load(Ordering::Acquire);
        let slot = format as usize;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, text)) = &cache[slot]
            && *g == generation
        {
            return Arc::clone(text);
        }
        let mut text = String::with_capacity(4096);
        let encoded = match format {
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
        };
        if encoded.is_err() {
            text = "# encoding failed\n".to_owned();
        }
        let text: Arc<str> = text.into();
        cache[slot] = Some((generation, Arc::clone(&text)));
        text
    }
}

/// The buckets of the poll duration: 0.5 ms to about 4 s.
fn poll_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 14)
}

/// The metric families: the handles that change the values the exposition encodes.
#[derive(Debug)]
pub struct Families {
    pub listeners: Family<ListenerLabels, Gauge>,
    pub alerts: Family<SeverityLabel, Gauge>,
    pub alert_active: Family<AlertLabelSet, Gauge>,
    pub events: Family<KindLabel, Counter>,
    pub polls: Family<BackendLabel, Counter>,
    pub misses: Family<ReasonLabel, Counter>,
    pub fallback: Family<SourceLabel, Gauge>,
    pub poll_duration: Histogram,
}

/// Registers every metric, with the label sets that exist from the start at 0.
fn register(registry: &mut Registry, f: &Families) {
    let Families {
        listeners,
        alerts,
        alert_active,
        events,
        polls,
        misses,
        fallback,
        poll_duration,
    } = f;
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    registry.register(
        "listeners",
        "Listeners now, by protocol, port range, IANA status and reach",
        listeners.clone(),
    );
    registry.register("alerts", "Active alerts by severity", alerts.clone());
    registry.register(
        "alert_active",
        "1 for each active alert, labelled by what identifies it",
        alert_active.clone(),
    );
    registry.register(
        "events",
        "Events recorded, by kind (as PORTSENTINEL_EVENT in the journal)",
        events.clone(),
    );
    registry.register(
            "polls",
            "Polls, by the source that read the socket table (proc_net: sock_diag failed; failed: neither worked)",
            polls.clone(),
        );
    registry.register(
        "attribution_misses",
        "Listeners first seen without a process named as their owner, by reason",
        misses.clone(),
    );
    registry.register(
            "source_fallback",
            "1 while a source is replaced by its fallback: sock_diag by /proc/net, ebpf (instant detection) by polling alone",
            fallback.clone(),
        );
    registry.register(
        "poll_duration_seconds",
        "Time one poll took",
        poll_duration.clone(),
    );
    registry.register("build_info", "The running version", build);
    for kind in EventKind::ALL {
        let _ = events.get_or_create(&KindLabel {
            kind: kind.as_str(),
        });
    }
    for kind in ["listener-missing", "listener-restored"] {
        let _ = events.get_or_create(&KindLabel { kind });
    }
    for reason in UnknownOwner::ALL {
        let _ = misses.get_or_create(&ReasonLabel {
            reason: reason.as_str(),
        });
    }
    for source in ["sock_diag", "ebpf"] {
        fallback.get_or_create(&SourceLabel { source }).set(0);
    }
}
