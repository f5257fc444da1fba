//! Enclave's HTTP server: the Cohere (v1, v2) and OpenAI wire protocols over the engine's
//! [`enclave_engine::TextGenerator`] seam, the admin API, plus health and readiness. Every API
//! call is authenticated, admitted (scopes, rate limits, budget holds) and metered through
//! [`enclave_store`]. It is a library so other programs can embed the router; the `enclave`
//! binary is one such program.
//!
//! It must not know how models are fetched, which engine runs them, or which database is used.

pub mod access;
pub mod auth;
pub mod embedding;
pub mod error;
pub mod extract;
pub mod generation;
pub mod metering;
pub mod rerank;
pub mod routes;
pub mod state;
pub mod summarize;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{middleware, Router};
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, Family};
pub use state::{AppState, ServerConfig};

/// The full application: API routes behind the key check, ops routes open.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v2/chat", post(routes::cohere_v2::chat))
        .route("/v1/chat", post(routes::cohere_v1::chat))
        .route("/v1/generate", post(routes::cohere_v1::generate))
        .route("/v1/tokenize", post(routes::tokens::tokenize))
        .route("/v1/detokenize", post(routes::tokens::detokenize))
        .route("/v1/models", get(routes::models::list))
        .route("/v1/models/{model}", get(routes::models::get))
        .route(
            "/v1/chat/completions",
            post(routes::openai::chat_completions),
        )
        .route("/v1/completions", post(routes::openai::completions))
        .route("/v2/embed", post(routes::embed::embed_v2))
        .route("/v1/embed", post(routes::embed::embed_v1))
        .route("/v1/embeddings", post(routes::openai::embeddings))
        .route("/v1/classify", post(routes::classify::classify))
        .route("/v2/rerank", post(routes::rerank::rerank_v2))
        .route("/v1/rerank", post(routes::rerank::rerank_v1))
        .route("/v1/summarize", post(routes::summarize::summarize_route))
        .route(
            "/admin/tenants",
            post(routes::admin::create_tenant).get(routes::admin::list_tenants),
        )
        .route(
            "/admin/tenants/{tenant}/budget",
            put(routes::admin::set_tenant_budget),
        )
        .route(
            "/admin/keys",
            post(routes::admin::create_key).get(routes::admin::list_keys),
        )
        .route("/admin/keys/{id}", delete(routes::admin::revoke_key))
        .route("/admin/usage", get(routes::admin::usage))
        .route("/admin/usage/verify", get(routes::admin::verify))
        .route("/admin/usage/events", get(routes::admin::events))
        .route(
            "/admin/prices",
            get(routes::admin::prices).post(routes::admin::add_prices),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .merge(api)
        .route("/v1/check-api-key", post(routes::ops::check_api_key))
        .route("/health", get(routes::ops::health))
        .route("/ready", get(routes::ops::ready))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config().max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(
        Family::of_path(uri.path()),
        format!("no route for {}", uri.path()),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        Family::Cohere,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error",
    )
    .into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_service_lives_on() {
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "ok" }))
            .layer(CatchPanicLayer::custom(panic_response));
        let response = app
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body["message"], "internal error");
        let fine = app
            .oneshot(Request::get("/fine").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(fine.status(), StatusCode::OK);
    }
}
