//! The HTTP API on a real server (real model, real sockets): every error case answers the right
//! status in its family's shape, streams are well-formed, and disconnects free their slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use enclave_engine::testing::load_test_model;
use enclave_engine::{GeneratorConfig, TextGenerator};
use enclave_server::access::Access;
use enclave_server::{AppState, ServerConfig};
use enclave_store::Store;
use serde_json::{json, Value};

const KEY: &str = "test-key";
const MODEL: &str = "smollm2-135m-instruct";

/// Starts a server on an ephemeral loopback port in its own runtime thread.
fn start(engine: GeneratorConfig, max_body_bytes: usize) -> String {
    let model: Arc<dyn TextGenerator> = Arc::new(load_test_model(&engine).expect("test model"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let home = tempfile::tempdir().expect("tempdir");
            let store = Store::open(&Store::default_url(home.path()))
                .await
                .expect("store");
            store.ensure_admin_key(Some(KEY)).await.expect("admin key");
            let access = Access::start(store).await.expect("access");
            let state = AppState::new(
                ServerConfig {
                    max_body_bytes,
                    ..ServerConfig::default()
                },
                vec![model],
                Vec::new(),
                Some(access),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(format!("http://{}", listener.local_addr().expect("addr")))
                .expect("send");
            enclave_server::serve(
                listener,
                enclave_server::router(state),
                enclave_server::HttpLimits::default(),
                std::future::pending(),
            )
            .await
            .expect("serve");
        });
    });
    rx.recv().expect("server address")
}

fn default_server() -> String {
    start(
        GeneratorConfig {
            parallel: 8,
            context_per_sequence: 1024,
            ..GeneratorConfig::default()
        },
        64 * 1024,
    )
}

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = send(&reqwest::Client::new(), base, path, body).await;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Posts `body` with the test key.
async fn send(client: &reqwest::Client, base: &str, path: &str, body: &Value) -> reqwest::Response {
    client
        .post(format!("{base}{path}"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .expect("send")
}

/// Sends `request` with `key` and reads its JSON answer.
async fn json_of(request: reqwest::RequestBuilder, key: &str) -> Value {
    let response = request.bearer_auth(key).send().await.expect("send");
    response.json().await.expect("json")
}

/// Posts `body` and expects 200; returns the answer.
async fn ok(base: &str, path: &str, body: &Value) -> Value {
    let (status, answer) = post(base, path, body).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

async fn post_raw(base: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn cohere_message(body: &Value) -> &str {
    body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not a Cohere error: {body}"))
}

fn openai_message(body: &Value) -> &str {
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an OpenAI error: {body}"))
}

fn v2_chat(content: &str, max_tokens: u32) -> Value {
    json!({ "model": MODEL, "messages": [{ "role": "user", "content": content }], "max_tokens": max_tokens, "temperature": 0 })
}

#[tokio::test]
async fn v2_chat_answers_with_usage() {
    let base = default_server();
    let question = v2_chat("What is the capital of France?", 32);
    let body = ok(&base, "/v2/chat", &question).await;
    let text = body["message"]["content"][0]["text"]
        .as_str()
        .expect("text");
    assert!(text.contains("Paris"), "{text}");
    let usage = &body["usage"];
    let billed_in = usage["billed_units"]["input_tokens"]
        .as_u64()
        .expect("billed");
    let raw_in = usage["tokens"]["input_tokens"].as_u64().expect("raw");
    assert!(billed_in > 0 && billed_in < raw_in, "{usage}");
    assert!(usage["tokens"]["output_tokens"].as_u64().expect("out") <= 32);
}

#[tokio::test]
async fn a_repeated_conversation_reports_cached_prompt_tokens() {
    let base = default_server();
    let request = v2_chat("Name three colors.", 8);
    let (_, first) = post(&base, "/v2/chat", &request).await;
    assert_eq!(first["usage"]["cached_tokens"], 0, "{first}");
    let (_, second) = post(&base, "/v2/chat", &request).await;
    let cached = second["usage"]["cached_tokens"].as_u64().expect("cached");
    let input = second["usage"]["tokens"]["input_tokens"]
        .as_u64()
        .expect("input");
    assert!(cached > 0 && cached < input, "{second}");
    assert_eq!(first["message"], second["message"]);
}

#[tokio::test]
async fn malformed_bodies_get_400_in_each_family_shape() {
    let base = default_server();
    let (status, body) = post_raw(&base, "/v2/chat", b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(
        cohere_message(&body).starts_with("invalid request"),
        "{body}"
    );

    let (status, body) = post_raw(&base, "/v1/chat/completions", b"[1,2".to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    openai_message(&body);

    // A known field with the wrong type.
    let mut wrong = v2_chat("hi", 4);
    wrong["temperature"] = json!("hot");
    let (status, body) = post(&base, "/v2/chat", &wrong).await;
    assert_eq!(status, 400);
    assert!(
        cohere_message(&body).contains("temperature")
            || cohere_message(&body).contains("invalid type"),
        "{body}"
    );

    // Bad UTF-8 inside a JSON string.
    let mut bytes =
        br#"{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"a"#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(br#""}]}"#);
    let (status, body) = post_raw(&base, "/v2/chat", bytes).await;
    assert_eq!(status, 400, "{body}");
    cohere_message(&body);

    // Empty body.
    let (status, body) = post_raw(&base, "/v1/chat", Vec::new()).await;
    assert_eq!(status, 400);
    cohere_message(&body);
}

#[tokio::test]
async fn semantic_errors_name_what_is_wrong() {
    let base = default_server();
    let mut hot = v2_chat("hi", 4);
    hot["temperature"] = json!(9.5);
    let cases = [
        (
            "/v2/chat",
            json!({ "model": MODEL, "messages": [] }),
            "messages",
        ),
        ("/v2/chat", v2_chat("hi", 100_000), "too many tokens"),
        ("/v2/chat", hot, "temperature"),
        (
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0 }),
            "max_tokens",
        ),
        ("/v1/chat", json!({ "message": "  " }), "message"),
        (
            "/v1/detokenize",
            json!({ "tokens": [-1], "model": MODEL }),
            "-1",
        ),
        (
            "/v1/tokenize",
            json!({ "text": "", "model": MODEL }),
            "text",
        ),
    ];
    for (path, request, needle) in cases {
        let (status, body) = post(&base, path, &request).await;
        assert_eq!(status, 400, "{path}: {body}");
        let message = if path.starts_with("/v1/chat/completions") {
            openai_message(&body)
        } else {
            cohere_message(&body)
        };
        assert!(message.contains(needle), "{path}: {body}");
    }
}

#[tokio::test]
async fn unknown_models_are_404_naming_the_served_ones() {
    let base = default_server();
    let mut request = v2_chat("hi", 4);
    request["model"] = json!("no-such-model");
    let (status, body) = post(&base, "/v2/chat", &request).await;
    assert_eq!(status, 404);
    assert!(cohere_message(&body).contains(MODEL), "{body}");

    let (status, body) = post(
        &base,
        "/v1/chat/completions",
        &json!({ "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}] }),
    )
    .await;
    assert_eq!(status, 404);
    assert!(openai_message(&body).contains(MODEL), "{body}");

    let response = reqwest::Client::new()
        .get(format!("{base}/v1/models/nope"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn auth_size_and_route_errors() {
    let base = start(
        GeneratorConfig {
            parallel: 1,
            context_per_sequence: 512,
            ..GeneratorConfig::default()
        },
        4 * 1024,
    );
    let client = reqwest::Client::new();
    // No key on a Cohere route, a wrong one on an OpenAI route: 401 in each family's shape.
    let unauthorized = [
        ("/v2/chat", None, v2_chat("hi", 4)),
        ("/v1/chat/completions", Some("wrong"), json!({})),
    ];
    for (path, key, request) in unauthorized {
        let mut sending = client.post(format!("{base}{path}")).json(&request);
        if let Some(key) = key {
            sending = sending.bearer_auth(key);
        }
        let response = sending.send().await.expect("send");
        assert_eq!(response.status().as_u16(), 401);
        let body: Value = response.json().await.expect("json");
        if key.is_none() {
            cohere_message(&body);
        } else {
            openai_message(&body);
        }
    }

    let big = v2_chat(&"word ".repeat(2000), 4);
    let (status, body) = post(&base, "/v2/chat", &big).await;
    assert_eq!(status, 413, "{body}");
    cohere_message(&body);

    let (status, body) = post(&base, "/v3/nothing", &json!({})).await;
    assert_eq!(status, 404);
    cohere_message(&body);

    let check = json_of(client.post(format!("{base}/v1/check-api-key")), "wrong").await;
    assert_eq!(check["valid"], false);

    let health = client
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status().as_u16(), 200);
}

/// Reads an SSE body into its `data:` payloads.
async fn sse_payloads(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.expect("body");
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn eight_concurrent_streams_complete_with_usage() {
    let base = default_server();
    let tasks = (0..8).map(|i| {
        let base = base.clone();
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(KEY)
                .json(&json!({
                    "model": MODEL,
                    "messages": [{"role": "user", "content": format!("Write a sentence about the number {i}.")}],
                    "max_tokens": 24,
                    "temperature": 0,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                }))
                .send()
                .await
                .expect("send");
            assert_eq!(response.status().as_u16(), 200);
            assert!(response.headers()["content-type"].to_str().expect("ct").starts_with("text/event-stream"));
            sse_payloads(response).await
        })
    });
    for task in futures::future::join_all(tasks).await {
        let payloads = task.expect("task");
        assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = payloads[..payloads.len() - 1]
            .iter()
            .map(|p| serde_json::from_str(p).expect("chunk json"))
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(!text.trim().is_empty());
        let usage = &chunks.last().expect("usage chunk")["usage"];
        let completion = usage["completion_tokens"].as_u64().expect("usage");
        assert!(completion > 0 && completion <= 24, "{usage}");
    }
}

#[tokio::test]
async fn v2_stream_events_come_in_order() {
    let base = default_server();
    let mut request = v2_chat("Say hi.", 16);
    request["stream"] = json!(true);
    let response = send(&reqwest::Client::new(), &base, "/v2/chat", &request).await;
    assert_eq!(response.status().as_u16(), 200);
    let payloads = sse_payloads(response).await;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let types: Vec<String> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| {
            serde_json::from_str::<Value>(p).expect("json")["type"]
                .as_str()
                .expect("type")
                .to_string()
        })
        .collect();
    assert_eq!(&types[..2], ["message-start", "content-start"]);
    assert_eq!(&types[types.len() - 2..], ["content-end", "message-end"]);
    assert!(types[2..types.len() - 2]
        .iter()
        .all(|t| t == "content-delta"));
    let end: Value = serde_json::from_str(&payloads[payloads.len() - 2]).expect("end");
    assert!(
        end["delta"]["usage"]["billed_units"]["output_tokens"]
            .as_u64()
            .expect("usage")
            > 0
    );
}

#[tokio::test]
async fn a_disconnected_stream_frees_its_slot_and_a_full_queue_is_429() {
    let base = start(
        GeneratorConfig {
            parallel: 1,
            context_per_sequence: 1024,
            queue_capacity: 1,
            ..GeneratorConfig::default()
        },
        64 * 1024,
    );
    let long = json!({
        "model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 900, "stream": true, "ignore_eos": true,
    });
    let client = reqwest::Client::new();
    let mut first = send(&client, &base, "/v1/chat/completions", &long).await;
    assert_eq!(first.status().as_u16(), 200);
    // The first bytes prove it holds the only slot.
    let _ = first.chunk().await.expect("chunk");
    let _ = first.chunk().await.expect("chunk");
    let second = send(&client, &base, "/v1/chat/completions", &long).await;
    assert_eq!(
        second.status().as_u16(),
        200,
        "the second waits in the queue"
    );
    let third = send(&client, &base, "/v1/chat/completions", &long).await;
    assert_eq!(third.status().as_u16(), 429);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: Value = third.json().await.expect("json");
    openai_message(&body);

    drop(first);
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready: Value = client
            .get(format!("{base}/ready"))
            .send()
            .await
            .expect("ready")
            .json()
            .await
            .expect("json");
        let model = &ready["models"][0];
        if model["active"] == 0 && model["waiting"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "slot was not freed: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok(&base, "/v2/chat", &v2_chat("Hi", 4)).await;
}

#[tokio::test]
async fn v1_generate_tokenize_and_models() {
    let base = default_server();
    let body = ok(
        &base,
        "/v1/generate",
        &json!({ "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0 }),
    )
    .await;
    assert!(!body["generations"][0]["text"]
        .as_str()
        .expect("text")
        .is_empty());
    assert!(
        body["meta"]["billed_units"]["output_tokens"]
            .as_u64()
            .expect("billed")
            <= 8
    );

    let (status, body) = post(
        &base,
        "/v1/tokenize",
        &json!({ "text": "hello world", "model": MODEL }),
    )
    .await;
    assert_eq!(status, 200);
    let tokens = body["tokens"].clone();
    assert_eq!(
        body["token_strings"].as_array().expect("strings").len(),
        tokens.as_array().expect("tokens").len()
    );
    let (_, back) = post(
        &base,
        "/v1/detokenize",
        &json!({ "tokens": tokens, "model": MODEL }),
    )
    .await;
    assert_eq!(back["text"], "hello world");

    let models = json_of(reqwest::Client::new().get(format!("{base}/v1/models")), KEY).await;
    assert_eq!(models["models"][0]["name"], MODEL);
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["object"], "list");
}
