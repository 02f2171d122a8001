//! Reads that a local process can make wait for good, done on threads of their own.
//!
//! Some reads of the system wait for whatever the process they concern waits for: a
//! `stat` of a path through a FUSE mount whose server was stopped, a read of
//! `/proc/PID/cmdline` while the process holds the lock of its memory map (which it can
//! do for as long as it likes, with such a mount). Any user can set either up. So such
//! reads run on a thread, and the caller waits a bounded time for each answer; a read
//! that does not answer is left to its thread, and what it was for is not read again
//! until it ends.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

/// Most reads left waiting at once. Each holds a thread: a user who makes this many
/// reads wait costs the daemon this many threads, and then every read until one of them
/// ends.
const HUNG_MAX: usize = 4;

/// Reads of `V` for keys `K`, and the ones left waiting.
#[derive(Debug)]
pub struct Bounded<K, V> {
    name: &'static str,
    wait: Duration,
    hung: Vec<Hung<K, V>>,
}

/// A read not waited for to its end: the key it waits on, and its thread's answers.
#[derive(Debug)]
struct Hung<K, V> {
    key: K,
    answers: Receiver<(K, Option<V>)>,
}

impl<K, V> Hung<K, V> {
    /// Whether its thread still reads; what it found since is dropped (asked for again
    /// when it matters).
    fn waits(&self) -> bool {
        loop {
            match self.answers.try_recv() {
                Ok(_) => continue,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }
}

impl<K, V> Bounded<K, V>
where
    K: Clone + PartialEq + Send + 'static,
    V: Send + 'static,
{
    /// Reads on threads called `name`, each answer waited for `wait` at most.
    pub fn new(name: &'static str, wait: Duration) -> Bounded<K, V> {
        Bounded {
            name,
            wait,
            hung: Vec::new(),
        }
    }

    /// `read` of each of `keys`, in turn, on a thread; the answers that came in time. A
    /// key whose read does not answer within the wait is left to its thread and not read
    /// again until that ends (at most [`HUNG_MAX`] are left so; then nothing is read
    /// until one ends).
    pub fn read<F>(&mut self, keys: &[K], read: F) -> Vec<(K, V)>
    where
        F: Fn(&K) -> Option<V> + Clone + Send + 'static,
    {
        self.hung.retain(Hung::waits);
        let mut out = Vec::with_capacity(keys.len());
        let wanted: Vec<K> = keys
            .iter()
            .filter(|k| !self.hung.iter().any(|h| h.key == **k))
            .cloned()
            .collect();
        let mut rest = &wanted[..];
        while !rest.is_empty() && self.hung.len() < HUNG_MAX {
            let Some(answers) = self.spawn(rest, read.clone()) else {
                break;
            };
            let mut answered = 0;
            let mut take = |(key, value): (K, Option<V>)| {
                answered += 1;
                out.extend(value.map(|v| (key, v)));
            };
            rest = loop {
                match answers.recv_timeout(self.wait) {
                    Ok(answer) => take(answer),
                    Err(RecvTimeoutError::Disconnected) => break &[],
                    Err(RecvTimeoutError::Timeout) => {
                        // Answers that came in since: the read that waits is after them.
                        while let Ok(answer) = answers.try_recv() {
                            take(answer);
                        }
                        let Some(key) = rest.get(answered) else {
                            break &[];
                        };
                        self.hung.push(Hung {
                            key: key.clone(),
                            answers,
                        });
                        break &rest[answered + 1..];
                    }
                }
            };
        }
        out
    }

    /// A thread that reads `keys` in turn, answering for each.
    fn spawn<F>(&self, keys: &[K], read: F) -> Option<Receiver<(K, Option<V>)>>
    where
        F: Fn(&K) -> Option<V> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let keys = keys.to_vec();
        std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || {
                for key in keys {
                    let value = read(&key);
                    if tx.send((key, value)).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Reads of keys 0-9 answer `key * 10`, at once; reads of keys 10 and up wait until
    /// the test lets go of the lock.
    #[test]
    fn a_read_that_waits_holds_back_only_its_own_key() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let read = {
            let gate = Arc::clone(&gate);
            move |k: &u32| {
                if *k >= 10 {
                    drop(gate.lock());
                }
                Some(k * 10)
            }
        };
        // Long enough for an answer on a busy machine; the waits below cost it each.
        let mut b = Bounded::new("test", Duration::from_secs(1));
        assert_eq!(b.read(&[1, 10, 2], read.clone()), [(1, 10), (2, 20)]);
        assert_eq!(
            b.read(&[10, 3], read.clone()),
            [(3, 30)],
            "10 is not read again"
        );
        assert_eq!(
            b.read(&[11, 12, 13, 4], read.clone()),
            [],
            "four left waiting"
        );
        assert_eq!(b.read(&[5], read.clone()), [], "and then nothing is read");
        drop(held);
        // Once they have ended, every key is read again.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = b.read(&[10, 5], read.clone());
            if got == [(10, 100), (5, 50)] {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{got:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
