//! `journey bench`: the load generator. `seed` loads a synthetic
//! population, `run` drives one scenario and reports throughput, latency
//! percentiles, errors by code and CPU per RPC, and `echo-server` is the
//! gRPC-only baseline the real service is compared to. `bench/compare.sh`
//! puts them together; BENCHMARKS.md says what the figures mean.

mod channels;
mod connections;
mod cpu;
pub mod echo_server;
mod error;
mod lean;
mod load;
mod ops;
mod pacer;
mod population;
mod raw;
mod report;
mod scenario;
mod seed;

use std::net::SocketAddr;

use clap::{Args, Subcommand};

pub use error::BenchError;
pub use load::run;
pub use report::Report;
pub use scenario::Scenario;
pub use seed::{seed, SeedSummary};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Load a population of customers `bench-c{i:012}` through AppendEvents batches.
    Seed(SeedArgs),
    /// Drive one scenario for a fixed time and report throughput, latency, errors and CPU.
    Run(RunArgs),
    /// Serve a canned GetJourneyContext from memory: the gRPC-only ceiling.
    EchoServer(EchoArgs),
    /// Hold many connections open and report the server's resident memory.
    Connections(connections::ConnectionsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// The journey server, `HOST:PORT` or `http://HOST:PORT`.
    #[arg(long)]
    pub target: String,
    /// Customers to create: `bench-c000000000000` to `bench-c{N-1:012}`.
    #[arg(long)]
    pub customers: u64,
    /// Events of each customer, spread over the last day.
    #[arg(long)]
    pub events_per_customer: u64,
    /// AppendEvents calls in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seed of the generated events (the same seed makes the same events).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Events per AppendEvents call.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The server, `HOST:PORT` or `http://HOST:PORT`.
    #[arg(long, required_unless_present = "redis", conflicts_with = "redis")]
    pub target: Option<String>,
    /// The raw baseline: send each call's Redis commands (the pipelines the
    /// Redis store sends for it) straight to this Redis (`redis://HOST:PORT/DB`),
    /// one connection per task, instead of calling a server. For the
    /// context, list, check, append and append-batch scenarios.
    #[arg(long)]
    pub redis: Option<String>,
    /// What to send.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Concurrent tasks (calls in flight in a closed loop).
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,
    /// Length of the measured window, in seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Open loop at this many calls per second (at most 10,000,000), each
    /// handed out at its due time by a pacer thread and timed from it;
    /// closed loop when unset.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Calls go to random customers among N seeded ones (from
    /// `--first-customer`).
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// The first of the seeded customers the calls go to: e.g. appends to
    /// customers 10,000 to 19,999 leave the reads of the first 10,000
    /// reading the seeded data only.
    #[arg(long, default_value_t = 0)]
    pub first_customer: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also report CPU µs per RPC of these processes (e.g. the server and redis-server).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Seed of the customer and operation draws.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Seconds of load before the measured window, excluded from the figures.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Worker threads of the load generator; 0: one per core. One by
    /// default, as redis-benchmark: on a small machine, a generator spread
    /// over every core takes the server's core from it, and its threads
    /// wake each other for every call. (The binary builds its runtime
    /// from it; `run` called in-process uses the caller's.)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Address to listen on; port 0 picks a free one (the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Worker threads of the runtime, as `journey serve --worker-threads`
    /// (0: one per core): compare the echo and the service on the same.
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
}

impl BenchArgs {
    /// Worker threads asked for the runtime this subcommand runs on (0:
    /// the runtime's default, one per core).
    pub fn worker_threads(&self) -> usize {
        match &self.command {
            BenchCommand::Run(args) => args.threads,
            BenchCommand::EchoServer(args) => args.worker_threads,
            BenchCommand::Seed(_) | BenchCommand::Connections(_) => 0,
        }
    }
}

/// Runs a `journey bench` subcommand, printing its result on stdout.
pub async fn main(args: BenchArgs) -> Result<(), BenchError> {
    match args.command {
        BenchCommand::Seed(args) => {
            let summary = seed(&args).await?;
            println!("{}", summary.line());
        }
        BenchCommand::Run(args) => {
            let report = run(&args).await?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
            if report.errors > 0 {
                eprintln!(
                    "journey bench: {} of {} calls failed (see errors by code)",
                    report.errors, report.requests
                );
            }
        }
        BenchCommand::Connections(args) => {
            let report = connections::hold(&args).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        BenchCommand::EchoServer(args) => {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|source| BenchError::Listen {
                    addr: args.listen,
                    source,
                })?;
            let bound = listener.local_addr().map_err(|source| BenchError::Listen {
                addr: args.listen,
                source,
            })?;
            // Scripts read this line to learn the port chosen for `:0`.
            println!("echo server listening on {bound}");
            echo_server::run(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::config::{Cli, Command};

    fn worker_threads(args: &[&str]) -> usize {
        let cli = Cli::try_parse_from(args).expect("arguments parse");
        match cli.command {
            Command::Bench(bench) => bench.worker_threads(),
            other => panic!("not a bench command: {other:?}"),
        }
    }

    #[test]
    fn the_load_generator_runs_on_one_thread_unless_told() {
        let run = [
            "journey",
            "bench",
            "run",
            "--target",
            "h:1",
            "--scenario",
            "context",
        ];
        assert_eq!(worker_threads(&run), 1);
        assert_eq!(worker_threads(&[&run[..], &["--threads", "0"]].concat()), 0);
    }

    #[test]
    fn the_echo_server_takes_the_service_runtime_setting() {
        assert_eq!(worker_threads(&["journey", "bench", "echo-server"]), 0);
        let one = ["journey", "bench", "echo-server", "--worker-threads", "1"];
        assert_eq!(worker_threads(&one), 1);
    }
}
