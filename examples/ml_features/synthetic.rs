//! Synthetic card transactions, in arrival order: hot users, users idle for more than a day,
//! duplicate timestamps, events arriving late within the allowed lateness and beyond it, and a
//! few malformed lines. Deterministic for a given size, seed and end time.

use crate::txn::Txn;
use weir_examples::mix;

/// How many events and users, the seed, the end of the event times and their span (ms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) events: u64,
    pub(crate) users: u64,
    pub(crate) seed: u64,
    pub(crate) end_ms: i64,
    pub(crate) span_ms: i64,
}

const MERCHANTS: u64 = 2_000;

impl Spec {
    /// A uniform number in [0, 1) from draw `k` of event `i`.
    fn unit(&self, i: u64, k: u64) -> f64 {
        (mix(self.seed ^ mix(i.wrapping_mul(16).wrapping_add(k))) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn start_ms(&self) -> i64 {
        self.end_ms - self.span_ms
    }

    /// Event `i` and its delay (arrival minus event time).
    fn event(&self, i: u64) -> (Txn, i64) {
        let n = self.events.max(1);
        let ts = self.start_ms() + (self.span_ms as f64 * (i as f64 + self.unit(i, 0)) / n as f64) as i64;
        // Hot users: a cubed draw picks low indices far more often.
        let mut user = (self.users as f64 * self.unit(i, 1).powi(3)) as u64 % self.users.max(1);
        // Every tenth user is away for the middle half of the span plus an hour (over a day
        // with the default span of two days).
        let middle = ts - self.start_ms() > self.span_ms / 4
            && ts - self.start_ms() < self.span_ms * 3 / 4 + 3_600_000;
        if user % 10 == 9 && middle {
            user -= 1;
        }
        let merchant = (MERCHANTS as f64 * self.unit(i, 2).powi(2)) as u64;
        let amount_cents = 100 + (self.unit(i, 3) * 20_000.0) as i64;
        let u = self.unit(i, 4);
        let delay = if u < 0.005 {
            // Beyond the allowed lateness of one hour: dropped online.
            5_400_000 + (self.unit(i, 5) * 5_400_000.0) as i64
        } else if u < 0.025 {
            // Late, within the lateness.
            1 + (self.unit(i, 5) * 1_800_000.0) as i64
        } else {
            0
        };
        (Txn { user: format!("u{user}"), merchant: format!("m{merchant}"), amount_cents, ts }, delay)
    }

    /// The input lines in arrival order.
    pub(crate) fn lines(&self) -> Vec<Vec<u8>> {
        let mut arrivals: Vec<(i64, u64, Vec<u8>)> = Vec::with_capacity(self.events as usize + 64);
        for i in 0..self.events {
            let (txn, delay) = self.event(i);
            let mut line = serde_json::to_vec(&txn).unwrap_or_default();
            if self.unit(i, 6) < 0.002 {
                // Malformed: a truncated line.
                line.truncate(line.len() / 2);
            }
            arrivals.push((txn.ts + delay, i, line));
            if self.unit(i, 7) < 0.01 {
                // A second transaction of the same user at the same millisecond.
                let dup = Txn { amount_cents: txn.amount_cents + 1, ..txn };
                arrivals.push((dup.ts, i, serde_json::to_vec(&dup).unwrap_or_default()));
            }
        }
        arrivals.sort_by_key(|a| (a.0, a.1));
        arrivals.into_iter().map(|a| a.2).collect()
    }

    /// `n` label rows `(user, t)`: a tenth exactly on an event or on a window's edge after it,
    /// the rest at random times over the span and up to a day past its end.
    pub(crate) fn labels(&self, n: u64) -> Vec<(String, i64)> {
        (0..n)
            .map(|j| {
                let i = mix(self.seed ^ j ^ 0x5EED) % self.events.max(1);
                let (txn, _) = self.event(i);
                let k = mix(j) % 40;
                let t = match k {
                    0 => txn.ts,
                    1 => txn.ts + 300_000,
                    2 => txn.ts + 3_600_000,
                    3 => txn.ts + 86_400_000,
                    _ => self.start_ms() + (self.unit(j, 9) * (self.span_ms + 86_400_000) as f64) as i64,
                };
                (txn.user, t)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_has_late_duplicate_malformed_and_idle_events() {
        let spec =
            Spec { events: 20_000, users: 500, seed: 7, end_ms: 1_800_000_000_000, span_ms: 2 * 86_400_000 };
        let lines = spec.lines();
        let txns: Vec<Txn> = lines.iter().filter_map(|l| crate::txn::parse(l).ok()).collect();
        assert!(lines.len() - txns.len() > 10, "malformed lines");
        let mut newest = i64::MIN;
        let (mut within, mut beyond) = (0, 0);
        for t in &txns {
            if t.ts <= newest.saturating_sub(3_600_000) {
                beyond += 1;
            } else if t.ts < newest {
                within += 1;
            }
            newest = newest.max(t.ts);
        }
        assert!(within > 100 && beyond > 20, "{within} late within the lateness, {beyond} beyond");
        let dups = txns.windows(2).filter(|w| w[0].user == w[1].user && w[0].ts == w[1].ts).count();
        assert!(dups > 50, "{dups} duplicate timestamps");
        assert_eq!(spec.lines(), lines, "deterministic");
    }
}
