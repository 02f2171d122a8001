//! Judging again without a new look: when an allow rule's `until` passes, after a reload,
//! and the required listeners (`[[expect]]`) after each poll that changed something.

use std::time::SystemTime;

use tokio::time::Instant;

use super::{Daemon, now};
use crate::model::{Classifier, Listener};
use crate::sink::record::Record;

impl Daemon {
    /// Required listeners: records one that has gone missing, or come back.
    pub(super) fn check_expectations(&mut self) {
        let grace = self.config.daemon.restart_grace;
        let satisfied = self.tracker.satisfied();
        let expects = &self.config.policy.expect;
        let events = self.watch.update(now(), expects, &satisfied, grace);
        for e in &events {
            self.outputs.records.send(Record::from_expectation(e));
        }
        self.outputs.fleet.expectations(&events);
    }

    /// The next `until` of an allow rule still to come, worked out when the rules change
    /// or one passes (not at every turn of the loop: a config may hold 100,000 rules).
    pub(super) fn plan_expiry(&mut self) {
        let now = SystemTime::now();
        self.next_until = self
            .config
            .policy
            .allow
            .iter()
            .filter_map(|r| r.until)
            .filter(|t| *t > now)
            .min();
    }

    /// When the next `until` of an allow rule passes: the listeners it allowed are judged
    /// again then, whether or not anything else changes.
    pub fn next_expiry(&self) -> Option<Instant> {
        let next = self.next_until?;
        let wait = next.duration_since(SystemTime::now()).unwrap_or_default();
        Some(Instant::now() + wait)
    }

    /// An `until` has passed: every listener is judged again, and the next one planned.
    pub fn expired(&mut self) {
        self.plan_expiry();
        self.rejudge_all();
    }

    /// A socket that other programs hold too is judged as each of its holders (see
    /// [`Classifier::judge_as_holders`]); the tracker then records a change of hands,
    /// and the alert.
    pub(super) fn judge_holders(&self, listeners: &mut [Listener]) {
        let c = Classifier {
            registry: &self.registry,
            policy: &self.config.policy,
            host: &*self.host,
        };
        for l in listeners.iter_mut() {
            let also = self.poller.also_held_by(l);
            c.judge_as_holders(l, also);
        }
    }

    /// Every listener judged again, what that changes dispatched, and the required ones
    /// checked; the next look works the listeners out again, for their holders to be
    /// judged under the policy as it is now.
    pub(super) fn rejudge_all(&mut self) {
        self.poller.regroup();
        let mut events = Vec::new();
        let (tracker, c) = self.tracker_and_classifier();
        tracker.rejudge(now(), &|l| c.classify(l), &mut events);
        let budget = self.interval();
        self.outputs.dispatch(events, &self.tracker, budget);
        self.check_expectations();
        self.outputs.fleet.settle(&self.tracker);
    }
}
