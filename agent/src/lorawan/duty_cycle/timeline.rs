//! The airtime timeline of one sub-band: disjoint transmissions sorted by start, with
//! prefix sums, answering "how much airtime lies in the window `[w, w + T)`" and "which
//! is the last window start in a range where that exceeds a threshold" in logarithmic
//! time per window.
//!
//! Invariant (kept by the accountant): entries never overlap each other. Then the
//! cumulative airtime `F(t)` (airtime before `t`) has slope 0 or 1, and the usage of a
//! window `U(w) = F(w + T) − F(w)` is piecewise linear with slope −1, 0 or +1, changing
//! only where `w` or `w + T` meets an entry's start or end.

/// One transmission on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimelineEntry {
    /// Start, µs on the monotonic timeline.
    pub start: u64,
    /// End (exclusive), µs.
    pub end: u64,
    /// Identifier given by the accountant.
    pub id: u64,
}

/// Disjoint transmissions of one sub-band.
#[derive(Debug, Clone, Default)]
pub(crate) struct AirtimeTimeline {
    entries: Vec<TimelineEntry>,
    /// `prefix[i]` = total airtime of `entries[..i]`; one longer than `entries`.
    prefix: Vec<u64>,
}

impl AirtimeTimeline {
    pub fn new() -> Self {
        AirtimeTimeline {
            entries: Vec::new(),
            prefix: vec![0],
        }
    }

    /// Adds an entry; the caller has checked it overlaps none.
    pub fn insert(&mut self, entry: TimelineEntry) {
        let position = self.entries.partition_point(|e| e.start < entry.start);
        self.entries.insert(position, entry);
        self.rebuild_prefix_from(position);
    }

    /// Removes the entry with `id`; whether there was one.
    pub fn remove(&mut self, id: u64) -> bool {
        match self.entries.iter().position(|e| e.id == id) {
            Some(position) => {
                self.entries.remove(position);
                self.rebuild_prefix_from(position);
                true
            }
            None => false,
        }
    }

    /// Forgets every entry that ended at or before `cutoff`.
    pub fn forget_ending_by(&mut self, cutoff: u64) {
        // Disjoint and sorted by start, so also sorted by end.
        let count = self.entries.partition_point(|e| e.end <= cutoff);
        if count > 0 {
            self.entries.drain(..count);
            self.rebuild_prefix_from(0);
        }
    }

    /// The end of the last entry, if any.
    pub fn last_end(&self) -> Option<u64> {
        self.entries.last().map(|e| e.end)
    }

    /// The entry overlapping `[start, end)` that ends last, if any.
    pub fn last_overlapping(&self, start: u64, end: u64) -> Option<TimelineEntry> {
        let count = self.entries.partition_point(|e| e.start < end);
        let candidate = *self.entries.get(count.checked_sub(1)?)?;
        (candidate.end > start).then_some(candidate)
    }

    /// `F(t)`: airtime strictly before `t`.
    pub fn airtime_before(&self, t: u64) -> u64 {
        let count = self.entries.partition_point(|e| e.start < t);
        let mut total = self.prefix[count];
        if let Some(last) = count.checked_sub(1).and_then(|i| self.entries.get(i)) {
            if last.end > t {
                total -= last.end - t;
            }
        }
        total
    }

    /// `U(w)`: airtime inside `[window_start, window_start + window_len)`.
    pub fn usage_in_window(&self, window_start: u64, window_len: u64) -> u64 {
        self.airtime_before(window_start.saturating_add(window_len))
            - self.airtime_before(window_start)
    }

    /// The largest `w` in `[lo, hi]` with `U(w) > threshold`, if any.
    ///
    /// Evaluates `U` at every breakpoint in the range (where `U` may change slope), and
    /// between the last breakpoint above the threshold and the next one below it
    /// bisects the linear piece.
    pub fn last_window_start_over(
        &self,
        lo: u64,
        hi: u64,
        window_len: u64,
        threshold: u64,
    ) -> Option<u64> {
        if lo > hi {
            return None;
        }
        let over = |w: u64| self.usage_in_window(w, window_len) > threshold;
        let mut points = vec![lo, hi];
        let first = self.entries.partition_point(|e| e.end <= lo);
        for entry in &self.entries[first..] {
            if entry.start >= hi.saturating_add(window_len) {
                break;
            }
            for point in [
                Some(entry.start),
                Some(entry.end),
                entry.start.checked_sub(window_len),
                entry.end.checked_sub(window_len),
            ]
            .into_iter()
            .flatten()
            {
                if (lo..=hi).contains(&point) {
                    points.push(point);
                }
            }
        }
        points.sort_unstable_by(|a, b| b.cmp(a));
        points.dedup();

        let mut upper = *points.first()?;
        if over(upper) {
            return Some(upper);
        }
        for &point in &points[1..] {
            if over(point) {
                // U is linear on [point, upper], above the threshold at `point` and not
                // at `upper`: bisect for the last integer above it.
                let (mut bad, mut good) = (point, upper);
                while good - bad > 1 {
                    let middle = bad + (good - bad) / 2;
                    if over(middle) {
                        bad = middle;
                    } else {
                        good = middle;
                    }
                }
                return Some(bad);
            }
            upper = point;
        }
        None
    }

    fn rebuild_prefix_from(&mut self, position: usize) {
        self.prefix.truncate(position + 1);
        let mut total = self.prefix[position];
        for entry in &self.entries[position..] {
            total += entry.end - entry.start;
            self.prefix.push(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u64 = 100;

    fn timeline(intervals: &[(u64, u64)]) -> AirtimeTimeline {
        let mut timeline = AirtimeTimeline::new();
        for (id, &(start, end)) in intervals.iter().enumerate() {
            timeline.insert(TimelineEntry {
                start,
                end,
                id: id as u64,
            });
        }
        timeline
    }

    fn brute_usage(intervals: &[(u64, u64)], window_start: u64) -> u64 {
        let window_end = window_start + WINDOW;
        intervals
            .iter()
            .map(|&(start, end)| end.min(window_end).saturating_sub(start.max(window_start)))
            .sum()
    }

    #[test]
    fn usage_matches_brute_force() {
        let intervals = [(150, 160), (10, 30), (95, 105), (300, 390)];
        let timeline = timeline(&intervals);
        for window_start in 0..500 {
            assert_eq!(
                timeline.usage_in_window(window_start, WINDOW),
                brute_usage(&intervals, window_start),
                "window at {window_start}"
            );
        }
    }

    #[test]
    fn last_window_over_threshold_matches_brute_force() {
        let intervals = [(10, 30), (95, 105), (150, 160), (300, 390)];
        let timeline = timeline(&intervals);
        for threshold in [0, 5, 10, 19, 20, 29, 30, 40, 89, 90] {
            for lo in (0..400).step_by(37) {
                for hi in (lo..450).step_by(41) {
                    let expected = (lo..=hi)
                        .rev()
                        .find(|&w| brute_usage(&intervals, w) > threshold);
                    assert_eq!(
                        timeline.last_window_start_over(lo, hi, WINDOW, threshold),
                        expected,
                        "lo {lo} hi {hi} threshold {threshold}"
                    );
                }
            }
        }
    }

    #[test]
    fn remove_forget_and_overlap() {
        let mut timeline = timeline(&[(10, 30), (95, 105), (150, 160)]);
        assert_eq!(timeline.last_overlapping(100, 151).map(|e| e.id), Some(2));
        assert_eq!(timeline.last_overlapping(105, 150), None);
        assert!(timeline.remove(1));
        assert!(!timeline.remove(1));
        assert_eq!(timeline.airtime_before(1_000), 30);
        timeline.forget_ending_by(30);
        assert_eq!(timeline.airtime_before(1_000), 10);
        assert_eq!(timeline.last_end(), Some(160));
    }
}
