//! The engine on the real test model: tokenization, chat template, sampling and batching.

use std::time::Duration;

use enclave_engine::testing::load_test_model;
use enclave_engine::{
    ChatMessage, FinishReason, GenEvent, GenerationStream, GeneratorConfig, GeneratorError,
    SamplingParams, TextGenerator,
};

fn config(parallel: u32) -> GeneratorConfig {
    GeneratorConfig {
        parallel,
        context_per_sequence: 1024,
        queue_capacity: 4,
        ..GeneratorConfig::default()
    }
}

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        ..SamplingParams::default()
    }
}

/// Drains a generation: (text, reason, completion tokens).
fn collect(mut stream: GenerationStream) -> (String, FinishReason, u32) {
    let mut text = String::new();
    while let Some(event) = stream.blocking_recv() {
        match event {
            GenEvent::Text { text: piece, .. } => text.push_str(&piece),
            GenEvent::Done {
                reason,
                completion_tokens,
                ..
            } => return (text, reason, completion_tokens),
            GenEvent::Error(message) => panic!("generation failed: {message}"),
        }
    }
    panic!("stream ended without Done");
}

fn chat_prompt(model: &dyn TextGenerator, question: &str) -> Vec<u32> {
    let rendered = model
        .render_chat(&[ChatMessage::new("user", question)])
        .expect("template");
    model.tokenize(&rendered, true)
}

#[test]
fn tokenize_round_trips() {
    let model = load_test_model(&config(1)).expect("model");
    let text = "Enclave keeps data on your own hardware.";
    let tokens = model.tokenize(text, false);
    assert!(tokens.len() > 3 && tokens.len() < 30, "{tokens:?}");
    let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    assert_eq!(model.detokenize(&ids).expect("detokenize"), text);
    assert_eq!(model.token_pieces(&tokens).concat(), text);
    assert_eq!(
        model.detokenize(&[i64::from(model.info().vocab_size)]),
        Err(GeneratorError::InvalidToken(i64::from(
            model.info().vocab_size
        )))
    );
}

#[test]
fn chat_template_comes_from_the_gguf() {
    let model = load_test_model(&config(1)).expect("model");
    let rendered = model
        .render_chat(&[
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
        ])
        .expect("template");
    // SmolLM2 uses ChatML; the rendered prompt ends by opening the assistant's turn.
    assert!(
        rendered.contains("<|im_start|>user\nHi<|im_end|>"),
        "{rendered}"
    );
    assert!(
        rendered.trim_end().ends_with("<|im_start|>assistant"),
        "{rendered}"
    );
}

#[test]
fn greedy_answers_are_correct_and_deterministic() {
    let model = load_test_model(&config(2)).expect("model");
    let prompt = chat_prompt(&model, "What is the capital of France?");
    let (first, reason, n) = collect(model.submit(prompt.clone(), greedy(48)).expect("submit"));
    assert!(first.contains("Paris"), "{first}");
    assert!(n > 0 && n <= 48);
    assert!(matches!(
        reason,
        FinishReason::Complete | FinishReason::MaxTokens
    ));
    let (second, _, _) = collect(model.submit(prompt, greedy(48)).expect("submit"));
    assert_eq!(first, second);
}

#[test]
fn max_tokens_and_stop_sequences_end_generation() {
    let model = load_test_model(&config(2)).expect("model");
    let prompt = chat_prompt(&model, "Count from 1 to 20, separated by commas.");
    let (_, reason, n) = collect(model.submit(prompt.clone(), greedy(5)).expect("submit"));
    assert_eq!((reason, n), (FinishReason::MaxTokens, 5));

    let (full, _, _) = collect(model.submit(prompt.clone(), greedy(60)).expect("submit"));
    assert!(full.contains('5'), "{full}");
    let params = SamplingParams {
        stop: vec!["5".into()],
        ..greedy(60)
    };
    let (cut, reason, _) = collect(model.submit(prompt, params).expect("submit"));
    assert_eq!(reason, FinishReason::StopSequence);
    assert!(!cut.contains('5'), "{cut}");
    assert!(full.starts_with(&cut), "{full:?} vs {cut:?}");
}

#[test]
fn requests_that_cannot_fit_are_refused() {
    let model = load_test_model(&config(1)).expect("model");
    let prompt = chat_prompt(&model, "Hello");
    let err = model.submit(prompt, greedy(5000)).expect_err("too long");
    assert!(
        matches!(err, GeneratorError::ContextExceeded { .. }),
        "{err}"
    );
    assert_eq!(
        model.submit(Vec::new(), greedy(4)).expect_err("empty"),
        GeneratorError::EmptyPrompt
    );
}

#[test]
fn concurrent_sequences_match_their_solo_answers() {
    let model = load_test_model(&config(4)).expect("model");
    let questions = [
        "What is the capital of France?",
        "Name a primary color.",
        "What is 2 plus 2?",
        "Say hello in Spanish.",
    ];
    let streams: Vec<_> = questions
        .iter()
        .map(|q| {
            model
                .submit(chat_prompt(&model, q), greedy(24))
                .expect("submit")
        })
        .collect();
    let batched: Vec<_> = streams.into_iter().map(collect).collect();
    for ((text, _, n), question) in batched.iter().zip(questions) {
        assert!(!text.is_empty() && *n > 0, "{question}: empty");
    }
    // Batched numerics can differ from solo ones in the last bits; the opening must agree.
    let (solo, _, _) = collect(
        model
            .submit(chat_prompt(&model, questions[0]), greedy(24))
            .expect("submit"),
    );
    let prefix: String = solo.chars().take(12).collect();
    assert!(
        batched[0].0.starts_with(&prefix),
        "{:?} vs {solo:?}",
        batched[0].0
    );
}

#[test]
fn a_dropped_stream_frees_its_slot_and_the_queue_bounds_waiting() {
    let model = load_test_model(&GeneratorConfig {
        parallel: 1,
        context_per_sequence: 1024,
        queue_capacity: 1,
        ..GeneratorConfig::default()
    })
    .expect("model");
    let long = SamplingParams {
        ignore_eos: true,
        ..greedy(900)
    };
    let prompt = chat_prompt(&model, "Tell me a long story.");
    let mut running = model.submit(prompt.clone(), long.clone()).expect("first");
    // Wait until it is generating, so it holds the only slot.
    assert!(matches!(
        running.blocking_recv(),
        Some(GenEvent::Text { .. })
    ));
    let _waiting = model
        .submit(prompt.clone(), long.clone())
        .expect("second waits in the queue");
    assert_eq!(
        model
            .submit(prompt.clone(), long.clone())
            .expect_err("queue is full"),
        GeneratorError::QueueFull(1)
    );
    drop(running);
    drop(_waiting);
    // Both freed: the slot goes idle and a new request runs to completion.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while model.load() != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "slot not freed: {:?}",
            model.load()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, reason, n) = collect(model.submit(prompt, greedy(4)).expect("after"));
    assert_eq!((reason, n), (FinishReason::MaxTokens, 4));
}

#[test]
fn a_follow_up_turn_reuses_the_conversation_prefix_and_answers_the_same() {
    let config = config(2);
    let cached = load_test_model(&config).expect("model");
    let mut history = vec![ChatMessage::new("user", "Name three colors.")];
    let first = chat_prompt_messages(&cached, &history);
    let (answer, _, _) = collect(cached.submit(first, greedy(24)).expect("submit"));
    history.push(ChatMessage::new("assistant", answer));
    history.push(ChatMessage::new("user", "Now name three animals."));
    let second = chat_prompt_messages(&cached, &history);

    let mut stream = cached.submit(second.clone(), greedy(24)).expect("submit");
    let mut reused_text = String::new();
    let mut cached_tokens = 0;
    while let Some(event) = stream.blocking_recv() {
        match event {
            GenEvent::Text { text: t, .. } => reused_text.push_str(&t),
            GenEvent::Done {
                cached_tokens: c, ..
            } => {
                cached_tokens = c;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        cached_tokens > 10,
        "only {cached_tokens} prompt tokens reused"
    );
    // A fresh engine computes the whole prompt; greedy answers must agree.
    let fresh = load_test_model(&config).expect("model");
    let (fresh_text, _, _) = collect(fresh.submit(second, greedy(24)).expect("submit"));
    assert_eq!(reused_text, fresh_text);
}

/// Waits until the engine holds no request (so the test ends with its thread at rest).
fn wait_idle(model: &dyn TextGenerator) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while model.load() != (0, 0) {
        assert!(std::time::Instant::now() < deadline, "{:?}", model.load());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the engine is done timing pass sizes before serving.
fn wait_calibrated(model: &dyn TextGenerator) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !model.stats().calibrated {
        assert!(std::time::Instant::now() < deadline, "never calibrated");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Before its first request the engine times a pass of every size to sixteen rows and every
/// eighth to 64 (what speculation weighs guesses against; a size never timed would be priced
/// by its neighbours and a cheap tile size never found). With speculation off it times nothing.
/// A request that arrives while it calibrates is served (calibration stops for it).
#[test]
fn the_engine_times_pass_sizes_before_serving_and_stops_for_a_request() {
    let idle = load_test_model(&config(2)).expect("model");
    wait_calibrated(&idle);
    let sizes: Vec<f64> = idle.stats().pass_timings.iter().map(|t| t.rows).collect();
    for rows in (1..=16).chain([24, 32, 64]) {
        assert!(
            sizes.contains(&f64::from(rows)),
            "{rows} not timed: {sizes:?}"
        );
    }
    assert!(idle.stats().pass_timings.iter().all(|t| t.seconds > 0.0));

    let plain = load_test_model(&GeneratorConfig {
        draft_max: 0,
        ..config(2)
    })
    .expect("model");
    wait_calibrated(&plain);
    assert!(plain.stats().pass_timings.is_empty());

    // A request sent the moment the model is loaded is answered like any other.
    let busy = load_test_model(&config(2)).expect("model");
    let prompt = chat_prompt(&busy, "What is the capital of France?");
    let (text, _, _) = collect(busy.submit(prompt, greedy(16)).expect("submit"));
    assert!(text.contains("Paris"), "{text}");
    wait_calibrated(&busy);
}

fn chat_prompt_messages(model: &dyn TextGenerator, messages: &[ChatMessage]) -> Vec<u32> {
    let rendered = model.render_chat(messages).expect("template");
    model.tokenize(&rendered, true)
}

/// A passage the answers quote, so guesses from the prompt are often right.
const PASSAGE: &str = "Enclave keeps every document on the customer's own hardware. Each tenant \
has its own API keys, budgets and rate limits. Answers cite the documents they come from, and a \
person can check each citation against the original text. The platform runs on small quantized \
models, batches requests continuously and refuses work it cannot finish in time.";

/// Requests over PASSAGE that differ after it: each starts copying it from another sentence.
const ENDINGS: [&str; 4] = [
    "Enclave keeps every",
    "Each tenant has",
    "Answers cite the",
    "The platform runs",
];

/// A raw prompt that a small model continues by copying PASSAGE from `ending` on (induction
/// heads make such copies confident, so the answer does not hang on last-bit differences).
fn copy_prompt(model: &dyn TextGenerator, ending: &str) -> Vec<u32> {
    model.tokenize(&copy_text(ending), true)
}

fn copy_text(ending: &str) -> String {
    format!("Text: {PASSAGE}\n\nThe same text again, word for word: {ending}")
}

/// `a` and `b`, two greedy answers to `prompt`, are equal, or part where the model's top two
/// next tokens are within `margin` of each other: llama.cpp's CPU kernels change the last bits
/// of logits with the shape of the batch a row is computed in (measured on this model: up to
/// 0.5 between a prompt computed whole and one started from reused cells), so a near-tie can
/// break either way under any change of batching. A wrong token accepted from a guess would
/// part where the model prefers one token clearly.
fn assert_same_or_near_tie(model: &dyn TextGenerator, prompt: &str, a: &str, b: &str, margin: f32) {
    if a == b {
        return;
    }
    let common = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    // Back to a word boundary, so both continuations start with a whole token.
    let cut = a[..common].rfind(' ').unwrap_or(0);
    let first = |rest: &str| model.tokenize(rest, false).first().copied();
    let (Some(ta), Some(tb)) = (first(&a[cut..]), first(&b[cut..])) else {
        return;
    };
    if ta == tb {
        return;
    }
    let context = model.tokenize(&format!("{prompt}{}", &a[..cut]), true);
    let scores = model
        .score_next(context, vec![ta, tb])
        .expect("score")
        .blocking_recv()
        .expect("answer")
        .expect("scores");
    let gap = (scores[0] - scores[1]).abs();
    assert!(
        gap < margin,
        "answers part where the model is sure (gap {gap}):\n{a}\n{b}"
    );
}

/// Asks each document to be copied: the first alone until it is generating (so its KV cells
/// hold the passage while the others arrive), the rest together; returns the answers in order.
fn copy_round(model: &dyn TextGenerator) -> Vec<String> {
    let mut first = model
        .submit(copy_prompt(model, ENDINGS[0]), greedy(80))
        .expect("submit");
    let mut opening = String::new();
    match first.blocking_recv() {
        Some(GenEvent::Text { text, .. }) => opening = text,
        Some(GenEvent::Done { .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    let rest: Vec<_> = ENDINGS[1..]
        .iter()
        .map(|e| {
            model
                .submit(copy_prompt(model, e), greedy(80))
                .expect("submit")
        })
        .collect();
    let (tail, _, _) = collect(first);
    std::iter::once(opening + &tail)
        .chain(rest.into_iter().map(|s| collect(s).0))
        .collect()
}

/// Greedy answers with speculation and prefix reuse on (the default) equal those with both off,
/// on concurrent sequences that copy their documents (long guesses taken, prefixes shared from
/// a busy sequence and from idle ones), up to near-ties (`assert_same_or_near_tie`; answers run
/// alone are compared exactly in `speculation_alone_changes_no_greedy_answer`);
/// `prefix_copy_gives_the_same_logits_as_the_cells_it_copies` checks the reused cells
/// themselves.
#[test]
fn speculation_and_prefix_reuse_change_no_greedy_answer() {
    let plain = load_test_model(&GeneratorConfig {
        draft_max: 0,
        prefix_reuse: false,
        ..config(4)
    })
    .expect("model");
    let fast = load_test_model(&config(4)).expect("model");
    for _ in 0..2 {
        let expected = copy_round(&plain);
        let got = copy_round(&fast);
        for ((want, have), ending) in expected.iter().zip(&got).zip(ENDINGS) {
            assert_same_or_near_tie(&plain, &copy_text(ending), want, have, 1.0);
            // It copies (SmolLM2 may skip a clause of the passage after a few words).
            assert!(
                PASSAGE.contains(want.get(..16).unwrap_or(want)),
                "not a copy: {want}"
            );
        }
    }
    let saved = fast.stats();
    // The answers copy the passage, so most guesses hold and passes are saved.
    assert!(
        saved.accepted_tokens * 2 > saved.drafted_tokens && saved.drafted_tokens > 0,
        "{saved:?}"
    );
    assert!(saved.decode_steps * 2 < saved.generated_tokens, "{saved:?}");
    // The later requests started from the first one's passage (copied while it ran), and the
    // second round from the first round's cells.
    assert!(saved.prefix_copies >= 1, "{saved:?}");
    assert!(
        saved.reused_prompt_tokens * 2 > saved.prompt_tokens,
        "{saved:?}"
    );
    let none = plain.stats();
    assert_eq!(
        (none.drafted_tokens, none.reused_prompt_tokens),
        (0, 0),
        "{none:?}"
    );
    assert_eq!(none.generated_tokens, saved.generated_tokens);
}

/// Cells copied out of a busy sequence are the cells that sequence computed: a prompt started
/// from a copy scores its next token bit for bit as the same prompt started from the same cells
/// left idle (a corrupt or misplaced copy would not). Against a prompt computed from scratch
/// both differ in the last bits, as any change of batch shape does on llama.cpp's CPU kernels.
/// The unified buffer is checked with flash attention: attention as matrix products sums over
/// every cell of the shared buffer (other sequences' with weight zero), so its last bits follow
/// how many cells the buffer holds, which a busy neighbour changes.
#[test]
fn prefix_copy_gives_the_same_logits_as_the_cells_it_copies() {
    for unified_kv in [true, false] {
        let load = || {
            load_test_model(&GeneratorConfig {
                draft_max: 0,
                unified_kv,
                flash_attention: unified_kv,
                ..config(2)
            })
            .expect("model")
        };
        let score = |model: &dyn TextGenerator| {
            let candidates = model.tokenize(" The Enclave document copy", false);
            model
                .score_next(copy_prompt(model, ENDINGS[0]), candidates)
                .expect("score")
                .blocking_recv()
                .expect("answer")
                .expect("scores")
        };
        // Idle cells: the prompt scored twice, the second time from the first's cells.
        let idle = load();
        let prompt_len = copy_prompt(&idle, ENDINGS[0]).len() as u64;
        score(&idle);
        let from_idle = score(&idle);
        let stats = idle.stats();
        assert_eq!(stats.reused_prompt_tokens, prompt_len - 1, "{stats:?}");
        // Busy cells: the same prompt generating on another sequence while it is scored.
        let busy_model = load();
        let busy_params = SamplingParams {
            ignore_eos: true,
            ..greedy(200)
        };
        let mut busy = busy_model
            .submit(copy_prompt(&busy_model, ENDINGS[0]), busy_params)
            .expect("submit");
        assert!(matches!(busy.blocking_recv(), Some(GenEvent::Text { .. })));
        let from_busy = score(&busy_model);
        let stats = busy_model.stats();
        assert_eq!(stats.prefix_copies, 1, "{stats:?}");
        assert_eq!(from_busy, from_idle, "unified KV: {unified_kv}");
        drop(busy);
        wait_idle(&busy_model);
    }
}

#[test]
#[ignore]
fn xprobe_ttft() {
    let model = load_test_model(&GeneratorConfig {
        context_per_sequence: 2504,
        ..config(8)
    })
    .expect("model");
    let doc: String = (0..27).map(|i| format!("Section {i}: The finance team must review every open invoice each Monday and send a short summary to the regional director, so that late payments do not incur penalties. Exceptions need written approval from the compliance officer and are recorded in register 104-27.\n")).collect();
    let t0 = std::time::Instant::now();
    let streams: Vec<_> = (0..4)
        .map(|i| {
            let p = chat_prompt_messages(
                &model,
                &[
                    ChatMessage::new("system", format!("Request {i}. {doc}")),
                    ChatMessage::new("user", "Quote section 1."),
                ],
            );
            eprintln!("prompt {}", p.len());
            model
                .submit(
                    p,
                    SamplingParams {
                        ignore_eos: true,
                        ..greedy(50)
                    },
                )
                .unwrap()
        })
        .collect();
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            std::thread::spawn(move || {
                let mut first = None;
                while let Some(e) = s.blocking_recv() {
                    if first.is_none() {
                        first = Some(t0.elapsed());
                    }
                    if matches!(e, GenEvent::Done { .. }) {
                        break;
                    }
                }
                eprintln!("stream {i}: first {:?} done {:?}", first, t0.elapsed());
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Run alone (one request at a time, no prefix reuse), greedy answers are the same token for
/// token with speculation on and off under flash attention, whose kernel computes each row on
/// its own (a verifying row gets a lone row's bits). Attention as matrix products (the default)
/// computes a token's rows together, which changes a row's last bits: there answers may part
/// only at a near-tie of the model's two best tokens (one parted here at a gap of 0.012); a
/// wrongly accepted guess would part where the model is sure.
#[test]
fn speculation_alone_changes_no_greedy_answer() {
    for flash_attention in [true, false] {
        let load = |draft_max| {
            load_test_model(&GeneratorConfig {
                draft_max,
                prefix_reuse: false,
                flash_attention,
                ..config(1)
            })
            .expect("model")
        };
        let (plain, fast) = (load(0), load(16));
        for ending in ENDINGS {
            let run = |model: &dyn TextGenerator| {
                collect(
                    model
                        .submit(copy_prompt(model, ending), greedy(80))
                        .expect("submit"),
                )
                .0
            };
            let (want, have) = (run(&plain), run(&fast));
            if flash_attention {
                assert_eq!(want, have, "{ending}");
            } else {
                assert_same_or_near_tie(&plain, &copy_text(ending), &want, &have, 0.1);
            }
        }
        let saved = fast.stats();
        assert!(saved.accepted_tokens > 0, "{saved:?}");
        assert!(saved.decode_steps < saved.generated_tokens, "{saved:?}");
    }
}
