//! What a forward pass costs for its number of token rows, timed on this machine; what
//! speculation weighs its guesses against (`speculate::plan`).
//!
//! On a CPU the cost is far from linear in rows, and not even smooth: llama.cpp's repacked
//! matrix kernels take token rows in tiles (four on x86 for Q4_K), so on two cores a Qwen2.5-1.5B
//! pass of four rows costs less than one of three, and one of sixteen less than one of fifteen
//! (65, 96, 109, 95 ms for 1-4 rows; 252 and 201 ms for 15 and 16). A plan that sees those steps
//! pads a draft to the cheap size; one that averages neighbouring sizes never finds them. So
//! every size up to `EXACT` rows is its own class (above it, powers of two), each keeping the
//! decayed mean time of its passes; `calibration_sizes` are timed once before the first request
//! (see `scheduler::calibrate`), and passes as served keep every class current. Between timed classes the
//! cost is interpolated; beyond the largest it goes on along its last segment, which for a curve
//! that bends down overstates the cost: a longer draft is tried only when the guesses promise to
//! pay even then, and once tried its class is timed.

/// Sizes up to this many rows are classes of their own.
const EXACT: usize = 64;
/// Above `EXACT`: rows in `(2^(c-1), 2^c]`, the last class open-ended.
const CLASSES: usize = EXACT + 8;
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

#[derive(Debug, Clone)]
pub(crate) struct PassCost {
    classes: [SizeClass; CLASSES],
}

impl Default for PassCost {
    fn default() -> Self {
        Self {
            classes: [SizeClass::default(); CLASSES],
        }
    }
}

fn class_of(rows: usize) -> usize {
    if rows <= EXACT {
        return rows.saturating_sub(1);
    }
    // 65..=128 → EXACT, 129..=256 → EXACT + 1, ...
    let doubling = (usize::BITS - (rows - 1).leading_zeros()) as usize;
    (EXACT + doubling - 7).min(CLASSES - 1)
}

/// The pass sizes worth timing before serving, up to `largest` rows: every size to 16 (where
/// tiling makes neighbours differ most), then every eighth to `EXACT`.
pub(crate) fn calibration_sizes(largest: usize) -> Vec<usize> {
    (1..=16)
        .chain((24..=EXACT).step_by(8))
        .filter(|&rows| rows <= largest)
        .collect()
}

impl PassCost {
    pub(crate) fn observe(&mut self, rows: usize, seconds: f64) {
        self.observe_weighted(rows, seconds, 1.0);
    }

    /// A calibration pass: one timing that counts as enough to use its class at once (served
    /// passes of that size then refine it).
    pub(crate) fn observe_calibration(&mut self, rows: usize, seconds: f64) {
        self.observe_weighted(rows, seconds, MIN_PASSES);
    }

    fn observe_weighted(&mut self, rows: usize, seconds: f64, weight: f64) {
        if rows == 0 || !seconds.is_finite() || seconds <= 0.0 {
            return;
        }
        let class = &mut self.classes[class_of(rows)];
        class.passes = class.passes * DECAY + weight;
        class.rows = class.rows * DECAY + weight * rows as f64;
        class.seconds = class.seconds * DECAY + weight * seconds;
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
    fn sizes_are_exact_then_powers_of_two() {
        let classes: Vec<usize> = [1, 2, 3, 4, 5, 16, 64, 65, 128, 129, 100_000]
            .iter()
            .map(|&r| class_of(r))
            .collect();
        assert_eq!(
            classes,
            vec![0, 1, 2, 3, 4, 15, 63, 64, 64, 65, CLASSES - 1]
        );
        assert_eq!(calibration_sizes(10), (1..=10).collect::<Vec<_>>());
        assert_eq!(calibration_sizes(40)[16..], [24, 32, 40]);
    }

    #[test]
    fn a_tiled_step_is_seen_and_calibration_counts_at_once() {
        // Two-core Qwen2.5-1.5B Q4_K_M timings (ms): four rows cost less than three, sixteen
        // less than fifteen.
        let steps = [
            (1, 66.0),
            (2, 96.0),
            (3, 109.0),
            (4, 95.0),
            (15, 252.0),
            (16, 201.0),
        ];
        let mut cost = PassCost::default();
        for (rows, ms) in steps {
            cost.observe_calibration(rows, ms / 1000.0);
        }
        assert!(cost.cost(4) < cost.cost(3));
        assert!(cost.cost(16) < cost.cost(15));
        assert!((cost.cost(16) - 0.201).abs() < 1e-9);
        // A served pass moves the mean.
        cost.observe(16, 0.301);
        assert!(cost.cost(16) > 0.201 && cost.cost(16) < 0.301);
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
