//! `enclave guard eval`: the guardrail figures on the labelled sets in `eval/guard/` — the PII
//! and secret detectors on `pii.jsonl` (precision and recall per type, false positives on the
//! hard-negative lines), and the injection monitor on the held-out `injection_test.jsonl`
//! (precision, recall, F1, recall per kind, false positives on benign look-alikes).

use std::collections::BTreeMap;

use anyhow::Result;
use enclave_guard::{char_offsets, Detectors, InjectionHead, Kind};
use serde_json::{json, Value};

use crate::guard::{injection_scores, load_embedder, read_jsonl, EvalArgs};

#[derive(Default)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

impl Counts {
    fn json(&self) -> Value {
        let p = ratio(self.tp, self.tp + self.fp);
        let r = ratio(self.tp, self.tp + self.fn_);
        json!({ "precision": p, "recall": r, "tp": self.tp, "fp": self.fp, "fn": self.fn_ })
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        (a as f64 / b as f64 * 1000.0).round() / 1000.0
    }
}

/// The CPU's vector extensions, for the figures' context.
pub fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let avx = if flags.contains("avx512f") {
        "AVX-512"
    } else if flags.contains("avx2") {
        "AVX2"
    } else {
        "no AVX2"
    };
    format!(
        "{model}, {avx}, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )
}

pub fn evaluate(args: &EvalArgs) -> Result<Value> {
    let mut report = json!({ "cpu": cpu(), "pii": pii(args, "pii.jsonl")? });
    // The held-out set was written apart from the detectors and never used to change them.
    if args.dir.join("pii_heldout.jsonl").exists() {
        report["pii_heldout"] = pii(args, "pii_heldout.jsonl")?;
    }
    report["injection"] = injection(args)?;
    Ok(report)
}

fn pii(args: &EvalArgs, file: &str) -> Result<Value> {
    let records = read_jsonl(&args.dir.join(file))?;
    let mut per_type: BTreeMap<&'static str, Counts> = BTreeMap::new();
    let mut exact = 0usize;
    let (mut negatives, mut negatives_flagged) = (0usize, 0usize);
    let mut misses = Vec::new();
    for r in &records {
        let text = r["text"].as_str().unwrap_or_default();
        let gold: Vec<(Kind, usize, usize)> = r["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some((
                    Kind::parse(s["type"].as_str()?)?,
                    s["start"].as_u64()? as usize,
                    s["end"].as_u64()? as usize,
                ))
            })
            .collect();
        let found: Vec<(Kind, usize, usize)> = Detectors
            .scan(text)
            .iter()
            .map(|f| {
                (
                    f.kind,
                    char_offsets(text, f.start),
                    char_offsets(text, f.end),
                )
            })
            .collect();
        if r["kind"] == "hard_negative" {
            negatives += 1;
            if !found.is_empty() {
                negatives_flagged += 1;
            }
        }
        let mut matched = vec![false; gold.len()];
        for &(kind, start, end) in &found {
            let hit = gold
                .iter()
                .enumerate()
                .find(|(i, g)| !matched[*i] && g.0 == kind && g.1 < end && start < g.2);
            let counts = per_type.entry(kind.as_str()).or_default();
            match hit {
                Some((i, g)) => {
                    matched[i] = true;
                    counts.tp += 1;
                    if g.1 == start && g.2 == end {
                        exact += 1;
                    }
                }
                None => {
                    counts.fp += 1;
                    misses.push(json!({"id": r["id"], "false_positive": kind.as_str(), "text": text.chars().skip(start).take(end - start).collect::<String>()}));
                }
            }
        }
        for (g, m) in gold.iter().zip(&matched) {
            if !m {
                per_type.entry(g.0.as_str()).or_default().fn_ += 1;
                misses.push(json!({"id": r["id"], "missed": g.0.as_str(), "text": text.chars().skip(g.1).take(g.2 - g.1).collect::<String>()}));
            }
        }
    }
    let mut all = Counts::default();
    for c in per_type.values() {
        all.tp += c.tp;
        all.fp += c.fp;
        all.fn_ += c.fn_;
    }
    let types: BTreeMap<&str, Value> = per_type.iter().map(|(k, c)| (*k, c.json())).collect();
    let mut out = json!({
        "lines": records.len(),
        "per_type": types,
        "overall": all.json(),
        "exact_span_share": ratio(exact, all.tp),
        "hard_negative_lines": negatives,
        "hard_negative_lines_flagged": negatives_flagged,
        "hard_negative_fp_rate": ratio(negatives_flagged, negatives),
    });
    if args.verbose {
        out["errors"] = Value::Array(misses);
    }
    Ok(out)
}

fn injection(args: &EvalArgs) -> Result<Value> {
    let records = read_jsonl(&args.dir.join("injection_test.jsonl"))?;
    let head = match &args.head {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(path)?)?,
        None => InjectionHead::shipped()?,
    };
    let encoder = load_embedder(&args.engine)?;
    let texts: Vec<&str> = records
        .iter()
        .map(|r| r["text"].as_str().unwrap_or_default())
        .collect();
    let scores = injection_scores(encoder.as_ref(), &head, &texts)?;
    let threshold = head.threshold;
    let mut all = Counts::default();
    let mut per_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut lookalikes, mut lookalikes_flagged) = (0usize, 0usize);
    let mut errors = Vec::new();
    for (r, &score) in records.iter().zip(&scores) {
        let injection = r["label"] == "injection";
        let flagged = score >= threshold;
        let kind = r["kind"].as_str().unwrap_or("?").to_string();
        let entry = per_kind.entry(kind.clone()).or_default();
        entry.0 += 1;
        if flagged == injection {
            entry.1 += 1;
        }
        match (flagged, injection) {
            (true, true) => all.tp += 1,
            (true, false) => all.fp += 1,
            (false, true) => all.fn_ += 1,
            _ => {}
        }
        if kind == "benign_lookalike" {
            lookalikes += 1;
            lookalikes_flagged += usize::from(flagged);
        }
        if flagged != injection {
            errors.push(json!({"kind": kind, "score": score, "text": r["text"]}));
        }
    }
    let precision = ratio(all.tp, all.tp + all.fp);
    let recall = ratio(all.tp, all.tp + all.fn_);
    let f1 = if precision + recall > 0.0 {
        (2.0 * precision * recall / (precision + recall) * 1000.0).round() / 1000.0
    } else {
        0.0
    };
    let kinds: BTreeMap<String, Value> = per_kind
        .into_iter()
        .map(|(k, (n, right))| (k, json!({ "n": n, "correct": ratio(right, n) })))
        .collect();
    let mut out = json!({
        "split": "injection_test.jsonl (held out; the head is trained on injection_train.jsonl)",
        "embedder": head.embedder,
        "threshold": threshold,
        "n": records.len(),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "per_kind": kinds,
        "benign_lookalikes": lookalikes,
        "benign_lookalike_fp_rate": ratio(lookalikes_flagged, lookalikes),
    });
    if args.verbose {
        out["errors"] = Value::Array(errors);
    }
    Ok(out)
}
