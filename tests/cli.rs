//! The `journey` binary as a user runs it: `serve` on the embedded default,
//! the client subcommands against it, and a clean exit on SIGTERM.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use support::redis_server::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_journey");

struct Served {
    child: Child,
    target: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Served {
    /// Starts `journey serve` and waits for its "started" log line.
    fn start(extra: &[&str]) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &listen])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("JOURNEY_STORE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn journey serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "server did not start in time");
            match lines.next() {
                Some(Ok(line)) if line.contains("journey server started") => break,
                Some(Ok(_)) => continue,
                _ => panic!("server exited before starting"),
            }
        }
        // Keep draining stderr so the server never blocks on a full pipe,
        // and keep the lines for tests that wait for one.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        Self {
            child,
            target: format!("http://{listen}"),
            log,
        }
    }

    /// Waits (bounded) until the server has logged a line containing `text`.
    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self
                .log
                .lock()
                .expect("log lock")
                .iter()
                .any(|l| l.contains(text))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server never logged {text:?}");
    }

    fn hangup(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success());
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("JOURNEY_TARGET", &self.target)
            .output()
            .expect("run journey client")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "journey {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Sends SIGTERM and returns the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn client_commands_round_trip_and_sigterm_exits_cleanly() {
    // Instants relative to now, so the test never falls out of retention.
    let hour_ago = journey::domain::Micros::now().saturating_sub_micros(3_600_000_000);
    let at = journey::domain::Micros(hour_ago.0 - hour_ago.0.rem_euclid(1_000_000) + 123_456)
        .to_string();
    let later = journey::domain::Micros(hour_ago.0 + 60_000_000).to_string();
    let served = Served::start(&[]);
    let page_view = [
        "append",
        "--customer",
        "c1",
        "--channel",
        "web",
        "--reason",
        "check_accounts",
        "--type",
        "page_view",
        "--attr",
        "page=/accounts",
        "--event-id",
        "e1",
        "--at",
        &at,
    ];
    let out = served.ok(&page_view);
    assert_eq!(out.trim(), "stored e1");
    // The same event again: the producer retried.
    let again = served.ok(&page_view);
    assert!(again.starts_with("duplicate e1"), "{again}");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("events.jsonl");
    let lines = [
        format!(
            r#"{{"event_id":"m1","customer_id":"c1","channel":"email","reason":"campaign_offer","type":"email_sent","occurred_at":"{later}","attributes":{{"campaign_id":"c42"}}}}"#
        ),
        r#"{"event_id":"x1","customer_id":"c1","channel":"fax","reason":"complaint","type":"call"}"#.to_string(),
    ];
    std::fs::write(&file, lines.join("\n")).expect("write batch");
    let batch = served.ok(&["append", "--batch", file.to_str().expect("path")]);
    assert!(
        batch.contains("1 stored, 0 duplicate, 1 rejected"),
        "{batch}"
    );
    assert!(
        batch.contains("events[1].channel: unknown channel"),
        "{batch}"
    );

    let text = served.ok(&["context", "c1"]);
    assert!(text.contains("events held  2"), "{text}");
    assert!(text.contains(&at), "{text}");

    let json: serde_json::Value =
        serde_json::from_str(&served.ok(&["context", "c1", "--json"])).expect("json");
    assert_eq!(json["total_events"], 2);
    assert_eq!(json["last_company_contact"]["event_id"], "m1");
    assert_eq!(json["contact_counts"]["last_24h"], 1, "{json}");
    assert_eq!(
        json["contact_counts"]["per_channel"]["email"]["last_30d"],
        1
    );
    assert_eq!(json["contact_counts_capped"], false);

    let page: serde_json::Value =
        serde_json::from_str(&served.ok(&["events", "c1", "--page-size", "1", "--json"]))
            .expect("json");
    assert_eq!(page["events"][0]["event_id"], "m1");
    let token = page["next_page_token"].as_str().expect("token").to_string();
    let next: serde_json::Value = serde_json::from_str(&served.ok(&[
        "events",
        "c1",
        "--page-size",
        "1",
        "--page-token",
        &token,
        "--json",
    ]))
    .expect("json");
    assert_eq!(next["events"][0]["event_id"], "e1");
    assert_eq!(next["events"][0]["occurred_at"], at.as_str());

    let filtered = served.ok(&["events", "c1", "--channel", "web", "--all"]);
    assert_eq!(filtered.lines().count(), 1, "{filtered}");

    let missing = served.run(&["context", "nobody"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));

    let status = served.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_bad_store_url_stops_startup_with_a_clear_message() {
    let out = Command::new(BIN)
        .args(["serve", "--store", "postgres://x"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unsupported store scheme"), "{stderr}");

    let out = Command::new(BIN)
        .args(["serve", "--store", "rediss://127.0.0.1:6380/0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS to Redis"), "{stderr}");

    // Refused at start, not retried every second as Redis being down is.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--store", "redis://127.0.0.1:1/-1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database index"), "{stderr}");
}

#[test]
fn a_thread_count_past_the_limit_stops_startup_with_a_clear_message() {
    for threads in ["1025", "18446744073709551615"] {
        let out = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--worker-threads",
                threads,
            ])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--worker-threads must be at most 1024"),
            "{stderr}"
        );
    }
}

/// A client command whose reader goes away (`journey journeys | head -1`)
/// ends quietly with SIGPIPE's status (141), as other Unix tools do, not
/// with a panic.
#[cfg(unix)]
#[test]
fn a_client_command_piped_into_a_closed_reader_ends_without_a_panic() {
    use std::io::Read;
    let served = Served::start(&[]);
    let mut child = Command::new(BIN)
        .arg("journeys")
        .env("JOURNEY_TARGET", &served.target)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    // Closed before the command writes its first line.
    drop(child.stdout.take());
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(
        matches!(status.code(), Some(0 | 141)),
        "ended by {status:?}: {stderr}"
    );
    assert!(served.terminate().success());
}

#[test]
fn a_bad_taxonomy_file_stops_startup_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("taxonomy.toml");
    std::fs::write(&file, "[channels]\nweb = \"online\"\nbranch = \"offlin\"\n").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--taxonomy"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn contact_checks_and_policy_reload_on_sighup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.toml");
    let rule = |max: u32| {
        format!(
            "[[rule]]\nname = \"email-daily\"\nchannel = \"email\"\nmax = {max}\nwindow = \"1d\"\n"
        )
    };
    std::fs::write(&policy, rule(1)).expect("write policy");
    let served = Served::start(&["--contact-policy", policy.to_str().expect("path")]);
    let hour_ago = journey::domain::Micros::now()
        .saturating_sub_micros(3_600_000_000)
        .to_string();
    served.ok(&[
        "append",
        "--customer",
        "c1",
        "--channel",
        "email",
        "--reason",
        "campaign_offer",
        "--type",
        "email_sent",
        "--attr",
        "campaign_id=c41",
        "--at",
        &hour_ago,
    ]);

    let blocked = served.ok(&["check", "c1", "--channel", "email", "--campaign", "c42"]);
    assert!(blocked.starts_with("blocked"), "{blocked}");
    assert!(
        blocked.contains("rule email-daily: 1 of 1 in 1d"),
        "{blocked}"
    );
    assert!(blocked.contains("next allowed at"), "{blocked}");

    let list = dir.path().join("list.csv");
    // As a spreadsheet may export it: a byte-order mark, a blank line, a
    // header in its own case, quoted fields holding commas.
    std::fs::write(
        &list,
        "\u{feff}\nCustomer_ID,name\nc1,\"Ann, Sr\"\n\"nobody\",\"Bob, \"\"Jr\"\"\"\n",
    )
    .expect("write list");
    let flagged = served.ok(&[
        "check",
        "--batch",
        list.to_str().expect("path"),
        "--channel",
        "email",
    ]);
    assert_eq!(
        flagged.lines().collect::<Vec<_>>(),
        ["c1,email-daily (1/1)", "nobody,unknown customer"]
    );
    // One customer a call (for a server with a lower --max-check-batch):
    // the same answers.
    let one_by_one = served.ok(&[
        "check",
        "--batch",
        list.to_str().expect("path"),
        "--batch-size",
        "1",
        "--channel",
        "email",
    ]);
    assert_eq!(one_by_one, flagged);

    // A looser policy takes effect on SIGHUP, without a restart.
    std::fs::write(&policy, rule(2)).expect("write policy");
    served.hangup();
    served.wait_for_log("contact policy reloaded");
    let allowed = served.ok(&["check", "c1", "--channel", "email", "--json"]);
    let answer: serde_json::Value = serde_json::from_str(&allowed).expect("json");
    assert_eq!(answer["allowed"], true, "{answer}");

    // A broken file is refused and the last good policy stays.
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"x\"\nmax = -1\nwindow = \"1d\"\n",
    )
    .expect("write");
    served.hangup();
    served.wait_for_log("contact policy not reloaded");
    let still: serde_json::Value =
        serde_json::from_str(&served.ok(&["check", "c1", "--channel", "email", "--json"]))
            .expect("json");
    assert_eq!(still["allowed"], true);

    // Reserve mode records the contact: the next check is blocked.
    let named = [
        "check",
        "c1",
        "--channel",
        "email",
        "--reserve",
        "--reservation-id",
        "mail-1",
    ];
    let reserved = served.ok(&named);
    assert!(
        reserved.contains("reserved: append the contact's event with event_id mail-1"),
        "{reserved}"
    );
    let after = served.ok(&["check", "c1", "--channel", "email"]);
    assert!(after.starts_with("blocked"), "{after}");
    // The same reservation asked again (a retry) is answered, not refused
    // as one more over the cap.
    let again = served.ok(&named);
    assert!(again.starts_with("allowed"), "{again}");
    assert!(again.contains("event_id mail-1"), "{again}");
    let unnamed = served.ok(&["check", "c1", "--channel", "email", "--reserve"]);
    assert!(unnamed.starts_with("blocked"), "{unnamed}");
    assert!(served.terminate().success());
}

#[test]
fn link_and_look_up_by_phone_or_email() {
    let served = Served::start(&["--phone-region", "FR"]);
    let hour_ago = journey::domain::Micros::now()
        .saturating_sub_micros(3_600_000_000)
        .to_string();
    let anonymous = served.ok(&[
        "append",
        "--identity",
        "email=Ann@Example.org",
        "--channel",
        "web",
        "--reason",
        "check_accounts",
        "--type",
        "page_view",
        "--attr",
        "page=/",
        "--at",
        &hour_ago,
        "--event-id",
        "v1",
    ]);
    assert_eq!(anonymous.trim(), "stored v1");
    let linked = served.ok(&[
        "link",
        "--identity",
        "email=ann@example.org",
        "--identity",
        "phone=06 12 34 56 78",
        "--identity",
        "customer_id=c7",
    ]);
    assert!(linked.starts_with("profile c7"), "{linked}");
    assert!(linked.contains("merged ~"), "{linked}");
    let by_phone = served.ok(&["context", "--phone", "+33 6 12 34 56 78"]);
    assert!(by_phone.contains("customer     c7"), "{by_phone}");
    assert!(
        by_phone.contains("  phone        +33612345678"),
        "{by_phone}"
    );
    assert!(by_phone.contains("  customer_id  c7"), "{by_phone}");
    assert!(by_phone.contains("merged in   ~"), "{by_phone}");
    let by_email: serde_json::Value =
        serde_json::from_str(&served.ok(&["context", "--email", "ANN@example.org", "--json"]))
            .expect("json");
    assert_eq!(by_email["profile_id"], "c7");
    assert_eq!(by_email["events"][0]["event_id"], "v1");
    served.ok(&["unlink", "c7", "--remove", "phone=0612345678"]);
    let gone = served.run(&["context", "--phone", "0612345678"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    let two = served.run(&["context", "c7", "--email", "ann@example.org"]);
    assert!(String::from_utf8_lossy(&two.stderr).contains("name the customer one way"));

    // A right-to-erasure request, by email: then nothing is found.
    let forgot = served.ok(&["forget", "--email", "ann@example.org"]);
    assert!(forgot.starts_with("forgot c7: "), "{forgot}");
    let gone = served.run(&["context", "c7"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
    assert!(served.terminate().success());
}

#[test]
fn journey_definitions_are_listed_and_reloaded_on_sighup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("journeys.toml");
    let journey = |name: &str| {
        format!(
            "[[journey]]\nname = \"{name}\"\ninactivity_timeout = \"30m\"\n\n[[journey.step]]\nname = \"opened\"\ntype = \"page_view\"\n\n[[journey.step]]\nname = \"done\"\ntype = \"form_submitted\"\n"
        )
    };
    std::fs::write(&file, journey("first")).expect("write");
    let served = Served::start(&["--journeys", file.to_str().expect("path")]);
    let text = served.ok(&["journeys"]);
    assert!(
        text.starts_with("first  (steps in order, drop after 30m without progress)"),
        "{text}"
    );
    assert!(text.contains("1. opened (start): type=page_view"), "{text}");

    std::fs::write(&file, journey("second")).expect("write");
    served.hangup();
    served.wait_for_log("journey definitions reloaded");
    let listed: serde_json::Value =
        serde_json::from_str(&served.ok(&["journeys", "--json"])).expect("json");
    assert_eq!(listed["journeys"][0]["name"], "second");
    assert_eq!(listed["journeys"][0]["inactivity_timeout_s"], 1800);

    // A broken file is refused; the last good set stays.
    std::fs::write(&file, "[[journey]]\nname = \"x\"\n").expect("write");
    served.hangup();
    served.wait_for_log("journey definitions not reloaded");
    let listed: serde_json::Value =
        serde_json::from_str(&served.ok(&["journeys", "--json"])).expect("json");
    assert_eq!(listed["journeys"][0]["name"], "second");
    assert!(served.terminate().success());
}

#[test]
fn a_bad_journeys_file_stops_startup_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("journeys.toml");
    let text = "[[journey]]\nname = \"j\"\ninactivity_timeout = \"1h\"\n\n[[journey.step]]\nname = \"s\"\ntype = \"teleport\"\n";
    std::fs::write(&file, text).expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--journeys"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line") && stderr.contains("teleport"),
        "{stderr}"
    );
}

#[test]
fn a_customers_journeys_stats_funnel_and_listing() {
    let served = Served::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.jsonl");
    let now = journey::domain::Micros::now().0;
    let at = |minutes_ago: i64| journey::domain::Micros(now - minutes_ago * 60_000_000).to_string();
    // Ann is stuck at step 3 since 10 minutes; Bob stopped 2 hours ago and
    // the sweeper drops him at step 2.
    let line = |customer: &str, id: &str, step: usize, when: &str| {
        let mut event = journey::domain::journey::testkit::banking_step(step, id, 0);
        event.at = journey::domain::Micros(0);
        serde_json::json!({
            "event_id": id, "customer_id": customer, "channel": event.channel,
            "reason": event.reason, "type": event.event_type,
            "initiator": if event.initiator == journey::domain::Initiator::Customer { "customer" } else { "company" },
            "occurred_at": when, "attributes": event.attributes,
        })
        .to_string()
    };
    let lines = [
        line("ann", "a0", 0, &at(14)),
        line("ann", "a1", 1, &at(12)),
        line("ann", "a2", 2, &at(10)),
        line("bob", "b0", 0, &at(122)),
        line("bob", "b1", 1, &at(121)),
    ];
    std::fs::write(&file, lines.join("\n")).expect("write");
    let appended = served.ok(&["append", "--batch", file.to_str().expect("path")]);
    assert!(appended.contains("5 stored"), "{appended}");

    let ann = served.ok(&["journeys", "ann"]);
    assert!(
        ann.contains("personal_data_verification: in progress, at verification_started since 10m"),
        "{ann}"
    );
    let context = served.ok(&["context", "ann"]);
    assert!(context.contains("journeys:"), "{context}");

    // The sweeper (every second by default) drops Bob; poll the funnel.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let stats = loop {
        let stats: serde_json::Value = serde_json::from_str(&served.ok(&[
            "stats",
            "personal_data_verification",
            "--since",
            "1d",
            "--json",
        ]))
        .expect("json");
        if stats["dropped"] == 1 || std::time::Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(stats["entered"], 2, "{stats}");
    assert_eq!(stats["dropped"], 1, "{stats}");
    assert_eq!(stats["steps"][1]["step"], "prompted");
    assert_eq!(stats["steps"][1]["dropped_here"], 1);
    let funnel = served.ok(&["stats", "personal_data_verification", "--since", "7d"]);
    assert!(funnel.contains("entered 2"), "{funnel}");
    assert!(
        funnel
            .lines()
            .any(|l| l.trim_start().starts_with("signed_in") && l.contains('█')),
        "{funnel}"
    );
    let dropped = served.ok(&[
        "customers",
        "personal_data_verification",
        "--state",
        "dropped",
        "--step",
        "prompted",
    ]);
    assert!(dropped.trim_end().ends_with("bob"), "{dropped}");
    let unknown = served.run(&["stats", "no_such_journey"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("NotFound"));
    assert!(served.terminate().success());
}
