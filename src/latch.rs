//! "Warn once, then say when it recovered": one latch for every optional capability that
//! can fail and come back (the socket source, the state file, journald, the desktop).
//!
//! A problem is reported the first time it happens and again only when it changes (a
//! different error); the recovery is reported once, naming the problem that ended. The
//! latch words both messages, so every part of the daemon says them the same way.

/// Tracks one capability's failing/recovered state, and words both messages.
#[derive(Debug, Clone)]
pub struct Latch {
    /// How a failure starts: `sock_diag failed`, `cannot save state`.
    failed: &'static str,
    /// What happens meanwhile: `reading /proc/net instead until it works again`.
    meanwhile: &'static str,
    /// How the recovery is said: `sock_diag works again`.
    recovered: &'static str,
    failing: Option<String>,
}

impl Latch {
    pub const fn new(
        failed: &'static str,
        meanwhile: &'static str,
        recovered: &'static str,
    ) -> Latch {
        Latch {
            failed,
            meanwhile,
            recovered,
            failing: None,
        }
    }

    /// Records a failure. Returns the message to report, `FAILED: PROBLEM; MEANWHILE`, the
    /// first time and whenever the problem changes; `None` for a repeat.
    pub fn fail(&mut self, problem: impl Into<String>) -> Option<String> {
        let problem = problem.into();
        if self.failing.as_deref() == Some(problem.as_str()) {
            return None;
        }
        let mut message = String::with_capacity(problem.len() + 64);
        for part in [self.failed, problem.as_str(), self.meanwhile] {
            if part.is_empty() {
                continue;
            }
            if !message.is_empty() {
                message.push_str(if message.len() == self.failed.len() {
                    ": "
                } else {
                    "; "
                });
            }
            message.push_str(part);
        }
        self.failing = Some(problem);
        Some(message)
    }

    /// Records a success. Returns `RECOVERED (it failed with: PROBLEM)` when it had been
    /// failing; `None` otherwise.
    pub fn recover(&mut self) -> Option<String> {
        let was = self.failing.take()?;
        Some(format!("{} (it failed with: {was})", self.recovered))
    }

    pub fn is_failing(&self) -> bool {
        self.failing.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_a_problem_once_and_its_end_once() {
        let mut l = Latch::new(
            "sock_diag failed",
            "reading /proc/net instead",
            "sock_diag works again",
        );
        assert_eq!(l.recover(), None);
        assert_eq!(
            l.fail("EACCES").as_deref(),
            Some("sock_diag failed: EACCES; reading /proc/net instead")
        );
        assert_eq!(l.fail("EACCES"), None, "a repeat is not said again");
        assert!(l.fail("ENOMEM").is_some(), "a different problem is");
        assert!(l.is_failing());
        assert_eq!(
            l.recover().as_deref(),
            Some("sock_diag works again (it failed with: ENOMEM)")
        );
        assert_eq!(l.recover(), None);
        assert!(
            l.fail("EACCES").is_some(),
            "after a recovery it is new again"
        );
        let mut bare = Latch::new("", "retrying", "connected");
        assert_eq!(
            bare.fail("no socket").as_deref(),
            Some("no socket; retrying")
        );
    }
}
