//! The baseline of the node benchmark (`benches/node.rs`): the smallest axum server that speaks like a
//! Troupe node to the benchmark — `--http-addr ADDR` (port 0 picks a free port), `--log-format` accepted
//! and ignored, one JSON line `{"message":"bare axum ready","addr":"…"}` on stderr once it serves,
//! `GET /health/ready` → 200, and a graceful stop on SIGTERM/SIGINT. Same tokio multi-thread runtime,
//! no supervision tree, no metrics, no middleware.
//!
//! Build: `cargo build --release --example bare_axum` (the node benchmark looks for
//! `target/release/examples/bare_axum` next to the `troupe` binary).

use std::process::ExitCode;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn serve(addr: String) -> Result<(), String> {
    let listener = TcpListener::bind(&addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("listener address: {e}"))?;
    let app = Router::new().route("/health/ready", get(|| async { r#"{"status":"ready"}"# }));
    let server = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop_signal()).await });
    report_ready(&bound.to_string());
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("server: {e}")),
        Err(e) => Err(format!("server task: {e}")),
    }
}

#[allow(clippy::print_stderr, reason = "the example's one ready line, read by the node benchmark")]
fn report_ready(addr: &str) {
    eprintln!(r#"{{"level":"INFO","message":"bare axum ready","addr":"{addr}"}}"#);
}

#[allow(clippy::print_stderr, reason = "the example's edge: one error line")]
fn main() -> ExitCode {
    let mut addr = "127.0.0.1:8080".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--http-addr" => match args.next() {
                Some(a) => addr = a,
                None => {
                    eprintln!("error: --http-addr needs a value");
                    return ExitCode::FAILURE;
                }
            },
            // Accepted for command-line compatibility with `troupe run`; there is only one format.
            "--log-format" | "--data-dir" => {
                let _ = args.next();
            }
            "run" => {}
            other => {
                eprintln!("error: unknown argument {other}");
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
