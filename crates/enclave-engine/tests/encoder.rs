//! The encoder on the real MiniLM model: truncation, batching across requests, precision.

use enclave_engine::encoder::convert::Precision;
use enclave_engine::encoder::{cosine, EncoderConfig, EncoderError, TextEncoder, Truncate};
use enclave_engine::testing::load_test_encoder;

fn embed(encoder: &dyn TextEncoder, texts: &[&str]) -> Vec<Vec<f32>> {
    let tokens = texts
        .iter()
        .enumerate()
        .map(|(i, t)| encoder.tokenize(i, t, Truncate::End).expect("tokenize"))
        .collect();
    encoder
        .encode(tokens)
        .expect("queue")
        .blocking_recv()
        .expect("reply")
        .expect("embed")
}

#[test]
fn truncation_modes_keep_special_tokens_and_refuse_when_asked() {
    let encoder = load_test_encoder(&EncoderConfig::default()).expect("encoder");
    let max = encoder.info().max_tokens;
    let long = "word ".repeat(max + 50);
    let end = encoder.tokenize(0, &long, Truncate::End).expect("end");
    let start = encoder.tokenize(0, &long, Truncate::Start).expect("start");
    assert_eq!((end.len(), start.len()), (max, max));
    assert_eq!((end[0], *end.last().expect("sep")), (101, 102));
    assert_eq!((start[0], *start.last().expect("sep")), (101, 102));
    assert_eq!(
        encoder.tokenize(3, &long, Truncate::None),
        Err(EncoderError::TooLong {
            index: 3,
            tokens: max + 52,
            max
        })
    );
    assert_eq!(
        encoder.tokenize(1, "  ", Truncate::End),
        Err(EncoderError::EmptyInput { index: 1 })
    );
}

#[test]
fn vectors_do_not_depend_on_batch_neighbours() {
    let encoder = load_test_encoder(&EncoderConfig::default()).expect("encoder");
    let alone = embed(&encoder, &["The invoice was paid late."]);
    let crowd = embed(
        &encoder,
        &[
            "Something else entirely.",
            "The invoice was paid late.",
            "A third sentence here.",
        ],
    );
    assert_eq!(alone[0].len(), 384);
    assert!(cosine(&alone[0], &crowd[1]) > 0.9999);
    let norm: f32 = crowd[2].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
}

#[test]
fn eight_bit_weights_stay_close_to_full_precision() {
    let q8 = load_test_encoder(&EncoderConfig::default()).expect("q8");
    let f32_config = EncoderConfig {
        precision: Precision::F32,
        ..EncoderConfig::default()
    };
    let full = load_test_encoder(&f32_config).expect("f32");
    let texts = [
        "hello world",
        "Quarterly revenue grew by ten percent.",
        "Where is my parcel?",
    ];
    for (a, b) in embed(&q8, &texts).iter().zip(embed(&full, &texts)) {
        assert!(cosine(a, &b) >= 0.999, "{}", cosine(a, &b));
    }
}
