//! Sequence ids and the prompt prefixes their KV cells hold, shared across requests.
//!
//! A finished request leaves its KV cells in its sequence; a later prompt that begins the same
//! way (same system prompt, tool definitions, documents) starts from them instead of computing
//! them again. With one buffer per sequence the new request gets the lowest free sequence and
//! the buffer of whichever sequence, idle or busy, holds the longest prefix is copied into it
//! (llama.cpp copies a per-sequence buffer whole, which costs far less than recomputing a dozen
//! tokens); in one shared buffer the prefix's cells are shared, and idle prefixes are evicted
//! least recently used when running requests need room.
//!
//! Reuse never changes an answer: the KV cells of a token depend only on the tokens before it, so
//! the cells of an identical prefix are identical whoever computed them, and a prompt reuses only
//! the prefix it shares token for token. Nothing of another request past that prefix is kept.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::token::LlamaToken;

/// Shortest gain worth a whole-buffer copy between per-sequence buffers (shorter shared runs
/// are a chat template's opening, common to every prompt).
const MIN_COPY_GAIN: usize = 16;
/// Shortest prefix shared with a prompt still being computed that is worth waiting for (then
/// sharing or copying) rather than computing it a second time alongside.
pub(crate) const MIN_SHARED_TO_WAIT: usize = 64;

/// Where a new request's sequence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    pub seq_id: i32,
    /// Prompt tokens whose KV cells are already in place.
    pub reused: usize,
    /// Whether they were copied from another sequence.
    pub copied: bool,
}

/// Where a prompt's prefix is held: the free sequence holding most of it (its index in the free
/// list, and how many tokens), and the busy sequence holding most of it.
#[derive(Clone, Copy)]
struct Holders {
    best_free_at: usize,
    best_free: usize,
    busy: Option<(i32, usize)>,
}

pub(crate) struct SeqPool {
    free: Vec<i32>,
    /// Per sequence id: the tokens its KV cells hold while it is idle.
    cached: Vec<Vec<LlamaToken>>,
    /// Per sequence id: cells a running request may come to need (0 while idle).
    reserved: Vec<usize>,
    /// Per sequence id: when it was last given back (a logical clock).
    returned_at: Vec<u64>,
    clock: u64,
    reuse: bool,
    /// One KV buffer for all sequences (cells can be shared; idle cells take room from live
    /// ones) rather than one per sequence (cells are copied; each has its own room).
    unified: bool,
    /// Cells in the unified buffer.
    capacity: usize,
}

pub(crate) fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl SeqPool {
    pub(crate) fn new(parallel: u32, reuse: bool, unified: bool, capacity: usize) -> Self {
        Self {
            free: (0..parallel as i32).rev().collect(),
            cached: vec![Vec::new(); parallel as usize],
            reserved: vec![0; parallel as usize],
            returned_at: vec![0; parallel as usize],
            clock: 0,
            reuse,
            unified,
            capacity,
        }
    }

    pub(crate) fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Longest prefix of `prompt` an idle sequence holds.
    pub(crate) fn best_cached(&self, prompt: &[LlamaToken]) -> usize {
        match self.best_free(prompt) {
            Some((_, n)) if self.reuse => n,
            _ => 0,
        }
    }

    /// The free sequence whose cells hold the longest prefix of `prompt`: its index in `free`
    /// and the prefix's length (None when no sequence is free).
    fn best_free(&self, prompt: &[LlamaToken]) -> Option<(usize, usize)> {
        self.free
            .iter()
            .enumerate()
            .map(|(i, &seq)| (i, common_prefix(&self.cached[seq as usize], prompt)))
            .max_by_key(|&(_, n)| n)
    }

    /// Longest prefix of `prompt` held by a busy sequence (`busy`: id and the tokens its KV
    /// cells hold), with that sequence.
    fn best_busy<'a>(
        prompt: &[LlamaToken],
        busy: impl Iterator<Item = (i32, &'a [LlamaToken])>,
    ) -> Option<(i32, usize)> {
        busy.map(|(seq, held)| (seq, common_prefix(held, prompt)))
            .max_by_key(|&(_, n)| n)
    }

    /// A free sequence for `prompt`, with as much of its prefix already computed as any sequence
    /// holds; cells past the shared prefix are dropped. `reserve`: the most cells the request
    /// can come to hold (prompt, answer and guesses).
    pub(crate) fn take<'a>(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        prompt: &[LlamaToken],
        reserve: usize,
        busy: impl Iterator<Item = (i32, &'a [LlamaToken])>,
    ) -> Option<Taken> {
        // At least one prompt token must run to produce the logits of the next one.
        let usable = |n: usize| n.min(prompt.len().saturating_sub(1));
        let (best_free_at, best_free) = self.best_free(prompt)?;
        let best_free = if self.reuse { usable(best_free) } else { 0 };
        let busy = if self.reuse {
            Self::best_busy(prompt, busy).map(|(seq, n)| (seq, usable(n)))
        } else {
            None
        };
        let holders = Holders {
            best_free_at,
            best_free,
            busy,
        };
        let taken = if self.unified {
            self.take_shared(ctx, holders)
        } else {
            // The lowest free id (see `take_own`), and the usable prefix its own cells hold.
            let lowest = self
                .free
                .iter()
                .enumerate()
                .min_by_key(|&(_, &seq)| seq)
                .map_or(0, |(i, _)| i);
            let seq = self.free[lowest] as usize;
            let own = if self.reuse {
                usable(common_prefix(&self.cached[seq], prompt))
            } else {
                0
            };
            self.take_own(ctx, holders, lowest, own)
        };
        self.cached[taken.seq_id as usize].clear();
        self.reserved[taken.seq_id as usize] = reserve;
        if self.unified {
            self.make_room(ctx);
        }
        Some(taken)
    }

    /// One buffer per sequence: the request gets the lowest free id (llama.cpp runs a batch over
    /// per-sequence buffers in one pass only for consecutive ids, so keeping the busy ones packed
    /// at the bottom keeps steps to one pass). When another sequence, idle or busy, holds a
    /// longer prefix than that one's own cells, its buffer is copied whole (llama.cpp cannot
    /// copy part of one; a few milliseconds, less than computing a dozen prompt tokens).
    /// `position`: where the lowest free id is in `free`; `own`: the usable prefix that
    /// sequence already holds.
    fn take_own(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        holders: Holders,
        position: usize,
        own: usize,
    ) -> Taken {
        let seq_id = self.free[position];
        let idle = (self.free[holders.best_free_at], holders.best_free);
        let source = [holders.busy, Some(idle)]
            .into_iter()
            .flatten()
            .filter(|&(seq, n)| seq != seq_id && n >= own + MIN_COPY_GAIN)
            .max_by_key(|&(_, n)| n);
        self.free.swap_remove(position);
        let reused = match source {
            // Done by llama.cpp before the next forward pass; cells past the prefix go below.
            Some((source, n)) => match ctx.copy_kv_cache_seq(source, seq_id, None, None) {
                Ok(()) => n,
                Err(_) => 0,
            },
            None => own,
        };
        let reused = Self::trim(ctx, seq_id, reused);
        Taken {
            seq_id,
            reused,
            copied: source.is_some() && reused > 0,
        }
    }

    /// One shared buffer: the prefix's cells are shared with the sequence that holds them (no
    /// data moves), so an idle holder keeps its whole prefix for later requests too, and the
    /// least recently used free sequence is the one given to the request.
    fn take_shared(&mut self, ctx: &mut LlamaContext<'_>, holders: Holders) -> Taken {
        let source = match holders.busy {
            Some((seq, n)) if n > holders.best_free => Some((seq, n)),
            _ if holders.best_free > 0 => {
                Some((self.free[holders.best_free_at], holders.best_free))
            }
            _ => None,
        };
        // The holder itself is taken only when it is the one to be overwritten anyway.
        let lru = self.least_recently_used();
        let seq_id = self.free.swap_remove(lru);
        let (reused, copied) = match source {
            Some((seq, n)) if seq == seq_id => (Self::trim(ctx, seq_id, n), false),
            Some((seq, n)) => {
                let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
                let shared = ctx.copy_kv_cache_seq(seq, seq_id, Some(0), Some(n as u32));
                (if shared.is_ok() { n } else { 0 }, shared.is_ok())
            }
            None => (Self::trim(ctx, seq_id, 0), false),
        };
        Taken {
            seq_id,
            reused,
            copied: copied && reused > 0,
        }
    }

    /// Drops `seq_id`'s cells from position `keep` on; returns how many it keeps.
    fn trim(ctx: &mut LlamaContext<'_>, seq_id: i32, keep: usize) -> usize {
        let trimmed = ctx.clear_kv_cache_seq(Some(seq_id as u32), Some(keep as u32), None);
        if matches!(trimmed, Ok(true)) {
            keep
        } else {
            // Some models cannot drop part of a sequence; start it afresh.
            let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
            0
        }
    }

    /// In a shared buffer, frees idle sequences' cells, least recently used first, until the
    /// running requests' reservations and the idle prefixes fit (counting shared cells once per
    /// holder, so it errs towards room).
    fn make_room(&mut self, ctx: &mut LlamaContext<'_>) {
        loop {
            let held: usize = self.reserved.iter().sum::<usize>()
                + self.cached.iter().map(Vec::len).sum::<usize>();
            if held <= self.capacity {
                return;
            }
            let Some(&victim) = self
                .free
                .iter()
                .filter(|&&seq| !self.cached[seq as usize].is_empty())
                .min_by_key(|&&seq| self.returned_at[seq as usize])
            else {
                return;
            };
            let _ = ctx.clear_kv_cache_seq(Some(victim as u32), None, None);
            self.cached[victim as usize].clear();
        }
    }

    /// Index in `free` of the sequence given back longest ago.
    fn least_recently_used(&self) -> usize {
        self.free
            .iter()
            .enumerate()
            .min_by_key(|&(_, &seq)| self.returned_at[seq as usize])
            .map_or(0, |(i, _)| i)
    }

    /// Returns a sequence. With `history` (a request that finished normally) its KV cells are
    /// kept for a later prompt that starts the same way; otherwise they are freed now.
    pub(crate) fn give_back(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        seq_id: i32,
        history: Option<Vec<LlamaToken>>,
    ) {
        self.clock += 1;
        self.returned_at[seq_id as usize] = self.clock;
        self.reserved[seq_id as usize] = 0;
        match history.filter(|_| self.reuse) {
            Some(tokens) => self.cached[seq_id as usize] = tokens,
            None => {
                let _ = ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
                self.cached[seq_id as usize].clear();
            }
        }
        self.free.push(seq_id);
    }
}
