//! The `journey` binary: `serve` runs the server; the other subcommands are
//! a gRPC client for people and scripts.

use std::process::ExitCode;

use clap::Parser;
use journey::{
    cli,
    config::{Cli, Command, MAX_WORKER_THREADS},
    server, telemetry,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Bench(_)) {
        end_quietly_on_a_closed_output();
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    let worker_threads = match &cli.command {
        Command::Serve(config) => config.worker_threads,
        Command::Bench(args) => args.worker_threads(),
        _ => 0,
    };
    if worker_threads > MAX_WORKER_THREADS {
        eprintln!("journey: --worker-threads must be at most {MAX_WORKER_THREADS}");
        return ExitCode::FAILURE;
    }
    if worker_threads > 0 {
        runtime.worker_threads(worker_threads);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("journey: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(config) => serve(config).await,
            Command::Append(args) => cli::append(args).await,
            Command::Context(args) => cli::context(args).await,
            Command::Events(args) => cli::events(args).await,
            Command::Check(args) => cli::check(args).await,
            Command::Journeys(args) => cli::journeys(args).await,
            Command::Stats(args) => cli::stats(args).await,
            Command::Customers(args) => cli::customers(args).await,
            Command::Link(args) => cli::link(args).await,
            Command::Unlink(args) => cli::unlink(args).await,
            Command::Forget(args) => cli::forget(args).await,
            Command::Bench(args) => journey::bench::main(args).await.map_err(Into::into),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("journey: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A client command whose output is piped into a reader that went away
/// (`journey journeys | head -1`) ends as a Unix tool killed by SIGPIPE
/// would (status 141, no message) rather than with a panic: `println!`
/// panics on the broken pipe, since Rust ignores SIGPIPE. The signal stays
/// ignored: the gRPC connection's vectored writes (`writev`) would raise it
/// too, and a server going away mid-call must be an error, not a silent
/// death.
fn end_quietly_on_a_closed_output() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}

async fn serve(config: journey::config::ServeConfig) -> Result<(), Box<dyn std::error::Error>> {
    let telemetry = telemetry::init(config.log_format);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let served = server::run(config, listener, shutdown_signal()).await;
    telemetry.shutdown();
    served?;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
