//! One collection's search index in memory: BM25 over the chunks' content terms, int8 vectors
//! for dense search (cosine), reciprocal-rank fusion of the two, and filters (metadata
//! equality, access groups) applied before anything is ranked. The store is the source of
//! truth; this index is rebuilt from it at start and kept current by its change feed.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::terms::terms;

/// BM25's term-frequency saturation and length normalisation.
const K1: f32 = 1.2;
const B: f32 = 0.75;
/// Reciprocal-rank fusion's damping constant.
const RRF_K: f32 = 60.0;
/// Candidates each retriever hands to fusion.
const FUSION_DEPTH: usize = 50;

/// What a chunk is known by in search results.
#[derive(Debug, Clone)]
pub struct ChunkRecord {
    pub document_id: String,
    pub chunk_id: u32,
    /// Code points into the document's extracted text.
    pub start: usize,
    pub end: usize,
    pub text: String,
    pub title: String,
    pub metadata: Map<String, Value>,
    /// Groups that may see the chunk's document; empty: everyone in the tenant.
    pub acl: Vec<String>,
}

/// Who is searching and what they asked to narrow to.
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    /// The caller's groups (`None`: unrestricted, e.g. an admin key).
    pub groups: Option<Vec<String>>,
    /// Metadata fields that must equal these values.
    pub metadata: Map<String, Value>,
}

impl SearchFilter {
    fn allows(&self, chunk: &ChunkRecord) -> bool {
        let visible = chunk.acl.is_empty()
            || self
                .groups
                .as_ref()
                .is_none_or(|groups| chunk.acl.iter().any(|g| groups.contains(g)));
        visible
            && self
                .metadata
                .iter()
                .all(|(k, v)| chunk.metadata.get(k) == Some(v))
    }
}

/// How a search ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retriever {
    Lexical,
    Dense,
    Fused,
}

/// A ranked chunk.
#[derive(Debug, Clone)]
pub struct Hit {
    pub slot: usize,
    pub score: f32,
}

struct Slot {
    record: ChunkRecord,
    length: u32,
    /// The int8 vector's scale back to floats.
    scale: f32,
}

/// A collection's chunks, searchable.
#[derive(Default)]
pub struct CollectionIndex {
    slots: Vec<Option<Slot>>,
    vectors: Vec<i8>,
    dimensions: usize,
    by_document: HashMap<String, Vec<usize>>,
    postings: HashMap<String, Vec<(u32, u16)>>,
    live: usize,
    total_length: u64,
}

impl CollectionIndex {
    /// Live chunks.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn chunk(&self, slot: usize) -> Option<&ChunkRecord> {
        self.slots
            .get(slot)
            .and_then(|s| s.as_ref())
            .map(|s| &s.record)
    }

    pub fn has_document(&self, id: &str) -> bool {
        self.by_document.contains_key(id)
    }

    /// Adds a document's chunks (replacing any earlier version). `index_text` is what BM25
    /// reads for each chunk (its context and text); vectors are normalised embeddings.
    pub fn put_document(&mut self, id: &str, chunks: Vec<(ChunkRecord, String, Vec<f32>)>) {
        self.remove_document(id);
        let mut slots = Vec::with_capacity(chunks.len());
        for (record, index_text, vector) in chunks {
            if self.dimensions == 0 {
                self.dimensions = vector.len();
            }
            let slot = self.slots.len();
            let mut counts: HashMap<String, u16> = HashMap::new();
            let found = terms(&index_text);
            for t in &found {
                *counts.entry(t.key.clone()).or_default() += 1;
            }
            for (key, tf) in counts {
                self.postings
                    .entry(key)
                    .or_default()
                    .push((slot as u32, tf));
            }
            let (quantised, scale) = quantise(&vector, self.dimensions);
            self.vectors.extend(quantised);
            self.total_length += found.len() as u64;
            self.slots.push(Some(Slot {
                record,
                length: found.len() as u32,
                scale,
            }));
            self.live += 1;
            slots.push(slot);
        }
        self.by_document.insert(id.to_string(), slots);
    }

    /// Removes a document's chunks; returns how many there were. Postings of removed slots are
    /// skipped at query time.
    pub fn remove_document(&mut self, id: &str) -> usize {
        let Some(slots) = self.by_document.remove(id) else {
            return 0;
        };
        for &slot in &slots {
            if let Some(s) = self.slots[slot].take() {
                self.total_length -= u64::from(s.length);
                self.live -= 1;
                let d = self.dimensions;
                self.vectors[slot * d..(slot + 1) * d].fill(0);
            }
        }
        slots.len()
    }

    /// The `k` best chunks for the query by `retriever`, among those the filter allows.
    pub fn search(
        &self,
        query: &str,
        vector: Option<&[f32]>,
        k: usize,
        retriever: Retriever,
        filter: &SearchFilter,
    ) -> Vec<Hit> {
        match (retriever, vector) {
            (Retriever::Lexical, _) | (_, None) => self.lexical(query, k, filter),
            (Retriever::Dense, Some(v)) => self.dense(v, k, filter),
            (Retriever::Fused, Some(v)) => self.fused(query, v, FUSION_DEPTH, filter, k),
        }
    }

    /// What a reranker should read: every chunk among either retriever's `depth` best, in
    /// fused order. Fusion alone can push one retriever's best below chunks both rank
    /// middling; the union keeps each retriever's best in front of the reranker.
    pub fn candidates(
        &self,
        query: &str,
        vector: Option<&[f32]>,
        depth: usize,
        filter: &SearchFilter,
    ) -> Vec<Hit> {
        match vector {
            Some(v) => self.fused(query, v, depth, filter, usize::MAX),
            None => self.lexical(query, depth, filter),
        }
    }

    /// Reciprocal-rank fusion of the lexical and dense `depth` best; the `k` best of it.
    fn fused(
        &self,
        query: &str,
        vector: &[f32],
        depth: usize,
        filter: &SearchFilter,
        k: usize,
    ) -> Vec<Hit> {
        let lexical = self.lexical(query, depth, filter);
        let dense = self.dense(vector, depth, filter);
        let mut fused: HashMap<usize, f32> = HashMap::new();
        for list in [&lexical, &dense] {
            for (rank, hit) in list.iter().enumerate() {
                *fused.entry(hit.slot).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
            }
        }
        top(
            fused
                .into_iter()
                .map(|(slot, score)| Hit { slot, score })
                .collect(),
            k,
        )
    }

    fn lexical(&self, query: &str, k: usize, filter: &SearchFilter) -> Vec<Hit> {
        if self.live == 0 {
            return Vec::new();
        }
        let n = self.live as f32;
        let average = self.total_length as f32 / n;
        let mut scores: HashMap<usize, f32> = HashMap::new();
        let mut keys: Vec<String> = terms(query).into_iter().map(|t| t.key).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let Some(list) = self.postings.get(&key) else {
                continue;
            };
            let live: Vec<&(u32, u16)> = list
                .iter()
                .filter(|(s, _)| self.slots[*s as usize].is_some())
                .collect();
            let df = live.len() as f32;
            if df == 0.0 {
                continue;
            }
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for (slot, tf) in live {
                let Some(s) = &self.slots[*slot as usize] else {
                    continue;
                };
                if !filter.allows(&s.record) {
                    continue;
                }
                let tf = f32::from(*tf);
                let norm = 1.0 - B + B * s.length as f32 / average.max(1.0);
                *scores.entry(*slot as usize).or_default() +=
                    idf * tf * (K1 + 1.0) / (tf + K1 * norm);
            }
        }
        top(
            scores
                .into_iter()
                .map(|(slot, score)| Hit { slot, score })
                .collect(),
            k,
        )
    }

    fn dense(&self, vector: &[f32], k: usize, filter: &SearchFilter) -> Vec<Hit> {
        let d = self.dimensions;
        if d == 0 || vector.len() != d {
            return Vec::new();
        }
        let query = quantise(vector, d);
        let mut hits = Vec::new();
        for (slot, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            if !filter.allows(&s.record) {
                continue;
            }
            hits.push(Hit {
                slot,
                score: self.cosine(slot, s, &query),
            });
        }
        top(hits, k)
    }

    /// The cosine of a live chunk's stored vector and `vector` (what the dense retriever
    /// ranks by); `None` for a removed slot or a vector of the wrong size.
    pub fn similarity(&self, slot: usize, vector: &[f32]) -> Option<f32> {
        let s = self.slots.get(slot)?.as_ref()?;
        if self.dimensions == 0 || vector.len() != self.dimensions {
            return None;
        }
        Some(self.cosine(slot, s, &quantise(vector, self.dimensions)))
    }

    fn cosine(&self, slot: usize, s: &Slot, (query, query_scale): &(Vec<i8>, f32)) -> f32 {
        let d = self.dimensions;
        let row = &self.vectors[slot * d..(slot + 1) * d];
        let dot: i32 = row
            .iter()
            .zip(query)
            .map(|(a, b)| i32::from(*a) * i32::from(*b))
            .sum();
        dot as f32 * s.scale * query_scale
    }
}

/// int8 codes and the scale that maps them back (the largest component becomes ±127).
fn quantise(vector: &[f32], dimensions: usize) -> (Vec<i8>, f32) {
    let max = vector
        .iter()
        .fold(0f32, |m, x| m.max(x.abs()))
        .max(f32::MIN_POSITIVE);
    let mut codes: Vec<i8> = vector
        .iter()
        .map(|x| (x / max * 127.0).round() as i8)
        .collect();
    codes.resize(dimensions, 0);
    (codes, max / 127.0)
}

fn top(mut hits: Vec<Hit>, k: usize) -> Vec<Hit> {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.slot.cmp(&b.slot)));
    hits.truncate(k);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(doc: &str, chunk: u32, text: &str, acl: &[&str]) -> ChunkRecord {
        ChunkRecord {
            document_id: doc.into(),
            chunk_id: chunk,
            start: 0,
            end: text.chars().count(),
            text: text.into(),
            title: doc.into(),
            metadata: Map::new(),
            acl: acl.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn index() -> CollectionIndex {
        let mut index = CollectionIndex::default();
        index.put_document(
            "travel",
            vec![
                (
                    record("travel", 0, "Meals are reimbursed up to $85 per day.", &[]),
                    "Meals are reimbursed up to $85 per day.".into(),
                    vec![1.0, 0.0],
                ),
                (
                    record("travel", 1, "Hotels in London cost up to $250.", &[]),
                    "Hotels in London cost up to $250.".into(),
                    vec![0.0, 1.0],
                ),
            ],
        );
        index.put_document(
            "secret",
            vec![(
                record(
                    "secret",
                    0,
                    "Board meals budget is confidential.",
                    &["board"],
                ),
                "Board meals budget is confidential.".into(),
                vec![0.9, 0.1],
            )],
        );
        index
    }

    #[test]
    fn lexical_dense_and_fused_find_the_right_chunk() {
        let index = index();
        let all = SearchFilter::default();
        let lexical = index.search("hotel London", None, 2, Retriever::Lexical, &all);
        assert_eq!(index.chunk(lexical[0].slot).map(|c| c.chunk_id), Some(1));
        let dense = index.search("", Some(&[0.0, 1.0]), 1, Retriever::Dense, &all);
        assert_eq!(index.chunk(dense[0].slot).map(|c| c.chunk_id), Some(1));
        let fused = index.search(
            "meals reimbursed",
            Some(&[1.0, 0.0]),
            3,
            Retriever::Fused,
            &all,
        );
        assert_eq!(
            index.chunk(fused[0].slot).map(|c| c.document_id.as_str()),
            Some("travel")
        );
    }

    #[test]
    fn acl_and_metadata_filters_apply_before_ranking() {
        let index = index();
        let outsider = SearchFilter {
            groups: Some(vec!["staff".into()]),
            ..Default::default()
        };
        let hits = index.search(
            "board meals budget",
            Some(&[0.9, 0.1]),
            5,
            Retriever::Fused,
            &outsider,
        );
        assert!(hits.iter().all(|h| index
            .chunk(h.slot)
            .is_some_and(|c| c.document_id != "secret")));
        let member = SearchFilter {
            groups: Some(vec!["board".into()]),
            ..Default::default()
        };
        let hits = index.search("board meals budget", None, 1, Retriever::Lexical, &member);
        assert_eq!(
            index.chunk(hits[0].slot).map(|c| c.document_id.as_str()),
            Some("secret")
        );
    }

    #[test]
    fn removed_documents_are_never_found_again() {
        let mut index = index();
        assert_eq!(index.remove_document("travel"), 2);
        let all = SearchFilter::default();
        for retriever in [Retriever::Lexical, Retriever::Dense, Retriever::Fused] {
            let hits = index.search("hotel London meals", Some(&[0.0, 1.0]), 5, retriever, &all);
            assert!(
                hits.iter().all(|h| index
                    .chunk(h.slot)
                    .is_some_and(|c| c.document_id == "secret")),
                "{retriever:?}"
            );
        }
        assert_eq!(index.len(), 1);
    }
}
