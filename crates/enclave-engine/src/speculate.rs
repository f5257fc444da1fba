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

/// A slot's guesses for its next tokens, and how long a run of its latest tokens the lookup
/// matched (what `MatchOdds` predicts acceptance from).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Draft {
    pub guesses: Vec<LlamaToken>,
    /// Tokens the match agreed on going back from the end, capped at `MATCH_CAP`.
    pub matched: usize,
}

/// Matches are measured back to this many tokens (the longest `MatchOdds` bucket starts here).
const MATCH_CAP: usize = 32;

/// Up to `max` tokens proposed to follow `history` + `last`: the tokens that followed the most
/// recent earlier occurrence of the sequence's last `n` tokens, for the longest `n` that occurs.
/// A continuation that runs into the end of the sequence goes on with its own guesses (text
/// that repeats with a period repeats on).
pub(crate) fn draft(history: &[LlamaToken], last: LlamaToken, max: usize) -> Draft {
    let len = history.len() + 1;
    if max == 0 || len <= MIN_NGRAM {
        return Draft::default();
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
            // How far back the agreement goes: a long one means the text is being copied.
            let mut matched = n;
            while matched < MATCH_CAP
                && start > matched - n
                && at(start - (matched - n + 1)) == at(key_start - (matched - n + 1))
            {
                matched += 1;
            }
            let from = start + n;
            let mut guesses: Vec<LlamaToken> = Vec::with_capacity(max);
            for i in from..from + max {
                let next = if i < len { at(i) } else { guesses[i - len] };
                guesses.push(next);
            }
            return Draft { guesses, matched };
        }
    }
    Draft::default()
}

/// How often a guess holds, by how long a match stands behind it: hits over trials (a guess is
/// tried only if those before it held) in each bucket of match length, decayed, blended with a
/// prior. A draft's `i`-th guess stands on the match plus the `i` guesses before it (had they
/// not held it would not be tried), so guesses deep into a quote are priced as the quote they
/// are. Shared by the engine's slots: a two-token match is a weak hint in any answer, a
/// thirty-token one means the answer is quoting, and every slot's outcomes teach both.
#[derive(Debug, Clone, Default)]
pub(crate) struct MatchOdds {
    buckets: [Odds; BUCKETS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Odds {
    hits: f32,
    trials: f32,
}

/// Match lengths 2, 3, 4, 5–7, 8–15, 16–31, 32 and more.
const BUCKETS: usize = 7;
/// What each bucket assumes before it has a record: the longer the run that matched, the
/// likelier the text is being copied (a few drafts replace these with what the model does).
const PRIOR_RATES: [f32; BUCKETS] = [0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.9];
const PRIOR_WEIGHT: f32 = 2.0;
/// Per guess tried: the table follows what the engine serves now, over a few hundred guesses.
const ODDS_DECAY: f32 = 0.995;

fn bucket(matched: usize) -> usize {
    match matched {
        0..=2 => 0,
        3 => 1,
        4 => 2,
        5..=7 => 3,
        8..=15 => 4,
        16..=31 => 5,
        _ => 6,
    }
}

impl MatchOdds {
    /// The chance that a guess from a match of `matched` tokens holds, given that those before
    /// it did.
    fn rate(&self, matched: usize) -> f32 {
        let i = bucket(matched);
        let b = self.buckets[i];
        (b.hits + PRIOR_RATES[i] * PRIOR_WEIGHT) / (b.trials + PRIOR_WEIGHT)
    }

    /// The chance of each of `count` guesses after a match of `matched` tokens, given that
    /// those before it held, scaled by the slot's own record (`Acceptance::factor`).
    pub(crate) fn rates(&self, matched: usize, count: usize, acceptance: &Acceptance) -> Vec<f32> {
        let factor = acceptance.factor();
        (0..count)
            .map(|i| (self.rate(matched + i) * factor).clamp(0.0, 0.99))
            .collect()
    }

    /// Records a checked draft of `drafted` guesses from a match of `matched` tokens, of which
    /// the first `accepted` held: each guess tried counts in the bucket of the match it stood on.
    pub(crate) fn record(&mut self, matched: usize, drafted: usize, accepted: usize) {
        for i in 0..(accepted + 1).min(drafted) {
            let b = &mut self.buckets[bucket(matched + i)];
            b.hits = b.hits * ODDS_DECAY + f32::from(u8::from(i < accepted));
            b.trials = b.trials * ODDS_DECAY + 1.0;
        }
    }
}

/// One slot's record against the engine's odds: how many of its guesses held against how many
/// the odds expected, decayed, so a slot whose text copies less (or more) than matches promise
/// drafts shorter (or longer). Also counts the steps since it last had a guess checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Acceptance {
    hits: f32,
    expected: f32,
    /// Steps since the slot last had a guess checked.
    idle: u32,
}

/// Weight of the slot's evidence needed to move its factor halfway.
const FACTOR_PRIOR: f32 = 2.0;
const DECAY: f32 = 0.97;
/// A slot whose estimate keeps it from guessing gets one guess checked this often, so a slot
/// that starts quoting is noticed.
const PROBE_EVERY: u32 = 16;

impl Acceptance {
    /// How much better than the odds this slot's guesses have held (1 until it has a record).
    pub(crate) fn factor(&self) -> f32 {
        (self.hits + FACTOR_PRIOR) / (self.expected + FACTOR_PRIOR)
    }

    /// Records a checked draft whose guesses were given chances `rates` by the odds, of which
    /// the first `accepted` held.
    pub(crate) fn record(&mut self, rates: &[f32], accepted: usize) {
        if rates.is_empty() {
            self.idle = self.idle.saturating_add(1);
            return;
        }
        self.idle = 0;
        // Decayed per guess tried, so a long run of taken guesses weighs no more than a few
        // recent misses.
        let tried = &rates[..(accepted + 1).min(rates.len())];
        let keep = DECAY.powi(tried.len() as i32);
        self.hits = self.hits * keep + accepted.min(rates.len()) as f32;
        self.expected = self.expected * keep + tried.iter().sum::<f32>();
    }

    pub(crate) fn due_for_probe(&self) -> bool {
        self.idle >= PROBE_EVERY
    }
}

/// How much more a pass with guesses must promise per unit of cost than the pass without them:
/// a guess's row is a sure cost and its chance an estimate, and where guesses barely pay (many
/// streams on compute-bound passes, answers that rarely repeat) the estimate's errors decide;
/// Qwen2.5-1.5B chat at four and eight streams lost ~10% to guesses that promised a few percent.
const MIN_GAIN: f64 = 1.1;

/// One generating slot's candidate guesses for this step.
pub(crate) struct Candidate<'a> {
    pub guesses: &'a [LlamaToken],
    /// The chance that each guess holds, given that those before it did (`MatchOdds::rates`);
    /// one per guess.
    pub rates: &'a [f32],
    /// The slot has had no guess checked for a while (see `PROBE_EVERY`).
    pub probe: bool,
}

/// How many of each candidate's guesses go into this step's pass. A guess is worth its chance
/// of being kept (the product of its rate and the rates of the guesses before it); every row
/// the pass has anyway counts as one unit of work. Guesses are taken best first, as many as make
/// the pass's work per unit of its cost (`cost`, timed) highest, if that beats the pass without
/// them by `MIN_GAIN`. `rows`: the rows the pass has anyway (one per generating slot plus
/// prompt chunks).
pub(crate) fn plan(candidates: &[Candidate<'_>], rows: usize, cost: &PassCost) -> Vec<usize> {
    // (worth, slot) for every guess; a slot's guesses come in order, which their falling worth
    // keeps when sorted.
    let mut options: Vec<(f64, usize)> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let mut worth = 1.0;
        for &rate in c.rates.iter().take(c.guesses.len()) {
            worth *= f64::from(rate);
            options.push((worth, i));
        }
    }
    options.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut work = rows as f64;
    let mut best = (MIN_GAIN * work / cost.cost(rows), 0);
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
        if lengths[i] == 0 && !c.guesses.is_empty() && c.probe {
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
    let mut worth: Vec<f64> = vec![1.0; candidates.len()];
    let mut work = rows as f64;
    let mut best = (MIN_GAIN * work / cost.cost(rows), 0);
    for k in 1..=longest {
        for (i, c) in candidates.iter().enumerate() {
            if let (true, Some(&rate)) = (k <= c.guesses.len(), c.rates.get(k - 1)) {
                worth[i] *= f64::from(rate);
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
    let probe = candidates.iter().any(|c| !c.guesses.is_empty() && c.probe);
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
        assert_eq!(draft(&history, LlamaToken(3), 3).guesses, toks(&[4, 5, 6]));
        assert_eq!(draft(&history, LlamaToken(3), 0).guesses, toks(&[]));
        // Past the end the continuation repeats itself: "4 5 6 7 9 2 3" then "4 5 ...".
        assert_eq!(
            draft(&history, LlamaToken(3), 9).guesses,
            toks(&[4, 5, 6, 7, 9, 2, 3, 4, 5])
        );
    }

    #[test]
    fn prefers_the_longest_and_most_recent_match() {
        // "7 2 3" occurs once (→ 10); "2 3" occurs later too (→ 11); the 3-gram wins.
        let history = toks(&[7, 2, 3, 10, 5, 2, 3, 11, 8, 7, 2]);
        assert_eq!(draft(&history, LlamaToken(3), 1).guesses, toks(&[10]));
        // Only the 2-gram "5 2 3"→ no; "2 3" most recent → 11.
        let history = toks(&[2, 3, 10, 2, 3, 11, 9, 2]);
        assert_eq!(draft(&history, LlamaToken(3), 1).guesses, toks(&[11]));
    }

    #[test]
    fn no_match_no_draft() {
        let history = toks(&[1, 2, 3, 4]);
        assert!(draft(&history, LlamaToken(9), 4).guesses.is_empty());
        assert!(draft(&[], LlamaToken(9), 4).guesses.is_empty());
        // A single repeated token is below the shortest n-gram.
        assert!(draft(&toks(&[5, 1, 2]), LlamaToken(5), 4)
            .guesses
            .is_empty());
    }

    #[test]
    fn a_match_reports_how_far_back_it_agrees() {
        // "5 1 2 3 4" then later "5 1 2 3 4": the 4-gram matches and agreement goes back 5.
        let history = toks(&[9, 5, 1, 2, 3, 4, 7, 8, 6, 5, 1, 2, 3]);
        let d = draft(&history, LlamaToken(4), 2);
        assert_eq!(d.guesses, toks(&[7, 8]));
        assert_eq!(d.matched, 5);
        // Agreement is counted only to the cap.
        let run: Vec<i32> = (100..140).collect();
        let mut repeated = run.clone();
        repeated.push(1);
        repeated.extend(&run[..38]);
        let d = draft(&toks(&repeated), LlamaToken(138), 1);
        assert_eq!(d.guesses, toks(&[139]));
        assert_eq!(d.matched, MATCH_CAP);
    }

    #[test]
    fn odds_are_learned_per_match_length() {
        let mut odds = MatchOdds::default();
        assert!((odds.rate(2) - PRIOR_RATES[0]).abs() < 1e-6);
        // Long matches hold, short ones fail: each bucket learns its own.
        for _ in 0..30 {
            odds.record(32, 16, 16);
            odds.record(2, 4, 0);
        }
        assert!(odds.rate(40) > 0.9, "{}", odds.rate(40));
        assert!(odds.rate(2) < 0.2, "{}", odds.rate(2));
        // Untouched buckets keep the prior.
        assert!((odds.rate(10) - PRIOR_RATES[4]).abs() < 1e-6);
    }

    #[test]
    fn a_slot_that_holds_less_than_its_odds_gets_a_lower_rate() {
        let odds = MatchOdds::default();
        let rate = |slot: &Acceptance| odds.rates(8, 1, slot)[0];
        let mut slot = Acceptance::default();
        assert!((rate(&slot) - PRIOR_RATES[4]).abs() < 1e-6);
        for _ in 0..20 {
            slot.record(&[PRIOR_RATES[4]; 4], 0);
        }
        assert!(rate(&slot) < 0.2);
        let mut better = Acceptance::default();
        for _ in 0..20 {
            better.record(&[PRIOR_RATES[3]; 8], 8);
        }
        assert!(rate(&better) > 0.9 && rate(&better) <= 0.99);
        // A slot with no checked guess for a while probes.
        let mut idle = Acceptance::default();
        for _ in 0..PROBE_EVERY {
            idle.record(&[], 0);
        }
        assert!(idle.due_for_probe());
    }

    #[test]
    fn guesses_deep_into_a_quote_are_priced_as_the_quote() {
        // Short matches fail, long ones hold: a draft from a four-token match starts unlikely
        // and its later guesses (standing on a longer match) are priced higher.
        let mut odds = MatchOdds::default();
        for _ in 0..40 {
            odds.record(4, 4, 0);
            odds.record(20, 8, 8);
        }
        let rates = odds.rates(4, 16, &Acceptance::default());
        assert!(rates[0] < 0.2, "{rates:?}");
        assert!(rates[15] > 0.9, "{rates:?}");
        assert!(rates.windows(2).all(|w| w[0] <= w[1]), "{rates:?}");
    }

    /// Passes timed at a fixed part worth `fixed_rows` rows plus one unit per row.
    fn linear(fixed_rows: f64) -> PassCost {
        timed(move |rows| 0.001 * (fixed_rows + rows))
    }

    /// The chances guesses hold for a slot whose guesses (nearly) always held, and for one
    /// whose guesses (nearly) never did.
    fn sure_and_unsure() -> (&'static [f32], &'static [f32]) {
        (&[0.95; 16], &[0.05; 16])
    }

    #[test]
    fn plan_guesses_more_when_rows_are_cheap_and_guesses_hold() {
        let guesses = toks(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        let (sure, unsure) = sure_and_unsure();
        let one = |rate: &[f32], rows, fixed| {
            plan(
                &[Candidate {
                    guesses: &guesses,
                    rates: rate,
                    probe: false,
                }],
                rows,
                &linear(fixed),
            )[0]
        };
        // A lone slot whose guesses hold: many when a pass's fixed cost dominates (memory-bound),
        // fewer when rows cost as much (compute-bound), none when guesses fail.
        let memory_bound = one(sure, 1, 40.0);
        let compute_bound = one(sure, 1, 1.5);
        assert!(memory_bound >= 12, "{memory_bound}");
        assert!(
            (2..memory_bound).contains(&compute_bound),
            "{compute_bound}"
        );
        assert_eq!(one(unsure, 1, 1.5), 0);
        // Eight slots share the pass: each guess must beat what eight rows already earn.
        assert!(one(sure, 8, 1.5) < compute_bound);
        // A pass that is mostly a prompt chunk takes no guesses.
        assert_eq!(one(sure, 1500, 1.5), 0);
    }

    #[test]
    fn uniform_plan_pads_only_while_the_sure_guesses_pay_for_it() {
        let long = toks(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let short = toks(&[1, 2]);
        let (sure, unsure) = sure_and_unsure();
        let both = |a: (&[LlamaToken], &[f32]), b: (&[LlamaToken], &[f32]), fixed| {
            let candidates = [
                Candidate {
                    guesses: a.0,
                    rates: a.1,
                    probe: false,
                },
                Candidate {
                    guesses: b.0,
                    rates: b.1,
                    probe: false,
                },
            ];
            plan_uniform(&candidates, 2, &linear(fixed))
        };
        // Two slots whose guesses hold, memory-bound: long drafts for both.
        assert!(both((&long, sure), (&long, sure), 40.0) >= 8);
        // Nothing holds: no guesses when rows cost about as much as the pass.
        assert_eq!(both((&long, unsure), (&long, unsure), 2.0), 0);
        // One slot's two guesses hold and the other slot has none: only as many as pay for the
        // padding of the other.
        let k = both((&short, sure), (&[], sure), 2.0);
        assert!(k <= 2, "{k}");
    }

    #[test]
    fn eight_sure_slots_draft_long_when_large_passes_reuse_the_weights() {
        let guesses = toks(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        let (sure, _) = sure_and_unsure();
        let eight: Vec<Candidate<'_>> = (0..8)
            .map(|_| Candidate {
                guesses: &guesses,
                rates: sure,
                probe: false,
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
