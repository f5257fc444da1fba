//! What every benchmark shares: a scratch database, and the figures' rounding and percentiles.

use anyhow::Result;

/// The database a benchmark fills: the one given, or a scratch SQLite file that lives as long as
/// the returned directory.
pub(crate) async fn bench_store(
    url: Option<&str>,
) -> Result<(enclave_store::Store, tempfile::TempDir)> {
    let scratch = tempfile::tempdir()?;
    let url = url.map_or_else(
        || enclave_store::Store::default_url(scratch.path()),
        str::to_string,
    );
    Ok((enclave_store::Store::open(&url).await?, scratch))
}

/// Two decimals, for readable reports.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Serves `state` on an ephemeral loopback port; returns its base URL and the serving task.
pub(crate) async fn serve(
    state: enclave_server::AppState,
) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let handle = tokio::spawn(async move {
        let _ = enclave_server::serve(
            listener,
            enclave_server::router(state),
            enclave_server::HttpLimits::default(),
            std::future::pending(),
        )
        .await;
    });
    Ok((base, handle))
}
