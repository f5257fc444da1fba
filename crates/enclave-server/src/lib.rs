//! Enclave's HTTP server: the Cohere (v1, v2) and OpenAI wire protocols over the engine's
//! [`enclave_engine::TextGenerator`] seam, the admin API, plus health and readiness. Every API
//! call is authenticated, admitted (scopes, Idempotency-Key, rate limits, budget holds) and
//! metered through [`enclave_store`]. It is a library so other programs can embed the router;
//! the `enclave` binary is one such program.
//!
//! Rooms: `routes/` only map each wire family's JSON to internal requests and back;
//! `pipeline/` runs every generation; `capability/` runs embed, rerank, classify and summarize;
//! `billing/` admits and settles calls; `access` and `auth` know keys; `error/` is the one
//! error edge. It must not know how models are fetched, which engine runs them, or which
//! database is used.

pub mod access;
pub mod auth;
pub mod billing;
pub mod blocking;
pub mod body_deadline;
pub mod capability;
pub mod collections;
pub mod error;
pub mod extract;
pub mod guard;
pub mod http;
pub mod pipeline;
pub mod routes;
pub mod state;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{middleware, Router};
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, Family};
pub use http::{serve, HttpLimits};
pub use state::{AppState, ServerConfig};

/// The full application. Each route group declares its API family once; every error inside
/// it (extraction, auth, handler, panic, wrong method) answers in that family's shape.
pub fn router(state: AppState) -> Router {
    use routes::{admin, classify, cohere_v1, cohere_v2, embed, models, openai, ops, rerank};
    use routes::{collections, guard, guard_admin, summarize, tokens};
    let cohere = Router::new()
        .route("/v2/chat", post(cohere_v2::chat))
        .route("/v1/chat", post(cohere_v1::chat))
        .route("/v1/generate", post(cohere_v1::generate))
        .route("/v1/tokenize", post(tokens::tokenize))
        .route("/v1/detokenize", post(tokens::detokenize))
        .route("/v2/embed", post(embed::embed_v2))
        .route("/v1/embed", post(embed::embed_v1))
        .route("/v1/classify", post(classify::classify))
        .route("/v2/rerank", post(rerank::rerank_v2))
        .route("/v1/rerank", post(rerank::rerank_v1))
        .route("/v1/summarize", post(summarize::summarize_route))
        .route("/v1/guard/check", post(guard::check))
        .route(
            "/v1/collections",
            post(collections::create).get(collections::list),
        )
        .route("/v1/collections/{id}", delete(collections::delete))
        .route(
            "/v1/collections/{id}/documents",
            post(collections::add_documents),
        )
        .route(
            "/v1/collections/{id}/documents/{document_id}",
            delete(collections::forget),
        )
        .route("/v1/collections/{id}/search", post(collections::search))
        .route(
            "/admin/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route(
            "/admin/tenants/{tenant}/budget",
            put(admin::set_tenant_budget),
        )
        .route("/admin/keys", post(admin::create_key).get(admin::list_keys))
        .route("/admin/keys/{id}", delete(admin::revoke_key))
        .route("/admin/keys/{id}/groups", put(admin::set_key_groups))
        .route("/admin/usage", get(admin::usage))
        .route("/admin/usage/verify", get(admin::verify))
        .route("/admin/usage/events", get(admin::events))
        .route("/admin/prices", get(admin::prices).post(admin::add_prices))
        .route("/admin/guard/policies", get(guard_admin::policies))
        .route(
            "/admin/tenants/{tenant}/guard",
            put(guard_admin::set_tenant_guard),
        )
        .route("/admin/keys/{id}/guard", put(guard_admin::set_key_guard))
        .route("/admin/audit", get(guard_admin::audit));
    let openai = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/moderations", post(guard::moderations));
    let shared = Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/models/{model}", get(models::get));
    let ops = Router::new()
        .route("/v1/check-api-key", post(ops::check_api_key))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready));
    Router::new()
        .merge(api_group(cohere, Family::Cohere, &state))
        .merge(api_group(openai, Family::OpenAi, &state))
        .merge(api_group(shared, Family::Shared, &state))
        .merge(in_family(ops, Family::Cohere))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config().max_body_bytes))
        .with_state(state)
}

/// API routes: the key check, then the body deadline, inside the family's error shape.
fn api_group(routes: Router<AppState>, family: Family, state: &AppState) -> Router<AppState> {
    let routes = routes
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            body_deadline::read_body_by_deadline,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    in_family(routes, family)
}

/// Answers every error of `routes`, panics included, in `family`'s shape.
fn in_family<S: Clone + Send + Sync + 'static>(routes: Router<S>, family: Family) -> Router<S> {
    routes
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::map_response(move |response: Response| {
            error::family::answer_in(family, response)
        }))
}

/// No route matched: the one place the family is read from the path.
async fn not_found(uri: Uri) -> Response {
    let family = Family::of_unrouted_path(uri.path());
    ApiError::not_found(format!("no route for {}", uri.path())).render(family)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a request handler panicked").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_service_lives_on() {
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        let app: Router = in_family(
            Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(|| async { "ok" })),
            Family::OpenAi,
        )
        .with_state(());
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
        assert_eq!(body["error"]["message"], "internal error");
        let fine = app
            .oneshot(Request::get("/fine").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(fine.status(), StatusCode::OK);
    }
}
