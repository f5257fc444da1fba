pub mod cohere_common;
pub mod cohere_v1;
pub mod cohere_v2;
pub mod embed;
pub mod models;
pub mod openai;
pub mod ops;
pub mod tokens;
