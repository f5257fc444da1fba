//! Speculative decoding from the prompt (prompt lookup): the next tokens are guessed by finding
//! the sequence's last few tokens earlier in its own prompt or output and proposing what
//! followed them there. Grounded answers quote their documents, so such guesses are often right;
//! the scheduler checks a slot's guesses in the same forward pass as its next token and keeps the
//! agreeing prefix (see `scheduler`). How many guesses go into a pass is planned from each
//! slot's acceptance and what passes of each size cost, timed online (`plan`, `pass_cost`).
//!
//! Lossless: a guess is accepted only when the slot's own sampler, run on the model's logits at
//! that position, picks exactly the guessed token. Under greedy decoding that is the argmax, so
//! the output is the one decoding without guesses would give; under sampling every kept token is
//! a draw from the model's own distribution (a point-mass draft accepted when the draw equals it
//! is speculative sampling's accept rule with the residual draw being that same draw).

use llama_cpp_2::token::LlamaToken;

use crate::pass_cost::PassCost;

/// Longest and shortest run of tokens looked up; longer runs first (fewer false matches).
const MAX_NGRAM: usize = 4;
const MIN_NGRAM: usize = 2;
/// Searching stops this far back from the end (keeps a step's cost bounded on long contexts).
const MAX_LOOKBACK: usize = 8192;

/// Up to `max` tokens proposed to follow `history` + `last`: the tokens that followed the most
/// recent earlier occurrence of the sequence's last `n` tokens, for the longest `n` that occurs.
/// A continuation that runs into the end of the sequence goes on with its own guesses (text
/// that repeats with a period repeats on).
pub(crate) fn draft(history: &[LlamaToken], last: LlamaToken, max: usize) -> Vec<LlamaToken> {
    let len = history.len() + 1;
    if max == 0 || len <= MIN_NGRAM {
        return Vec::new();
    }
    let at = |i: usize| if i < history.len() { history[i] } else { last };
    let floor = len.saturating_sub(MAX_LOOKBACK);
    for n in (MIN_NGRAM..=MAX_NGRAM.min(len - 1)).rev() {
        let key_start = len - n;
        // Most recent start first; the match must end before the key does so something follows.
        for start in (floor..key_start).rev() {
            if at(start + n - 1) != last || (0..n).any(|k| at(start + k) != at(key_start + k)) {
                continue;
            }
            let from = start + n;
            let mut guesses: Vec<LlamaToken> = Vec::with_capacity(max);
            for i in from..from + max {
                let next = if i < len { at(i) } else { guesses[i - len] };
                guesses.push(next);
            }
            return guesses;
        }
    }
    Vec::new()
}

/// How often a slot's guesses hold: hits over trials (a guess is tried only if those before it
/// held), decayed so the estimate follows what the slot is writing now, blended with a prior of
/// 0.6 so a new slot starts by trying a few guesses.
#[derive(Debug, Clone, Default)]
pub(crate) struct Acceptance {
    hits: f32,
    trials: f32,
    /// Steps since the slot last had a guess checked.
    idle: u32,
}

const PRIOR_RATE: f32 = 0.6;
const PRIOR_WEIGHT: f32 = 2.0;
const DECAY: f32 = 0.97;
/// A slot whose estimate keeps it from guessing gets one guess checked this often, so a slot
/// that starts quoting is noticed.
const PROBE_EVERY: u32 = 16;

impl Acceptance {
    /// The chance that a guess holds, given that those before it did.
    pub(crate) fn rate(&self) -> f32 {
        (self.hits + PRIOR_RATE * PRIOR_WEIGHT) / (self.trials + PRIOR_WEIGHT)
    }

    /// Records a checked draft of `drafted` guesses of which the first `accepted` held.
    pub(crate) fn record(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            self.idle = self.idle.saturating_add(1);
            return;
        }
        self.idle = 0;
        // Decayed per guess tried, so a long run of taken guesses weighs no more than a few
        // recent misses.
        let tried = (accepted + 1).min(drafted);
        let keep = DECAY.powi(tried as i32);
        self.hits = self.hits * keep + accepted as f32;
        self.trials = self.trials * keep + tried as f32;
    }

    fn due_for_probe(&self) -> bool {
        self.idle >= PROBE_EVERY
    }
}

/// One generating slot's candidate guesses for this step and its acceptance.
pub(crate) struct Candidate<'a> {
    pub guesses: &'a [LlamaToken],
    pub acceptance: &'a Acceptance,
}

/// How many of each candidate's guesses go into this step's pass. A guess is worth its chance
/// of being kept (the product of its slot's rate over it and the guesses before it); every row
/// the pass has anyway counts as one unit of work. Guesses are taken best first, as many as make
/// the pass's work per unit of its cost (`cost`, timed) highest. `rows`: the rows the pass has
/// anyway (one per generating slot plus prompt chunks).
pub(crate) fn plan(candidates: &[Candidate<'_>], rows: usize, cost: &PassCost) -> Vec<usize> {
    // (worth, slot) for every guess; a slot's guesses come in order, which their falling worth
    // keeps when sorted.
    let mut options: Vec<(f64, usize)> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let rate = f64::from(c.acceptance.rate());
        let mut worth = 1.0;
        for _ in c.guesses {
            worth *= rate;
            options.push((worth, i));
        }
    }
    options.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut work = rows as f64;
    let mut best = (work / cost.cost(rows), 0);
    for (taken, (worth, _)) in options.iter().enumerate() {
        work += worth;
        let rate = work / cost.cost(rows + taken + 1);
        if rate > best.0 {
            best = (rate, taken + 1);
        }
    }
    let mut lengths = vec![0usize; candidates.len()];
    for &(_, slot) in &options[..best.1] {
        lengths[slot] += 1;
    }
    // Slots kept from guessing for a while try one guess.
    for (i, c) in candidates.iter().enumerate() {
        if lengths[i] == 0 && !c.guesses.is_empty() && c.acceptance.due_for_probe() {
            lengths[i] = 1;
        }
    }
    lengths
}

/// The one number of guesses every candidate gets when a pass must give all its sequences the
/// same number of tokens (per-sequence KV buffers; see `scheduler::fill_batch`): the `k` that
/// earns most per unit of pass cost, where a candidate with fewer than `k` guesses is padded
/// (its padding costs rows and earns nothing). `rows`: the pass's rows before any guess.
pub(crate) fn plan_uniform(candidates: &[Candidate<'_>], rows: usize, cost: &PassCost) -> usize {
    let longest = candidates
        .iter()
        .map(|c| c.guesses.len())
        .max()
        .unwrap_or(0);
    let rates: Vec<f64> = candidates
        .iter()
        .map(|c| f64::from(c.acceptance.rate()))
        .collect();
    let mut worth: Vec<f64> = vec![1.0; candidates.len()];
    let mut work = rows as f64;
    let mut best = (work / cost.cost(rows), 0);
    for k in 1..=longest {
        for (i, c) in candidates.iter().enumerate() {
            if k <= c.guesses.len() {
                worth[i] *= rates[i];
                work += worth[i];
            }
        }
        let rate = work / cost.cost(rows + k * candidates.len());
        if rate > best.0 {
            best = (rate, k);
        }
    }
    // As in `plan`: slots kept from guessing for a while try one guess (all of them, so the
    // pass keeps its shape), which also times passes of another size for the cost model.
    let probe = candidates
        .iter()
        .any(|c| !c.guesses.is_empty() && c.acceptance.due_for_probe());
    if best.1 == 0 && probe {
        1
    } else {
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass_cost::tests::timed;

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&i| LlamaToken(i)).collect()
    }

    #[test]
    fn proposes_what_followed_the_last_tokens_in_the_prompt() {
        // "1 2 3 4 5 6 ... 9 2 3" → after "2 3" came "4 5 6".
        let history = toks(&[1, 2, 3, 4, 5, 6, 7, 9, 2]);
        assert_eq!(draft(&history, LlamaToken(3), 3), toks(&[4, 5, 6]));
        assert_eq!(draft(&history, LlamaToken(3), 0), toks(&[]));
        // Past the end the continuation repeats itself: "4 5 6 7 9 2 3" then "4 5 ...".
        assert_eq!(
            draft(&history, LlamaToken(3), 9),
            toks(&[4, 5, 6, 7, 9, 2, 3, 4, 5])
        );
    }

    #[test]
    fn prefers_the_longest_and_most_recent_match() {
        // "7 2 3" occurs once (→ 10); "2 3" occurs later too (→ 11); the 3-gram wins.
        let history = toks(&[7, 2, 3, 10, 5, 2, 3, 11, 8, 7, 2]);
        assert_eq!(draft(&history, LlamaToken(3), 1), toks(&[10]));
        // Only the 2-gram "5 2 3"→ no; "2 3" most recent → 11.
        let history = toks(&[2, 3, 10, 2, 3, 11, 9, 2]);
        assert_eq!(draft(&history, LlamaToken(3), 1), toks(&[11]));
    }

    #[test]
    fn no_match_no_draft() {
        let history = toks(&[1, 2, 3, 4]);
        assert!(draft(&history, LlamaToken(9), 4).is_empty());
        assert!(draft(&[], LlamaToken(9), 4).is_empty());
        // A single repeated token is below the shortest n-gram.
        assert!(draft(&toks(&[5, 1, 2]), LlamaToken(5), 4).is_empty());
    }

    #[test]
    fn acceptance_follows_what_the_slot_writes() {
        let mut a = Acceptance::default();
        assert!((a.rate() - PRIOR_RATE).abs() < 1e-6);
        for _ in 0..10 {
            a.record(8, 8);
        }
        assert!(a.rate() > 0.85, "{}", a.rate());
        for _ in 0..10 {
            a.record(4, 0);
        }
        assert!(a.rate() < 0.75, "{}", a.rate());
        for _ in 0..60 {
            a.record(4, 0);
        }
        assert!(a.rate() < 0.2, "{}", a.rate());
    }

    /// Passes timed at a fixed part worth `fixed_rows` rows plus one unit per row.
    fn linear(fixed_rows: f64) -> PassCost {
        timed(move |rows| 0.001 * (fixed_rows + rows))
    }

    /// A slot whose guesses always held, and one whose guesses never did.
    fn sure_and_unsure() -> (Acceptance, Acceptance) {
        let mut sure = Acceptance::default();
        let mut unsure = Acceptance::default();
        for _ in 0..20 {
            sure.record(8, 8);
            unsure.record(4, 0);
        }
        (sure, unsure)
    }

    #[test]
    fn plan_guesses_more_when_rows_are_cheap_and_guesses_hold() {
        let guesses = toks(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        let (sure, unsure) = sure_and_unsure();
        let one = |acceptance: &Acceptance, rows, fixed| {
            plan(
                &[Candidate {
                    guesses: &guesses,
                    acceptance,
                }],
                rows,
                &linear(fixed),
            )[0]
        };
        // A lone slot whose guesses hold: many when a pass's fixed cost dominates (memory-bound),
        // fewer when rows cost as much (compute-bound), none when guesses fail.
        let memory_bound = one(&sure, 1, 40.0);
        let compute_bound = one(&sure, 1, 1.5);
        assert!(memory_bound >= 12, "{memory_bound}");
        assert!(
            (2..memory_bound).contains(&compute_bound),
            "{compute_bound}"
        );
        assert_eq!(one(&unsure, 1, 1.5), 0);
        // Eight slots share the pass: each guess must beat what eight rows already earn.
        assert!(one(&sure, 8, 1.5) < compute_bound);
        // A pass that is mostly a prompt chunk takes no guesses.
        assert_eq!(one(&sure, 1500, 1.5), 0);
    }

    #[test]
    fn uniform_plan_pads_only_while_the_sure_guesses_pay_for_it() {
        let long = toks(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let short = toks(&[1, 2]);
        let (sure, unsure) = sure_and_unsure();
        let both = |a: (&[LlamaToken], &Acceptance), b: (&[LlamaToken], &Acceptance), fixed| {
            let candidates = [
                Candidate {
                    guesses: a.0,
                    acceptance: a.1,
                },
                Candidate {
                    guesses: b.0,
                    acceptance: b.1,
                },
            ];
            plan_uniform(&candidates, 2, &linear(fixed))
        };
        // Two slots whose guesses hold, memory-bound: long drafts for both.
        assert!(both((&long, &sure), (&long, &sure), 40.0) >= 8);
        // Nothing holds: no guesses when rows cost about as much as the pass.
        assert_eq!(both((&long, &unsure), (&long, &unsure), 2.0), 0);
        // One slot's two guesses hold and the other slot has none: only as many as pay for the
        // padding of the other.
        let k = both((&short, &sure), (&[], &sure), 2.0);
        assert!(k <= 2, "{k}");
    }

    #[test]
    fn eight_sure_slots_draft_long_when_large_passes_reuse_the_weights() {
        let guesses = toks(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        let (sure, _) = sure_and_unsure();
        let eight: Vec<Candidate<'_>> = (0..8)
            .map(|_| Candidate {
                guesses: &guesses,
                acceptance: &sure,
            })
            .collect();
        // Up to eight rows a row costs as much as the pass's fixed part; beyond, a quarter.
        let bend = timed(|r| 0.008 + 0.008 * r.min(8.0) + 0.002 * (r - 8.0).max(0.0));
        // The same passes of up to eight rows seen as a line: a row is worth the fixed part.
        let line = linear(1.0);
        let k_bend = plan_uniform(&eight, 8, &bend);
        let k_line = plan_uniform(&eight, 8, &line);
        assert!(k_bend >= 10, "{k_bend}");
        assert!(k_line <= 4, "{k_line}");
    }
}
