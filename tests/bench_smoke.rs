//! Smoke test of `journey bench` as library code: seed a tiny population in
//! the real server (memory store), run every scenario briefly, closed and
//! open loop, and check that calls were made and none failed. No timing is
//! asserted: this machine's speed is not a test result.

mod support;

use journey::bench::{self, echo_server, RunArgs, Scenario, SeedArgs};
use support::{journey_server::JourneyServer, redis_server::RedisServer};
use tokio::{net::TcpListener, sync::oneshot};

const CUSTOMERS: u64 = 20;

fn run_args(target: String, scenario: Scenario) -> RunArgs {
    RunArgs {
        target: Some(target),
        redis: None,
        scenario,
        concurrency: 2,
        duration: 0.5,
        rate: None,
        customers: CUSTOMERS,
        first_customer: 0,
        json: false,
        pids: Vec::new(),
        seed: 7,
        warmup: 0.1,
        // Read by the binary when it builds its runtime; here the test's.
        threads: 1,
    }
}

/// Seeds the tiny population every run here reads, through the server.
async fn seed_tiny(target: &str) {
    let summary = bench::seed(&SeedArgs {
        target: target.to_string(),
        customers: CUSTOMERS,
        events_per_customer: 5,
        concurrency: 2,
        seed: 42,
        batch_size: 30,
    })
    .await
    .expect("seed");
    assert_eq!(summary.stored, CUSTOMERS * 5);
}

fn assert_clean(report: &bench::Report) {
    assert!(report.requests > 0, "no calls made: {report:?}");
    assert_eq!(report.errors, 0, "calls failed: {}", report.table());
    assert!(report.p50_us > 0 && report.p50_us <= report.p999_us);
    assert!(report.cpu_us_per_rpc.contains_key("bench"));
    // Read from /proc where the kernel keeps scheduler statistics (Linux
    // builds have since 2.6); a figure, never a failed run.
    assert!(report.wait_us_per_rpc.contains_key("bench"));
    if std::path::Path::new("/proc/self/schedstat").exists() {
        assert!(
            report.wait_us_per_rpc["bench"].is_some_and(|us| us >= 0.0),
            "{}",
            report.table()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_and_runs_every_scenario_without_errors() {
    let server = JourneyServer::memory().await;
    let target = server.addr.to_string();

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let echo_target = listener.local_addr().expect("echo addr").to_string();
    let (stop_echo, echo_stopped) = oneshot::channel::<()>();
    let echo = tokio::spawn(echo_server::run(listener, async move {
        let _ = echo_stopped.await;
    }));

    seed_tiny(&target).await;

    for scenario in [
        Scenario::Append,
        Scenario::AppendBatch,
        Scenario::AppendSessions,
        Scenario::AppendIdentity,
        Scenario::Context,
        Scenario::List,
        Scenario::Check,
        Scenario::Mix,
    ] {
        let report = bench::run(&run_args(target.clone(), scenario))
            .await
            .expect("run");
        assert_clean(&report);
        if matches!(scenario, Scenario::AppendBatch | Scenario::AppendSessions) {
            assert!((report.events_per_s - report.rps * 100.0).abs() < 1e-6 * report.events_per_s);
        }
    }

    let report = bench::run(&run_args(echo_target, Scenario::Echo))
        .await
        .expect("echo run");
    assert_clean(&report);

    // --first-customer moves the customers drawn: the last half of the
    // seeded ones read cleanly, those past them are not found.
    let report = bench::run(&RunArgs {
        first_customer: CUSTOMERS / 2,
        customers: CUSTOMERS / 2,
        ..run_args(target.clone(), Scenario::Context)
    })
    .await
    .expect("run");
    assert_clean(&report);
    let report = bench::run(&RunArgs {
        first_customer: CUSTOMERS,
        ..run_args(target.clone(), Scenario::Context)
    })
    .await
    .expect("run");
    assert_eq!(report.errors, report.requests, "{}", report.table());

    // Open loop: a modest rate the memory store meets easily; the own pid
    // stands in for a server's in `--pids`.
    let report = bench::run(&RunArgs {
        rate: Some(200.0),
        pids: vec![std::process::id()],
        ..run_args(target, Scenario::Context)
    })
    .await
    .expect("open-loop run");
    assert_clean(&report);
    assert_eq!(report.rate, Some(200.0));
    // Exactly the calls due in the measured window (0.1 s to 0.6 s at
    // 200/s), each sent once, none left unsent.
    assert_eq!(report.requests, 100, "{}", report.table());
    assert!(report
        .cpu_us_per_rpc
        .contains_key(&std::process::id().to_string()));

    let _ = stop_echo.send(());
    echo.await.expect("echo task").expect("echo server");
    server.stop().await.expect("server stops cleanly");
}

/// The raw baseline: the same scenarios' Redis work sent straight to a
/// redis-server, seeded through a server on it, with no failed call and
/// the events seeded read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_redis_baseline_runs_without_errors() {
    let redis = RedisServer::start();
    let server = JourneyServer::redis(&redis.url()).await;
    seed_tiny(&server.addr.to_string()).await;

    for scenario in [
        Scenario::Context,
        Scenario::List,
        Scenario::Check,
        Scenario::Append,
        Scenario::AppendBatch,
        Scenario::AppendSessions,
        Scenario::Mix,
    ] {
        let report = bench::run(&RunArgs {
            target: None,
            redis: Some(redis.url()),
            ..run_args(String::new(), scenario)
        })
        .await
        .expect("raw run");
        assert_clean(&report);
        assert_eq!(report.target, redis.url());
        if matches!(scenario, Scenario::Context | Scenario::List) {
            assert!(report.events_per_s > 0.0, "{}", report.table());
        }
    }
    let refused = bench::run(&RunArgs {
        target: None,
        redis: Some(redis.url()),
        ..run_args(String::new(), Scenario::Echo)
    })
    .await;
    assert!(refused.is_err(), "echo has no raw form");
    server.stop().await.expect("server stops cleanly");
}
