//! What a forward pass costs for its number of token rows, timed online on this machine; what
//! speculation weighs its guesses against (`speculate::plan`).
//!
//! On a CPU the cost is far from linear in rows: a pass of a few rows streams every weight from
//! memory for each of them, while a pass of many reuses each block of weights from cache across
//! its rows, so a row in a pass of a hundred can cost a fraction of one in a pass of eight. A
//! straight line fitted to the small passes decoding makes (stop 22's model) therefore priced long
//! drafts far above what they cost. The curve keeps the mean time of the passes in each size class
//! (powers of two) and interpolates between classes; beyond the largest class timed it goes on
//! along its last segment, which for a curve that bends down overstates the cost: a longer draft
//! is tried only when the guesses promise to pay even then, and once tried its class is timed.

/// Size classes: rows in `(2^(c-1), 2^c]`, the last one open-ended.
const CLASSES: usize = 14;
/// Weight a class's older passes keep per new pass of that class.
const DECAY: f64 = 0.95;
/// Weight of passes a class needs before its mean is used (two passes make 1.95).
const MIN_PASSES: f64 = 1.5;
/// The shape assumed until two classes are timed: a pass's fixed part worth three rows (two
/// CPU cores, SmolLM2-135M, one-row pass ~8.5 ms, a prompt row ~2-3 ms).
const PRIOR_FIXED_ROWS: f64 = 3.0;
/// Beyond the last class a row costs at least this share of that class's mean row (a timing
/// that fell with rows would otherwise make any number of rows look free).
const MIN_MARGINAL_SHARE: f64 = 0.1;

#[derive(Debug, Clone, Copy, Default)]
struct SizeClass {
    passes: f64,
    rows: f64,
    seconds: f64,
}

/// One size class as timed: its passes' mean rows and mean seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassTiming {
    pub rows: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PassCost {
    classes: [SizeClass; CLASSES],
}

fn class_of(rows: usize) -> usize {
    let class = (usize::BITS - rows.saturating_sub(1).leading_zeros()) as usize;
    class.min(CLASSES - 1)
}

impl PassCost {
    pub(crate) fn observe(&mut self, rows: usize, seconds: f64) {
        if rows == 0 || !seconds.is_finite() || seconds <= 0.0 {
            return;
        }
        let class = &mut self.classes[class_of(rows)];
        class.passes = class.passes * DECAY + 1.0;
        class.rows = class.rows * DECAY + rows as f64;
        class.seconds = class.seconds * DECAY + seconds;
    }

    /// The classes timed often enough to use, smallest first.
    fn timed(&self) -> impl Iterator<Item = PassTiming> + '_ {
        self.classes
            .iter()
            .filter(|c| c.passes >= MIN_PASSES)
            .map(|c| PassTiming {
                rows: c.rows / c.passes,
                seconds: c.seconds / c.passes,
            })
    }

    pub(crate) fn timings(&self) -> Vec<PassTiming> {
        self.timed().collect()
    }

    /// What a pass of `rows` rows costs: seconds once two classes are timed, before that in
    /// units of the prior's shape (only ratios between pass sizes are ever used). Called for
    /// every option a plan weighs, so it walks the classes without collecting them.
    pub(crate) fn cost(&self, rows: usize) -> f64 {
        let r = rows as f64;
        let prior = |r: f64| PRIOR_FIXED_ROWS + r;
        let (mut before_last, mut last): (Option<PassTiming>, Option<PassTiming>) = (None, None);
        for point in self.timed() {
            if r <= point.rows {
                return match last {
                    // Below the smallest class: the prior's shape scaled to it.
                    None => point.seconds * prior(r) / prior(point.rows),
                    Some(a) => {
                        a.seconds
                            + (point.seconds - a.seconds) * (r - a.rows) / (point.rows - a.rows)
                    }
                };
            }
            before_last = last;
            last = Some(point);
        }
        match (before_last, last) {
            // Beyond the largest class: along the last segment, at least a share of its row.
            (Some(before), Some(last)) => {
                let slope = (last.seconds - before.seconds) / (last.rows - before.rows);
                let floor = MIN_MARGINAL_SHARE * last.seconds / last.rows;
                last.seconds + slope.max(floor) * (r - last.rows)
            }
            (None, Some(only)) => only.seconds * prior(r) / prior(only.rows),
            _ => prior(r),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A curve timed from passes that cost `seconds(rows)`.
    pub(crate) fn timed(seconds: impl Fn(f64) -> f64) -> PassCost {
        let mut cost = PassCost::default();
        for rows in [1usize, 2, 4, 8, 16, 32, 64, 128, 256, 512] {
            for _ in 0..3 {
                cost.observe(rows, seconds(rows as f64));
            }
        }
        cost
    }

    #[test]
    fn size_classes_are_powers_of_two() {
        let classes: Vec<usize> = [1, 2, 3, 4, 5, 8, 9, 16, 17, 100_000]
            .iter()
            .map(|&r| class_of(r))
            .collect();
        assert_eq!(classes, vec![0, 1, 2, 2, 3, 3, 4, 4, 5, CLASSES - 1]);
    }

    #[test]
    fn untimed_sizes_follow_the_prior_then_the_timed_points() {
        let mut cost = PassCost::default();
        assert_eq!(cost.cost(1) / cost.cost(5), 4.0 / 8.0);
        // One class timed: the prior's shape scaled to it.
        cost.observe(1, 0.008);
        cost.observe(1, 0.008);
        assert!((cost.cost(5) - 0.016).abs() < 1e-9, "{}", cost.cost(5));
        // Two: interpolated between them, extended along the last segment beyond.
        cost.observe(8, 0.022);
        cost.observe(8, 0.022);
        assert!((cost.cost(8) - 0.022).abs() < 1e-9);
        assert!((cost.cost(15) - 0.036).abs() < 1e-9, "{}", cost.cost(15));
        assert!(cost.cost(4) > 0.008 && cost.cost(4) < 0.022);
    }

    #[test]
    fn a_curve_that_bends_down_is_followed() {
        // Memory-bound small passes, cache reuse in large ones: 8 ms + 8 ms per row up to 8
        // rows, 2 ms a row beyond.
        let bend = |r: f64| 0.008 + 0.008 * r.min(8.0) + 0.002 * (r - 8.0).max(0.0);
        let cost = timed(bend);
        for rows in [1usize, 3, 8, 20, 100, 300] {
            let want = bend(rows as f64);
            let got = cost.cost(rows);
            assert!((got - want).abs() / want < 0.15, "{rows}: {got} vs {want}");
        }
        // A row in a large pass is priced at a fraction of one in a small pass.
        let per_row = |r: usize| cost.cost(r) / r as f64;
        assert!(per_row(128) < per_row(8) / 3.0);
    }

    #[test]
    fn timings_that_fall_with_rows_still_price_more_rows() {
        let mut cost = PassCost::default();
        for _ in 0..2 {
            cost.observe(4, 0.020);
            cost.observe(8, 0.018);
        }
        assert!(cost.cost(64) > cost.cost(8));
    }
}
