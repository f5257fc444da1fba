//! The tokenizer half of converting an encoder folder: its vocabulary in the form llama.cpp's
//! tokenizers read from GGUF metadata.
//!
//! - BERT: WordPiece from `vocab.txt`, run by llama.cpp's WPM tokenizer.
//! - XLM-RoBERTa: SentencePiece Unigram from `tokenizer.json` (pieces, scores and the
//!   normalizer's precompiled character map), run by llama.cpp's UGM tokenizer.
//! - RoBERTa: GPT-2's byte-level BPE from `tokenizer.json` or `vocab.json` + `merges.txt`, run by
//!   llama.cpp's BPE tokenizer with GPT-2's pre-tokenizer.

use std::fs;
use std::path::Path;

use base64::Engine as _;
use serde_json::Value as Json;

use super::convert::{input_err, read_json, ConvertError};
use super::gguf::Value;

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// A vocabulary ready to be written: tokens in id order, their types, Unigram scores when the
/// tokenizer has them, and the tokenizer's other GGUF keys (model, special ids, flags).
pub struct Vocab {
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub scores: Option<Vec<f32>>,
    pub metadata: Vec<(&'static str, Value)>,
}

impl Vocab {
    /// llama.cpp aborts the process on a vocabulary with a repeated token; refuse it instead.
    pub fn check_unique(&self) -> Result<(), ConvertError> {
        let mut seen = std::collections::HashSet::with_capacity(self.tokens.len());
        match self.tokens.iter().find(|t| !seen.insert(t.as_str())) {
            Some(token) => Err(ConvertError::Unsupported(format!(
                "the vocabulary lists the token '{token}' twice"
            ))),
            None => Ok(()),
        }
    }

    /// All GGUF keys of this vocabulary.
    pub fn into_metadata(self) -> Vec<(&'static str, Value)> {
        let mut keys = self.metadata;
        keys.push(("tokenizer.ggml.tokens", Value::StrArray(self.tokens)));
        keys.push((
            "tokenizer.ggml.token_type",
            Value::I32Array(self.token_types),
        ));
        if let Some(scores) = self.scores {
            keys.push(("tokenizer.ggml.scores", Value::F32Array(scores)));
        }
        keys
    }
}

/// The special-token keys of GGUF with the ids of `names` in `tokens` (llama.cpp would
/// otherwise assume its defaults, bert-base's 100–103 for WordPiece). Missing required ones are
/// an error.
fn special_ids(
    tokens: &[String],
    names: &[(&str, &'static str, bool)],
) -> Result<Vec<(&'static str, Value)>, ConvertError> {
    let mut keys = Vec::new();
    for &(token, key, required) in names {
        match tokens.iter().position(|t| t == token) {
            Some(id) => keys.push((key, Value::U32(id as u32))),
            None if required => {
                return Err(ConvertError::Unsupported(format!(
                    "the vocabulary has no {token} token"
                )))
            }
            None => {}
        }
    }
    Ok(keys)
}

/// The special tokens of RoBERTa-style vocabularies (both XLM-R's Unigram and RoBERTa's BPE):
/// `<s>` opens and `</s>` closes and separates, as the pair templates expect.
const ROBERTA_SPECIALS: [(&str, &str, bool); 6] = [
    ("<s>", "tokenizer.ggml.bos_token_id", true),
    ("<s>", "tokenizer.ggml.cls_token_id", true),
    ("</s>", "tokenizer.ggml.eos_token_id", true),
    ("</s>", "tokenizer.ggml.seperator_token_id", true),
    ("<pad>", "tokenizer.ggml.padding_token_id", false),
    ("<mask>", "tokenizer.ggml.mask_token_id", false),
];

/// BERT's WordPiece vocabulary from `vocab.txt`.
pub fn wordpiece(dir: &Path) -> Result<Vocab, ConvertError> {
    let path = dir.join("vocab.txt");
    let text = fs::read_to_string(&path).map_err(|e| input_err(&path, e))?;
    let (tokens, token_types) = phantom_vocab(&text);
    let mut metadata = special_ids(
        &tokens,
        &[
            ("[CLS]", "tokenizer.ggml.bos_token_id", true),
            ("[CLS]", "tokenizer.ggml.cls_token_id", true),
            ("[SEP]", "tokenizer.ggml.seperator_token_id", true),
            ("[UNK]", "tokenizer.ggml.unknown_token_id", true),
            ("[PAD]", "tokenizer.ggml.padding_token_id", false),
            ("[MASK]", "tokenizer.ggml.mask_token_id", false),
        ],
    )?;
    let normalizer = normalizer_flags(dir);
    metadata.extend([
        ("tokenizer.ggml.model", Value::Str("bert".into())),
        (
            "tokenizer.ggml.normalizer.lowercase",
            Value::Bool(normalizer.lowercase),
        ),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
    ]);
    // Unset, llama.cpp strips accents exactly when it lowercases, as BERT's normalizer does.
    if let Some(strip) = normalizer.strip_accents {
        metadata.push((
            "tokenizer.ggml.normalizer.strip_accents",
            Value::Bool(strip),
        ));
    }
    Ok(Vocab {
        tokens,
        token_types,
        scores: None,
        metadata,
    })
}

/// WordPiece tokens in llama.cpp's form: continuation pieces lose `##`, word starts gain `▁`,
/// bracketed special tokens stay as they are.
fn phantom_vocab(vocab: &str) -> (Vec<String>, Vec<i32>) {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    vocab
        .lines()
        .map(|token| {
            if specials.contains(&token) {
                (token.to_string(), CONTROL)
            } else if let Some(piece) = token.strip_prefix("##") {
                (piece.to_string(), NORMAL)
            } else {
                (format!("\u{2581}{token}"), NORMAL)
            }
        })
        .unzip()
}

fn read_optional_json(path: &Path) -> Option<Json> {
    let text = fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// How BERT's normalizer treats case and accents.
struct NormalizerFlags {
    lowercase: bool,
    /// `None`: as `lowercase` (BERT's default).
    strip_accents: Option<bool>,
}

/// The WordPiece normalizer's flags, as the folder's tokenizer.json or tokenizer_config.json
/// gives them; uncased, like most BERT encoders, when neither does.
fn normalizer_flags(dir: &Path) -> NormalizerFlags {
    let tokenizer = read_optional_json(&dir.join("tokenizer.json"));
    let normalizer = tokenizer.as_ref().map(|t| &t["normalizer"]);
    let config = read_optional_json(&dir.join("tokenizer_config.json"));
    let lowercase = normalizer
        .and_then(|n| n["lowercase"].as_bool())
        .or_else(|| config.as_ref().and_then(|c| c["do_lower_case"].as_bool()))
        .unwrap_or(true);
    let strip_accents = normalizer
        .and_then(|n| n["strip_accents"].as_bool())
        .or_else(|| config.as_ref().and_then(|c| c["strip_accents"].as_bool()));
    NormalizerFlags {
        lowercase,
        strip_accents,
    }
}

/// XLM-RoBERTa's SentencePiece Unigram vocabulary from `tokenizer.json`.
pub fn unigram(dir: &Path) -> Result<Vocab, ConvertError> {
    let path = dir.join("tokenizer.json");
    let tokenizer = read_json(&path)?;
    let model = &tokenizer["model"];
    if model["type"].as_str() != Some("Unigram") {
        return Err(ConvertError::Unsupported(format!(
            "{}: an XLM-RoBERTa tokenizer must be a Unigram model",
            path.display()
        )));
    }
    let pieces = model["vocab"]
        .as_array()
        .ok_or_else(|| input_err(&path, "model.vocab is not a list"))?;
    let mut tokens = Vec::with_capacity(pieces.len());
    let mut scores = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let (Some(text), Some(score)) = (piece[0].as_str(), piece[1].as_f64()) else {
            return Err(input_err(&path, "model.vocab holds a malformed piece"));
        };
        tokens.push(text.to_string());
        scores.push(score as f32);
    }
    let unknown = model["unk_id"]
        .as_u64()
        .map(|id| id as usize)
        .filter(|&id| id < tokens.len())
        .ok_or_else(|| input_err(&path, "model.unk_id must name a piece"))?;
    let special: Vec<&str> = tokenizer["added_tokens"]
        .as_array()
        .map(|added| {
            added
                .iter()
                .filter(|t| t["special"].as_bool() == Some(true))
                .filter_map(|t| t["content"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let token_types = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| {
            if id == unknown {
                UNKNOWN
            } else if special.contains(&token.as_str()) {
                CONTROL
            } else {
                NORMAL
            }
        })
        .collect();
    let mut metadata = special_ids(&tokens, &ROBERTA_SPECIALS)?;
    metadata.extend([
        (
            "tokenizer.ggml.unknown_token_id",
            Value::U32(unknown as u32),
        ),
        ("tokenizer.ggml.model", Value::Str("t5".into())),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
        // SentencePiece's defaults for XLM-R: a leading "▁" and runs of spaces merged.
        ("tokenizer.ggml.add_space_prefix", Value::Bool(true)),
        ("tokenizer.ggml.remove_extra_whitespaces", Value::Bool(true)),
    ]);
    if let Some(map) = precompiled_charsmap(&tokenizer["normalizer"]) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(map)
            .map_err(|e| input_err(&path, format!("precompiled_charsmap: {e}")))?;
        metadata.push(("tokenizer.ggml.precompiled_charsmap", Value::U8Array(bytes)));
    }
    Ok(Vocab {
        tokens,
        token_types,
        scores: Some(scores),
        metadata,
    })
}

/// RoBERTa's byte-level BPE vocabulary: `tokenizer.json` when the folder has one, otherwise
/// `vocab.json` and `merges.txt`. Tokens keep GPT-2's byte-to-character spelling (`Ġ` for a
/// leading space), which is the form llama.cpp's BPE tokenizer reads.
pub fn byte_level_bpe(dir: &Path) -> Result<Vocab, ConvertError> {
    // Added tokens (id, special?) that Hugging Face splits out of text before BPE runs.
    let mut added: Vec<(u64, bool)> = Vec::new();
    let config = read_optional_json(&dir.join("tokenizer_config.json"));
    let (path, ids, merges) = match read_optional_json(&dir.join("tokenizer.json")) {
        Some(tokenizer) => {
            let path = dir.join("tokenizer.json");
            check_plain_byte_level(&tokenizer, config.as_ref(), &path)?;
            let model = &tokenizer["model"];
            let merges = model["merges"]
                .as_array()
                .ok_or_else(|| input_err(&path, "model.merges is not a list"))?
                .iter()
                .map(|m| match m {
                    // "a b", or ["a", "b"] in newer files.
                    Json::String(pair) => Some(pair.clone()),
                    Json::Array(pair) => Some(format!(
                        "{} {}",
                        pair.first()?.as_str()?,
                        pair.get(1)?.as_str()?
                    )),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| input_err(&path, "model.merges holds a malformed merge"))?;
            let mut ids = model["vocab"].clone();
            // Added tokens (e.g. <mask>) may live outside the BPE vocabulary.
            for token in tokenizer["added_tokens"].as_array().into_iter().flatten() {
                if let (Some(content), Some(id)) = (token["content"].as_str(), token["id"].as_u64())
                {
                    ids[content] = Json::from(id);
                    added.push((id, token["special"].as_bool() == Some(true)));
                }
            }
            (path, ids, merges)
        }
        None => {
            let path = dir.join("vocab.json");
            check_plain_byte_level(&Json::Null, config.as_ref(), &path)?;
            let ids = read_json(&path)?;
            let merges_path = dir.join("merges.txt");
            let text = fs::read_to_string(&merges_path).map_err(|e| input_err(&merges_path, e))?;
            let merges = text
                .lines()
                .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            (path, ids, merges)
        }
    };
    let map = ids
        .as_object()
        .ok_or_else(|| input_err(&path, "the vocabulary is not a token → id map"))?;
    let mut tokens = vec![None; map.len()];
    for (token, id) in map {
        let slot = id
            .as_u64()
            .and_then(|id| tokens.get_mut(id as usize))
            .ok_or_else(|| {
                input_err(
                    &path,
                    format!("token '{token}' has an id outside 0..{}", map.len()),
                )
            })?;
        *slot = Some(token.clone());
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| input_err(&path, "the token ids have gaps"))?;
    // RoBERTa's specials, and whatever tokenizer.json marks special; other added tokens are
    // matched whole in text, as Hugging Face does, which llama.cpp does for user-defined ones.
    const SPECIAL: [&str; 5] = ["<s>", "</s>", "<pad>", "<unk>", "<mask>"];
    let token_types = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| {
            let added = added.iter().find(|(a, _)| *a == id as u64);
            match (t.as_str(), added) {
                ("<unk>", _) => UNKNOWN,
                (t, _) if SPECIAL.contains(&t) => CONTROL,
                (_, Some((_, true))) => CONTROL,
                (_, Some((_, false))) => USER_DEFINED,
                _ => NORMAL,
            }
        })
        .collect();
    let unknown = [("<unk>", "tokenizer.ggml.unknown_token_id", false)];
    let mut metadata = special_ids(&tokens, &[ROBERTA_SPECIALS.as_slice(), &unknown].concat())?;
    metadata.extend([
        ("tokenizer.ggml.model", Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Value::Str("gpt-2".into())),
        ("tokenizer.ggml.merges", Value::StrArray(merges)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
    ]);
    Ok(Vocab {
        tokens,
        token_types,
        scores: None,
        metadata,
    })
}

/// llama.cpp runs GPT-2's byte-level BPE exactly: its regex, no normalizer, no space added in
/// front. Refuses a tokenizer that differs (it would tokenize text differently, silently).
fn check_plain_byte_level(
    tokenizer: &Json,
    config: Option<&Json>,
    path: &Path,
) -> Result<(), ConvertError> {
    let refuse = |what: &str| {
        Err(ConvertError::Unsupported(format!(
            "{}: {what} (RoBERTa's plain byte-level BPE is supported)",
            path.display()
        )))
    };
    if config.is_some_and(|c| c["add_prefix_space"].as_bool() == Some(true)) {
        return refuse("add_prefix_space is on");
    }
    if tokenizer.is_null() {
        return Ok(());
    }
    if tokenizer["model"]["type"].as_str() != Some("BPE") {
        return refuse("tokenizer.json holds no BPE model");
    }
    if !tokenizer["normalizer"].is_null() {
        return refuse("the tokenizer has a normalizer");
    }
    let pre = &tokenizer["pre_tokenizer"];
    if pre["type"].as_str() != Some("ByteLevel")
        || pre["add_prefix_space"].as_bool() == Some(true)
        || pre["use_regex"].as_bool() == Some(false)
    {
        return refuse("the pre-tokenizer is not GPT-2's byte-level split without a prefix space");
    }
    Ok(())
}

/// The base64 character map of a `Precompiled` normalizer, alone or inside a `Sequence`.
fn precompiled_charsmap(normalizer: &Json) -> Option<&str> {
    match normalizer["type"].as_str()? {
        "Precompiled" => normalizer["precompiled_charsmap"].as_str(),
        "Sequence" => normalizer["normalizers"]
            .as_array()?
            .iter()
            .find_map(precompiled_charsmap),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_bpe_reads_vocab_json_and_merges_in_id_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vocab = r#"{"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "Ġhe": 5, "h": 4}"#;
        fs::write(dir.path().join("vocab.json"), vocab).expect("vocab");
        fs::write(dir.path().join("merges.txt"), "#version: 0.2\nĠ h\nĠh e\n").expect("merges");
        let bpe = byte_level_bpe(dir.path()).expect("a BPE vocabulary");
        assert_eq!(bpe.tokens, ["<s>", "<pad>", "</s>", "<unk>", "h", "Ġhe"]);
        assert_eq!(
            bpe.token_types,
            [CONTROL, CONTROL, CONTROL, UNKNOWN, NORMAL, NORMAL]
        );
        let merges = bpe.metadata.iter().find_map(|(k, v)| match v {
            Value::StrArray(m) if *k == "tokenizer.ggml.merges" => Some(m.clone()),
            _ => None,
        });
        assert_eq!(merges, Some(vec!["Ġ h".to_string(), "Ġh e".to_string()]));
        // Ids with a gap cannot be laid out as llama.cpp's token list.
        fs::write(dir.path().join("vocab.json"), r#"{"<s>": 0, "</s>": 2}"#).expect("vocab");
        assert!(byte_level_bpe(dir.path()).is_err());
    }

    #[test]
    fn byte_level_bpe_refuses_tokenizers_llama_cpp_would_read_differently() {
        let path = Path::new("tokenizer.json");
        let plain = serde_json::json!({
            "model": {"type": "BPE"},
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
        });
        assert!(check_plain_byte_level(&plain, None, path).is_ok());
        let mut prefixed = plain.clone();
        prefixed["pre_tokenizer"]["add_prefix_space"] = true.into();
        assert!(check_plain_byte_level(&prefixed, None, path).is_err());
        let mut normalized = plain.clone();
        normalized["normalizer"] = serde_json::json!({"type": "Lowercase"});
        assert!(check_plain_byte_level(&normalized, None, path).is_err());
        let mut wordpiece = plain.clone();
        wordpiece["model"]["type"] = "WordPiece".into();
        assert!(check_plain_byte_level(&wordpiece, None, path).is_err());
        let config = serde_json::json!({"add_prefix_space": true});
        assert!(check_plain_byte_level(&Json::Null, Some(&config), path).is_err());
    }

    #[test]
    fn wordpiece_uses_phantom_spaces() {
        let (tokens, types) = phantom_vocab("[PAD]\nhello\n##ing\n[CLS]");
        assert_eq!(tokens, ["[PAD]", "\u{2581}hello", "ing", "[CLS]"]);
        assert_eq!(types, [3, 1, 1, 3]);
    }

    #[test]
    fn special_ids_come_from_the_vocabulary() {
        let tokens: Vec<String> = ["[PAD]", "[CLS]", "[SEP]"].map(String::from).to_vec();
        let keys = special_ids(
            &tokens,
            &[
                ("[CLS]", "cls", true),
                ("[SEP]", "sep", true),
                ("[MASK]", "mask", false),
            ],
        )
        .expect("ids");
        let ids: Vec<(&str, u32)> = keys
            .iter()
            .map(|(k, v)| match v {
                Value::U32(id) => (*k, *id),
                _ => (*k, u32::MAX),
            })
            .collect();
        assert_eq!(ids, [("cls", 1), ("sep", 2)]);
        assert!(special_ids(&tokens, &[("[UNK]", "unk", true)]).is_err());
    }

    #[test]
    fn charsmap_is_found_inside_a_sequence() {
        let normalizer = serde_json::json!({
            "type": "Sequence",
            "normalizers": [
                { "type": "Precompiled", "precompiled_charsmap": "AAAA" },
                { "type": "Replace" }
            ]
        });
        assert_eq!(precompiled_charsmap(&normalizer), Some("AAAA"));
        assert_eq!(
            precompiled_charsmap(&serde_json::json!({ "type": "NFKC" })),
            None
        );
    }
}
