//! Speculative decoding from the prompt (prompt lookup): the next tokens are guessed by finding
//! the sequence's last few tokens earlier in its own prompt or output and proposing what
//! followed them there. Grounded answers quote their documents, so such guesses are often right;
//! the scheduler checks a slot's guesses in the same forward pass as its next token and keeps the
//! agreeing prefix (see `scheduler`).
//!
//! Lossless: a guess is accepted only when the slot's own sampler, run on the model's logits at
//! that position, picks exactly the guessed token. Under greedy decoding that is the argmax, so
//! the output is the one decoding without guesses would give; under sampling every kept token is
//! a draw from the model's own distribution (a point-mass draft accepted when the draw equals it
//! is speculative sampling's accept rule with the residual draw being that same draw).

use llama_cpp_2::token::LlamaToken;

/// Longest and shortest run of tokens looked up; longer runs first (fewer false matches).
const MAX_NGRAM: usize = 4;
const MIN_NGRAM: usize = 2;
/// Searching stops this far back from the end (keeps a step's cost bounded on long contexts).
const MAX_LOOKBACK: usize = 8192;

/// Up to `max` tokens proposed to follow `history` + `last`: the tokens that followed the most
/// recent earlier occurrence of the sequence's last `n` tokens, for the longest `n` that occurs.
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
            let to = (from + max).min(len);
            return (from..to).map(at).collect();
        }
    }
    Vec::new()
}

/// Per-slot draft length that follows the slot's acceptance: doubles while every guess is
/// taken, shrinks to just past the last agreeing position when one is not, and pauses drafting
/// for a while after repeated outright misses (so a slot whose text does not quote anything
/// costs nothing extra).
#[derive(Debug, Clone)]
pub(crate) struct DraftLength {
    len: usize,
    max: usize,
    misses: u32,
    paused: u32,
}

const START_LEN: usize = 4;
const MISSES_BEFORE_PAUSE: u32 = 3;
const PAUSE_STEPS: u32 = 8;

impl DraftLength {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            len: START_LEN.min(max),
            max,
            misses: 0,
            paused: 0,
        }
    }

    /// Tokens this step may draft (0 while paused).
    pub(crate) fn budget(&mut self) -> usize {
        if self.paused > 0 {
            self.paused -= 1;
            return 0;
        }
        self.len
    }

    /// Records a verified draft of `drafted` tokens of which the first `accepted` were taken.
    pub(crate) fn record(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        if accepted == drafted {
            self.len = (self.len * 2).min(self.max);
            self.misses = 0;
        } else if accepted == 0 {
            self.len = (self.len / 2).max(1);
            self.misses += 1;
            if self.misses >= MISSES_BEFORE_PAUSE {
                self.misses = 0;
                self.paused = PAUSE_STEPS;
            }
        } else {
            self.len = (accepted + 1).clamp(1, self.max);
            self.misses = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&i| LlamaToken(i)).collect()
    }

    #[test]
    fn proposes_what_followed_the_last_tokens_in_the_prompt() {
        // "1 2 3 4 5 6 ... 9 2 3" → after "2 3" came "4 5 6".
        let history = toks(&[1, 2, 3, 4, 5, 6, 7, 9, 2]);
        assert_eq!(draft(&history, LlamaToken(3), 3), toks(&[4, 5, 6]));
        // Capped at what exists and at `max`.
        assert_eq!(draft(&history, LlamaToken(3), 0), toks(&[]));
        assert_eq!(draft(&history, LlamaToken(3), 100).len(), 7);
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
    fn draft_length_follows_acceptance() {
        let mut length = DraftLength::new(16);
        assert_eq!(length.budget(), 4);
        length.record(4, 4);
        assert_eq!(length.budget(), 8);
        length.record(8, 8);
        length.record(16, 16);
        assert_eq!(length.budget(), 16);
        length.record(16, 5);
        assert_eq!(length.budget(), 6);
        for _ in 0..MISSES_BEFORE_PAUSE {
            length.record(1, 0);
        }
        for _ in 0..PAUSE_STEPS {
            assert_eq!(length.budget(), 0);
        }
        assert_eq!(length.budget(), 1);
        // Nothing drafted changes nothing.
        length.record(0, 0);
        assert_eq!(length.budget(), 1);
    }
}
