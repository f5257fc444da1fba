//! Turns a BERT or XLM-RoBERTa safetensors folder (config.json, model.safetensors, and
//! vocab.txt or tokenizer.json) into a quantized GGUF that llama.cpp's BERT path runs: tensors
//! renamed to llama.cpp's names, the vocabulary in the form llama.cpp's tokenizers read
//! ([`super::vocab`]), then quantized by llama.cpp itself. The result is cached under
//! `ENCLAVE_HOME` ([`cache_dir`]); the model folder is only read.
//!
//! A `*ForSequenceClassification` model (a cross-encoder) keeps its pooler and classifier as
//! llama.cpp's rank head. Cross-encoders read a query–document pair with the document in token
//! segment B, but llama.cpp's BERT graph adds segment A's type embedding to every token. So the
//! vocabulary is written twice: ids from [`SEGMENT_B_OFFSET_KEY`] on are segment-B copies whose
//! word embedding already holds `type_B - type_A`, which makes llama.cpp's sum exactly the
//! model's own.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::gguf::{self, Tensor, Value};
use super::vocab::{self, Vocab};
use crate::home::enclave_home;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {reason}")]
    Input { path: String, reason: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("llama.cpp could not quantize {0}")]
    Quantize(String),
}

/// GGUF key holding the id of the first segment-B token copy (absent: no copies).
pub const SEGMENT_B_OFFSET_KEY: &str = "enclave.segment_b_offset";

/// Marks segment-B copies in the vocabulary. Tokenized text can never produce it: `[` is
/// punctuation, which WordPiece always splits into a word of its own.
const SEGMENT_B_MARK: &str = "[B]";

pub(super) fn input_err(path: &Path, reason: impl ToString) -> ConvertError {
    ConvertError::Input {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Weight precision of the converted model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bfloat16 weights, multiplied with the CPU's AVX-512 BF16 dot products.
    Bf16,
    /// 8-bit blocks of 32 (llama.cpp's Q8_0).
    Q8,
}

impl Precision {
    /// The name `--encoder-precision` takes.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Q8 => "q8",
        }
    }

    /// The cached file's name. The converter's version is part of it, so a conversion made by an
    /// older converter (v1 wrote no special-token ids nor pooling) is made again, not reused.
    fn file_name(self) -> &'static str {
        match self {
            Precision::F32 => "enclave-v2-f32.gguf",
            Precision::Bf16 => "enclave-v2-bf16.gguf",
            Precision::Q8 => "enclave-v2-q8_0.gguf",
        }
    }
}

/// The GGUF for `dir` at `precision`, converting on first use (cached by [`cache_dir`]).
pub fn gguf_for(dir: &Path, precision: Precision) -> Result<PathBuf, ConvertError> {
    let cache = cache_dir(dir)?;
    let target = cache.join(precision.file_name());
    if target.is_file() {
        return Ok(target);
    }
    let f32_path = cache.join(Precision::F32.file_name());
    if !f32_path.is_file() {
        write_atomically(&f32_path, |partial| write_gguf(&convert(dir)?, partial))?;
    }
    if precision == Precision::F32 {
        return Ok(f32_path);
    }
    write_atomically(&target, |partial| quantize(&f32_path, partial, precision))?;
    Ok(target)
}

/// The ready GGUF in `dir` when the folder holds one instead of safetensors weights: an encoder
/// whose architecture llama.cpp runs but this converter does not write (nomic-bert).
pub fn prebuilt_gguf(dir: &Path) -> Option<PathBuf> {
    if dir.join("model.safetensors").is_file() {
        return None;
    }
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "gguf"))
}

/// A prebuilt GGUF re-quantized to `precision`, once, into the folder's cache.
pub fn prebuilt_at(dir: &Path, gguf: &Path, precision: Precision) -> Result<PathBuf, ConvertError> {
    let stem = gguf
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let target = cache_dir(dir)?.join(format!("{stem}.{}", precision.file_name()));
    if !target.is_file() {
        write_atomically(&target, |partial| quantize(gguf, partial, precision))?;
    }
    Ok(target)
}

/// The full-precision GGUF of `dir`, written from `converted` (the folder's [`convert`]) when
/// the cache has none, so a caller that needs the tensors anyway converts the folder once.
pub(crate) fn f32_gguf_of(dir: &Path, converted: &Converted) -> Result<PathBuf, ConvertError> {
    let path = cache_dir(dir)?.join(Precision::F32.file_name());
    if !path.is_file() {
        write_atomically(&path, |partial| write_gguf(converted, partial))?;
    }
    Ok(path)
}

/// Runs `write` on a fresh temporary file beside `target`, then moves it into place in one
/// step: readers never see half a file, and loads converting the same folder at once (threads
/// or processes) each write their own file; the last move wins with identical content.
fn write_atomically(
    target: &Path,
    write: impl FnOnce(&Path) -> Result<(), ConvertError>,
) -> Result<(), ConvertError> {
    let write_err = |source| ConvertError::Write {
        path: target.display().to_string(),
        source,
    };
    let folder = target.parent().unwrap_or(Path::new("."));
    let partial = tempfile::Builder::new()
        .suffix(".partial")
        .tempfile_in(folder)
        .map_err(write_err)?;
    write(partial.path())?;
    partial.as_file().sync_all().map_err(write_err)?;
    partial.persist(target).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// Files whose contents key a folder's conversions (config and tokenizer files are small).
const KEYED_FILES: [&str; 9] = [
    "config.json",
    "modules.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "1_Pooling/config.json",
];

/// Where the conversions of `dir` are cached: `ENCLAVE_HOME/cache/encoders/<folder>-<key>`,
/// never inside the model folder, which may be read-only or shared. The key covers the folder's
/// full path, the contents of its config and tokenizer files, and the size and modification
/// time of its weights (too large to read at every start), so a folder whose files change is
/// converted again. The cache can be deleted at any time.
pub fn cache_dir(dir: &Path) -> Result<PathBuf, ConvertError> {
    let canonical = fs::canonicalize(dir).map_err(|e| input_err(dir, e))?;
    let mut key = Sha256::new();
    key.update(canonical.to_string_lossy().as_bytes());
    for file in KEYED_FILES {
        if let Ok(bytes) = fs::read(canonical.join(file)) {
            key.update(file.as_bytes());
            key.update((bytes.len() as u64).to_le_bytes());
            key.update(&bytes);
        }
    }
    if let Ok(meta) = fs::metadata(canonical.join("model.safetensors")) {
        key.update(meta.len().to_le_bytes());
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        key.update(modified.map_or(0, |t| t.as_nanos()).to_le_bytes());
    }
    let name = canonical
        .file_name()
        .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
    let digest = hex::encode(&key.finalize()[..8]);
    let cache = enclave_home()
        .join("cache")
        .join("encoders")
        .join(format!("{name}-{digest}"));
    fs::create_dir_all(&cache).map_err(|source| ConvertError::Write {
        path: cache.display().to_string(),
        source,
    })?;
    Ok(cache)
}

pub(super) fn read_json(path: &Path) -> Result<Json, ConvertError> {
    let text = fs::read_to_string(path).map_err(|e| input_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| input_err(path, e))
}

/// The labels of a sequence-classification model (a cross-encoder reranker), in logit order;
/// `None` for a sentence encoder.
pub fn classifier_labels(dir: &Path) -> Result<Option<Vec<String>>, ConvertError> {
    let config = read_json(&dir.join("config.json"))?;
    Ok(labels_of(&config))
}

fn labels_of(config: &Json) -> Option<Vec<String>> {
    let is_classifier = config["architectures"].as_array().is_some_and(|names| {
        names
            .iter()
            .filter_map(Json::as_str)
            .any(|n| n.ends_with("ForSequenceClassification"))
    });
    if !is_classifier {
        return None;
    }
    if let Some(map) = config["id2label"].as_object() {
        let mut labels: Vec<(u64, String)> = map
            .iter()
            .filter_map(|(id, label)| Some((id.parse().ok()?, label.as_str()?.to_string())))
            .collect();
        if labels.len() == map.len() && !labels.is_empty() {
            labels.sort();
            return Some(labels.into_iter().map(|(_, l)| l).collect());
        }
    }
    // Transformers' default when a config names no labels.
    let count = config["num_labels"].as_u64().unwrap_or(2);
    Some((0..count).map(|i| format!("LABEL_{i}")).collect())
}

fn config_u32(config: &Json, key: &str, path: &Path) -> Result<u32, ConvertError> {
    config[key]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| input_err(path, format!("missing {key}")))
}

/// llama.cpp's name for a Hugging Face BERT or XLM-RoBERTa tensor; `None` for tensors it does
/// not use. The head (BERT's pooler and classifier, RoBERTa's two-layer classifier) is used only
/// by a classifier; a RoBERTa checkpoint's unused pooler is dropped.
fn gguf_name(hf: &str, family: Family, classifier: bool) -> Option<String> {
    let name = hf
        .strip_prefix("bert.")
        .or_else(|| hf.strip_prefix("roberta."))
        .or_else(|| hf.strip_prefix("distilbert."))
        .unwrap_or(hf);
    let name = name.replace(".gamma", ".weight").replace(".beta", ".bias");
    let head = match (family, name.as_str()) {
        (Family::Bert, "pooler.dense.weight") => Some(Some("cls.weight")),
        (Family::Bert, "pooler.dense.bias") => Some(Some("cls.bias")),
        (Family::Bert, "classifier.weight") => Some(Some("cls.output.weight")),
        (Family::Bert, "classifier.bias") => Some(Some("cls.output.bias")),
        (Family::Roberta, "classifier.dense.weight") => Some(Some("cls.weight")),
        (Family::Roberta, "classifier.dense.bias") => Some(Some("cls.bias")),
        (Family::Roberta, "classifier.out_proj.weight") => Some(Some("cls.output.weight")),
        (Family::Roberta, "classifier.out_proj.bias") => Some(Some("cls.output.bias")),
        (_, n) if n.starts_with("pooler.") || n.starts_with("classifier.") => Some(None),
        _ => None,
    };
    if let Some(head) = head {
        return head.filter(|_| classifier).map(str::to_string);
    }
    let fixed = match name.as_str() {
        "embeddings.word_embeddings.weight" => Some("token_embd.weight".to_string()),
        "embeddings.token_type_embeddings.weight" => Some("token_types.weight".to_string()),
        "embeddings.position_embeddings.weight" => Some("position_embd.weight".to_string()),
        "embeddings.LayerNorm.weight" => Some("token_embd_norm.weight".to_string()),
        "embeddings.LayerNorm.bias" => Some("token_embd_norm.bias".to_string()),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    let rest = name
        .strip_prefix("encoder.layer.")
        .or_else(|| name.strip_prefix("transformer.layer."))?;
    let (block, rest) = rest.split_once('.')?;
    let (module, param) = rest.rsplit_once('.')?;
    let target = match module {
        "attention.self.query" | "attention.q_lin" => "attn_q",
        "attention.self.key" | "attention.k_lin" => "attn_k",
        "attention.self.value" | "attention.v_lin" => "attn_v",
        "attention.output.dense" | "attention.out_lin" => "attn_output",
        "attention.output.LayerNorm" | "sa_layer_norm" => "attn_output_norm",
        "intermediate.dense" | "ffn.lin1" => "ffn_up",
        "output.dense" | "ffn.lin2" => "ffn_down",
        "output.LayerNorm" | "output_layer_norm" => "layer_output_norm",
        _ => return None,
    };
    Some(format!("blk.{block}.{target}.{param}"))
}

fn to_f32_bytes(dtype: Dtype, data: &[u8], name: &str) -> Result<Vec<u8>, ConvertError> {
    match dtype {
        Dtype::F32 => Ok(data.to_vec()),
        Dtype::F16 | Dtype::BF16 => Ok(data
            .chunks_exact(2)
            .flat_map(|pair| {
                let bits = u16::from_le_bytes([pair[0], pair[1]]);
                let value = if dtype == Dtype::F16 {
                    f16_to_f32(bits)
                } else {
                    f32::from_bits(u32::from(bits) << 16)
                };
                value.to_le_bytes()
            })
            .collect()),
        other => Err(ConvertError::Unsupported(format!(
            "tensor {name} has dtype {other:?}"
        ))),
    }
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let value = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise it.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3ff;
            sign | ((113 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(value)
}

fn f32_values(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Appends segment-B copies of every token (see the module comment): their word embedding is
/// the original plus `type_B - type_A`, their name carries [`SEGMENT_B_MARK`]. Returns the id
/// of the first copy.
fn add_segment_b(tensors: &mut [Tensor], vocab: &mut Vocab) -> Result<u32, ConvertError> {
    let types = tensors
        .iter()
        .find(|t| t.name == "token_types.weight")
        .map(|t| f32_values(&t.data))
        .ok_or_else(|| ConvertError::Unsupported("no token type embeddings".into()))?;
    let embd = tensors
        .iter_mut()
        .find(|t| t.name == "token_embd.weight")
        .ok_or_else(|| ConvertError::Unsupported("no word embeddings".into()))?;
    let hidden = embd.dims[0] as usize;
    if types.len() < 2 * hidden || embd.dims[1] as usize != vocab.tokens.len() {
        return Err(ConvertError::Unsupported(
            "token type or word embeddings do not match the vocabulary".into(),
        ));
    }
    let shift: Vec<f32> = (0..hidden).map(|i| types[hidden + i] - types[i]).collect();
    let words = f32_values(&embd.data);
    let mut data = embd.data.clone();
    data.reserve(embd.data.len());
    for row in words.chunks_exact(hidden) {
        for (w, s) in row.iter().zip(&shift) {
            data.extend_from_slice(&(w + s).to_le_bytes());
        }
    }
    embd.data = data;
    embd.dims[1] *= 2;
    let offset = u32::try_from(vocab.tokens.len())
        .map_err(|_| ConvertError::Unsupported("vocabulary too large".into()))?;
    let copies: Vec<String> = vocab
        .tokens
        .iter()
        .map(|t| format!("{SEGMENT_B_MARK}{t}"))
        .collect();
    vocab.tokens.extend(copies);
    vocab.token_types.extend_from_within(..);
    if let Some(scores) = &mut vocab.scores {
        scores.extend_from_within(..);
    }
    Ok(offset)
}

/// GGUF key naming how a text pair is joined: "bert" (`[CLS] a [SEP] b [SEP]`) or "roberta"
/// (`<s> a </s></s> b </s>`).
pub const PAIR_STYLE_KEY: &str = "enclave.pair_style";

/// The architectures converted, by config.json's `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Bert,
    /// BERT with fewer layers, no token types and its own tensor and config names.
    DistilBert,
    /// RoBERTa and XLM-RoBERTa: BERT's layers, positions numbered from the padding id + 1, one
    /// token type, a two-layer classifier head. (They differ only in their tokenizer.)
    Roberta,
}

/// A DistilBERT config in BERT's terms. DistilBERT is BERT without token types (its layers
/// compute the same thing under other names, mapped by [`gguf_name`]); its sequence
/// classifiers use a ReLU pre-classifier that neither engine runs, and are refused.
fn distilbert_as_bert(mut config: Json, classifier: bool) -> Result<Json, ConvertError> {
    if classifier {
        return Err(ConvertError::Unsupported(
            "DistilBERT sequence classifiers (their ReLU head is not supported; DistilBERT sentence encoders are)".into(),
        ));
    }
    if config["sinusoidal_pos_embds"].as_bool() == Some(true) {
        return Err(ConvertError::Unsupported(
            "DistilBERT with sinusoidal position embeddings".into(),
        ));
    }
    for (bert, distil) in [
        ("hidden_size", "dim"),
        ("intermediate_size", "hidden_dim"),
        ("num_hidden_layers", "n_layers"),
        ("num_attention_heads", "n_heads"),
        ("hidden_act", "activation"),
    ] {
        config[bert] = config[distil].clone();
    }
    // One token type, with no embedding: both engines then add nothing for it.
    config["type_vocab_size"] = Json::from(1);
    config["layer_norm_eps"] = Json::from(1e-12);
    Ok(config)
}

/// sentence-transformers' `modules.json` lists what follows the transformer. Pooling and
/// normalisation are what Enclave does; anything more (a `Dense` projection, as the distiluse
/// models have) would change the vectors, so such a folder is refused rather than served wrong.
fn check_sentence_modules(dir: &Path) -> Result<(), ConvertError> {
    let path = dir.join("modules.json");
    if !path.is_file() {
        return Ok(());
    }
    let modules = read_json(&path)?;
    for module in modules.as_array().into_iter().flatten() {
        let kind = module["type"].as_str().unwrap_or_default();
        let known = ["Transformer", "Pooling", "Normalize"]
            .iter()
            .any(|k| kind == format!("sentence_transformers.models.{k}"));
        if !known {
            return Err(ConvertError::Unsupported(format!(
                "{}: a sentence-transformers module '{kind}' (a transformer with pooling and normalisation is supported)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// llama.cpp's pooling for a sentence encoder, from sentence-transformers' `1_Pooling/config.json`
/// (mean when the folder has none): 1 = mean, 2 = the first token.
fn sentence_pooling(dir: &Path) -> Result<u32, ConvertError> {
    check_sentence_modules(dir)?;
    let path = dir.join("1_Pooling").join("config.json");
    if !path.is_file() {
        return Ok(1);
    }
    let config = read_json(&path)?;
    let modes: Vec<&str> = config
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(key, on)| key.starts_with("pooling_mode_") && on.as_bool() == Some(true))
                .map(|(key, _)| key.as_str())
                .collect()
        })
        .unwrap_or_default();
    // Several modes on means their outputs are concatenated, which llama.cpp cannot pool.
    match modes.as_slice() {
        ["pooling_mode_mean_tokens"] => Ok(1),
        ["pooling_mode_cls_token"] => Ok(2),
        _ => Err(ConvertError::Unsupported(format!(
            "{}: pooling {modes:?} (one of mean or first-token pooling is supported)",
            path.display()
        ))),
    }
}

/// A model converted to llama.cpp's BERT layout, before it is written: GGUF metadata (the
/// hyper-parameters, vocabulary and head) and full-precision tensors under llama.cpp's names.
pub(crate) struct Converted {
    pub metadata: Vec<(&'static str, Value)>,
    pub tensors: Vec<Tensor>,
}

impl Converted {
    pub fn u32(&self, key: &str) -> Option<u32> {
        self.metadata.iter().find_map(|(k, v)| match v {
            Value::U32(x) if *k == key => Some(*x),
            _ => None,
        })
    }

    pub fn f32(&self, key: &str) -> Option<f32> {
        self.metadata.iter().find_map(|(k, v)| match v {
            Value::F32(x) if *k == key => Some(*x),
            _ => None,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

fn write_gguf(converted: &Converted, out: &Path) -> Result<(), ConvertError> {
    gguf::write(out, &converted.metadata, &converted.tensors).map_err(|source| {
        ConvertError::Write {
            path: out.display().to_string(),
            source,
        }
    })
}

/// Reads and converts the BERT-family model in `dir` (see the module's documentation).
pub(crate) fn convert(dir: &Path) -> Result<Converted, ConvertError> {
    let config_path = dir.join("config.json");
    let mut config = read_json(&config_path)?;
    let labels = labels_of(&config);
    let family = match config["model_type"].as_str().unwrap_or_default() {
        "bert" => Family::Bert,
        "xlm-roberta" | "roberta" => Family::Roberta,
        "distilbert" => {
            config = distilbert_as_bert(config, labels.is_some())?;
            Family::DistilBert
        }
        other => {
            return Err(ConvertError::Unsupported(format!(
                "model_type '{other}' (BERT, DistilBERT, RoBERTa and XLM-RoBERTa encoders are converted)"
            )))
        }
    };
    // Both engines run BERT's GELU; a model trained with another activation would be misread.
    match config["hidden_act"].as_str().unwrap_or("gelu") {
        "gelu" => {}
        other => {
            return Err(ConvertError::Unsupported(format!(
                "hidden_act '{other}' (encoders with GELU are converted)"
            )))
        }
    }
    let mut vocab = match (family, config["model_type"].as_str()) {
        (Family::Roberta, Some("roberta")) => vocab::byte_level_bpe(dir)?,
        (Family::Roberta, _) => vocab::unigram(dir)?,
        (Family::Bert | Family::DistilBert, _) => vocab::wordpiece(dir)?,
    };
    vocab.check_unique()?;

    let weights_path = dir.join("model.safetensors");
    let bytes = fs::read(&weights_path).map_err(|e| input_err(&weights_path, e))?;
    let weights = SafeTensors::deserialize(&bytes).map_err(|e| input_err(&weights_path, e))?;
    let mut tensors = Vec::new();
    for (hf_name, view) in weights.tensors() {
        let Some(name) = gguf_name(&hf_name, family, labels.is_some()) else {
            continue;
        };
        let dims = view.shape().iter().rev().map(|&d| d as u64).collect();
        let data = to_f32_bytes(view.dtype(), view.data(), &hf_name)?;
        tensors.push(Tensor { name, dims, data });
    }
    fuse_qkv(&mut tensors);
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = tensors.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(ConvertError::Unsupported(format!(
            "two tensors map to {}",
            pair[0].name
        )));
    }
    if !tensors.iter().any(|t| t.name == "token_embd.weight") {
        return Err(ConvertError::Unsupported(
            "no word embeddings found in model.safetensors".into(),
        ));
    }

    let mut context = config_u32(&config, "max_position_embeddings", &config_path)?;
    if family == Family::Roberta {
        // RoBERTa numbers positions from padding_idx + 1; llama.cpp from 0.
        let offset = config["pad_token_id"]
            .as_u64()
            .unwrap_or(1)
            .checked_add(1)
            .and_then(|o| u32::try_from(o).ok())
            .ok_or_else(|| input_err(&config_path, "pad_token_id is out of range"))?;
        drop_position_rows(&mut tensors, offset)?;
        context = context.saturating_sub(offset);
    }
    // Room for a pair's special tokens and some text, so truncation always has something left.
    const MIN_CONTEXT: u32 = 16;
    if context < MIN_CONTEXT {
        return Err(ConvertError::Unsupported(format!(
            "a context of {context} positions (at least {MIN_CONTEXT} are needed)"
        )));
    }

    let name = dir
        .file_name()
        .map_or_else(|| "bert".to_string(), |n| n.to_string_lossy().into_owned());
    let type_count = config["type_vocab_size"].as_u64().unwrap_or(2) as u32;
    let mut head = Vec::new();
    if let Some(labels) = &labels {
        let outputs = tensors
            .iter()
            .find(|t| t.name == "cls.output.weight")
            .map(|t| t.dims.get(1).copied().unwrap_or(1));
        if outputs != Some(labels.len() as u64) {
            return Err(ConvertError::Unsupported(format!(
                "a sequence classifier with {} labels needs a classifier weight with as many rows",
                labels.len()
            )));
        }
        head.push((
            "bert.classifier.output_labels",
            Value::StrArray(labels.clone()),
        ));
        // XLM-R has one token type and its tokenizer never asks for another.
        if family == Family::Bert && type_count >= 2 {
            let offset = add_segment_b(&mut tensors, &mut vocab)?;
            head.push((SEGMENT_B_OFFSET_KEY, Value::U32(offset)));
        }
    }
    // llama.cpp's pooling: 4 = rank (the first token through the classifier head), else what
    // the sentence encoder was trained with.
    let pooling = match labels {
        Some(_) => 4,
        None => sentence_pooling(dir)?,
    };
    let pair_style = match family {
        Family::Bert | Family::DistilBert => "bert",
        Family::Roberta => "roberta",
    };
    let eps = config["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;
    let metadata = [
        ("general.architecture", Value::Str("bert".into())),
        ("general.name", Value::Str(name)),
        ("general.file_type", Value::U32(0)),
        ("bert.context_length", Value::U32(context)),
        (
            "bert.embedding_length",
            Value::U32(config_u32(&config, "hidden_size", &config_path)?),
        ),
        (
            "bert.feed_forward_length",
            Value::U32(config_u32(&config, "intermediate_size", &config_path)?),
        ),
        (
            "bert.block_count",
            Value::U32(config_u32(&config, "num_hidden_layers", &config_path)?),
        ),
        (
            "bert.attention.head_count",
            Value::U32(config_u32(&config, "num_attention_heads", &config_path)?),
        ),
        ("bert.attention.layer_norm_epsilon", Value::F32(eps)),
        ("bert.attention.causal", Value::Bool(false)),
        ("bert.pooling_type", Value::U32(pooling)),
        ("tokenizer.ggml.token_type_count", Value::U32(type_count)),
        (PAIR_STYLE_KEY, Value::Str(pair_style.into())),
    ];
    let metadata = metadata
        .into_iter()
        .chain(vocab.into_metadata())
        .chain(head)
        .collect();
    Ok(Converted { metadata, tensors })
}

/// Joins each layer's query, key and value projections into one `attn_qkv` tensor (rows of Q,
/// then K, then V), which llama.cpp runs as one matrix product instead of three. Biases are
/// joined only where the weights were (llama.cpp ignores a fused bias beside separate weights).
fn fuse_qkv(tensors: &mut Vec<Tensor>) {
    for block in 0.. {
        let names = |param: &str| {
            let parts = ["attn_q", "attn_k", "attn_v"].map(|p| format!("blk.{block}.{p}.{param}"));
            (parts, format!("blk.{block}.attn_qkv.{param}"))
        };
        let (parts, fused) = names("weight");
        if !concat_rows(tensors, &parts, fused) {
            return;
        }
        let (parts, fused) = names("bias");
        concat_rows(tensors, &parts, fused);
    }
}

/// Replaces the tensors named `parts` with one tensor `name` holding their rows in order.
/// Changes nothing and answers false unless all exist with the same row width.
fn concat_rows(tensors: &mut Vec<Tensor>, parts: &[String], name: String) -> bool {
    let Some(mut found) = parts
        .iter()
        .map(|n| tensors.iter().position(|t| &t.name == n))
        .collect::<Option<Vec<usize>>>()
    else {
        return false;
    };
    let first = &tensors[found[0]].dims;
    let width = &first[..first.len() - 1];
    if found.iter().any(|&i| {
        let dims = &tensors[i].dims;
        dims.len() != first.len() || &dims[..dims.len() - 1] != width
    }) {
        return false;
    }
    let mut dims = first.clone();
    let last = dims.len() - 1;
    dims[last] = found.iter().map(|&i| tensors[i].dims[last]).sum();
    let mut data = Vec::new();
    for &i in &found {
        data.extend_from_slice(&tensors[i].data);
    }
    found.sort_unstable();
    for i in found.into_iter().rev() {
        tensors.remove(i);
    }
    tensors.push(Tensor { name, dims, data });
    true
}

/// Drops the first `rows` rows of the position embeddings.
fn drop_position_rows(tensors: &mut [Tensor], rows: u32) -> Result<(), ConvertError> {
    let positions = tensors
        .iter_mut()
        .find(|t| t.name == "position_embd.weight")
        .ok_or_else(|| ConvertError::Unsupported("no position embeddings".into()))?;
    let row_bytes = positions.dims[0] as usize * 4;
    let skip = rows as usize * row_bytes;
    if positions.data.len() <= skip {
        return Err(ConvertError::Unsupported(
            "fewer position embeddings than the padding offset".into(),
        ));
    }
    positions.data.drain(..skip);
    positions.dims[1] -= u64::from(rows);
    Ok(())
}

/// Quantizes with llama.cpp's own quantizer (1-D tensors stay F32).
fn quantize(input: &Path, output: &Path, precision: Precision) -> Result<(), ConvertError> {
    let ftype = match precision {
        Precision::F32 => llama_cpp_sys_2::LLAMA_FTYPE_ALL_F32,
        Precision::Bf16 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_BF16,
        Precision::Q8 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0,
    };
    let to_c = |p: &Path| {
        CString::new(p.to_string_lossy().as_bytes())
            .map_err(|_| ConvertError::Quantize(p.display().to_string()))
    };
    let (c_in, c_out) = (to_c(input)?, to_c(output)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call, and the params
    // struct comes from llama.cpp's own defaults with only plain fields changed.
    let status = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.ftype = ftype;
        // Embedding rows are looked up, not multiplied: keeping them exact costs no speed.
        params.token_embedding_type = llama_cpp_sys_2::GGML_TYPE_F32;
        params.nthread = 0;
        llama_cpp_sys_2::llama_model_quantize(c_in.as_ptr(), c_out.as_ptr(), &params)
    };
    if status == 0 {
        Ok(())
    } else {
        let _ = fs::remove_file(output);
        Err(ConvertError::Quantize(input.display().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_transformer_modules_beyond_pooling_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let module = |kind: &str| serde_json::json!({"type": format!("sentence_transformers.models.{kind}")});
        let write = |kinds: &[&str]| {
            let list: Vec<Json> = kinds.iter().map(|k| module(k)).collect();
            fs::write(
                dir.path().join("modules.json"),
                Json::from(list).to_string(),
            )
            .expect("write");
        };
        assert!(
            check_sentence_modules(dir.path()).is_ok(),
            "no modules.json"
        );
        write(&["Transformer", "Pooling", "Normalize"]);
        assert!(check_sentence_modules(dir.path()).is_ok());
        write(&["Transformer", "Pooling", "Dense"]);
        let err = check_sentence_modules(dir.path()).expect_err("a Dense layer");
        assert!(err.to_string().contains("Dense"), "{err}");
    }

    #[test]
    fn hf_names_map_to_llama_cpp_names() {
        assert_eq!(
            gguf_name(
                "encoder.layer.3.attention.self.query.weight",
                Family::Bert,
                false
            )
            .as_deref(),
            Some("blk.3.attn_q.weight")
        );
        assert_eq!(
            gguf_name(
                "bert.encoder.layer.0.output.LayerNorm.gamma",
                Family::Bert,
                false
            )
            .as_deref(),
            Some("blk.0.layer_output_norm.weight")
        );
        assert_eq!(
            gguf_name("embeddings.word_embeddings.weight", Family::Bert, true).as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(gguf_name("pooler.dense.weight", Family::Bert, false), None);
        assert_eq!(
            gguf_name("embeddings.position_ids", Family::Bert, true),
            None
        );
        // A classifier keeps its head as llama.cpp's rank head.
        assert_eq!(
            gguf_name("bert.pooler.dense.weight", Family::Bert, true).as_deref(),
            Some("cls.weight")
        );
        assert_eq!(
            gguf_name("classifier.bias", Family::Bert, true).as_deref(),
            Some("cls.output.bias")
        );
        assert_eq!(
            gguf_name("classifier.out_proj.weight", Family::Roberta, true).as_deref(),
            Some("cls.output.weight")
        );
        // A RoBERTa classifier's leftover pooler must not take the head's name.
        assert_eq!(
            gguf_name("roberta.pooler.dense.weight", Family::Roberta, true),
            None
        );
        assert_eq!(
            gguf_name(
                "roberta.encoder.layer.1.intermediate.dense.bias",
                Family::Roberta,
                false
            )
            .as_deref(),
            Some("blk.1.ffn_up.bias")
        );
        for (distil, llama) in [
            (
                "distilbert.transformer.layer.2.attention.q_lin.weight",
                "blk.2.attn_q.weight",
            ),
            (
                "distilbert.transformer.layer.0.sa_layer_norm.bias",
                "blk.0.attn_output_norm.bias",
            ),
            (
                "transformer.layer.5.ffn.lin2.weight",
                "blk.5.ffn_down.weight",
            ),
            (
                "distilbert.embeddings.LayerNorm.weight",
                "token_embd_norm.weight",
            ),
        ] {
            assert_eq!(
                gguf_name(distil, Family::DistilBert, false).as_deref(),
                Some(llama)
            );
        }
    }

    #[test]
    fn classifier_labels_follow_the_config() {
        let encoder = serde_json::json!({ "architectures": ["BertModel"] });
        assert_eq!(labels_of(&encoder), None);
        let reranker = serde_json::json!({
            "architectures": ["BertForSequenceClassification"],
            "id2label": { "1": "relevant", "0": "irrelevant" }
        });
        assert_eq!(
            labels_of(&reranker),
            Some(vec!["irrelevant".to_string(), "relevant".to_string()])
        );
        let unnamed = serde_json::json!({
            "architectures": ["BertForSequenceClassification"],
            "num_labels": 1
        });
        assert_eq!(labels_of(&unnamed), Some(vec!["LABEL_0".to_string()]));
    }

    #[test]
    fn query_key_value_rows_are_joined_in_order() {
        let tensor = |name: &str, dims: Vec<u64>, data: Vec<u8>| Tensor {
            name: name.into(),
            dims,
            data,
        };
        let mut tensors = vec![
            tensor("blk.0.attn_v.weight", vec![2, 1], vec![5, 6]),
            tensor("blk.0.attn_q.weight", vec![2, 1], vec![1, 2]),
            tensor("blk.0.attn_k.weight", vec![2, 1], vec![3, 4]),
            tensor("blk.0.attn_q.bias", vec![1], vec![7]),
            tensor("blk.0.attn_k.bias", vec![1], vec![8]),
            tensor("blk.0.attn_v.bias", vec![1], vec![9]),
            // Mismatched widths in the next layer: left as they are.
            tensor("blk.1.attn_q.weight", vec![2, 1], vec![0, 0]),
            tensor("blk.1.attn_k.weight", vec![3, 1], vec![0, 0, 0]),
            tensor("blk.1.attn_v.weight", vec![2, 1], vec![0, 0]),
        ];
        fuse_qkv(&mut tensors);
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "blk.1.attn_q.weight",
                "blk.1.attn_k.weight",
                "blk.1.attn_v.weight",
                "blk.0.attn_qkv.weight",
                "blk.0.attn_qkv.bias"
            ]
        );
        assert_eq!(
            (tensors[3].dims.clone(), tensors[3].data.clone()),
            (vec![2, 3], vec![1, 2, 3, 4, 5, 6])
        );
        assert_eq!(tensors[4].data, [7, 8, 9]);
    }

    #[test]
    fn segment_b_copies_carry_the_type_difference() {
        let floats = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut tensors = vec![
            Tensor {
                name: "token_embd.weight".into(),
                dims: vec![2, 2],
                data: floats(&[1.0, 2.0, 3.0, 4.0]),
            },
            Tensor {
                name: "token_types.weight".into(),
                dims: vec![2, 2],
                data: floats(&[0.5, 0.5, 1.5, -0.5]),
            },
        ];
        let mut vocab = Vocab {
            tokens: vec!["[CLS]".to_string(), "\u{2581}a".to_string()],
            token_types: vec![3, 1],
            scores: None,
            metadata: Vec::new(),
        };
        let offset = add_segment_b(&mut tensors, &mut vocab).expect("copies");
        assert_eq!(offset, 2);
        assert_eq!(vocab.tokens[2..], ["[B][CLS]", "[B]\u{2581}a"]);
        assert_eq!(vocab.token_types, [3, 1, 3, 1]);
        assert_eq!(tensors[0].dims, [2, 4]);
        assert_eq!(
            f32_values(&tensors[0].data),
            [1.0, 2.0, 3.0, 4.0, 2.0, 1.0, 4.0, 3.0]
        );
    }

    #[test]
    fn half_floats_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
