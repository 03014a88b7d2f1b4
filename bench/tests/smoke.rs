//! Every benchmark scenario at a tiny size against the real servers (the debug `durable-iterator`
//! binary and the bare tonic baseline; nats-server core is left out, JetStream and Redis Streams
//! run when installed), the `redis` group (two nodes on one Redis), and five seconds of the
//! soak. Asserts that each scenario ran and counted what it sent, never a speed.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use durable_iterator_bench::{Config, Report, Row, peers::PeerFigure, run, servers, table};

/// The debug server binary. A workspace `cargo test` has built it beside this test (the server
/// package's own tests need it), with the same features; only when this package is tested
/// alone is it built here.
fn server_binary() -> PathBuf {
    let beside_this_test = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("durable-iterator")));
    if let Some(binary) = beside_this_test.filter(|binary| binary.exists()) {
        return binary;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--bin", "durable-iterator"])
        .current_dir(workspace)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "cargo build --bin durable-iterator failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("debug").join("durable-iterator")
}

#[test]
fn every_scenario_runs_at_a_tiny_size_and_counts_what_it_sent() {
    let config = Config::smoke(
        server_binary(),
        env!("CARGO_BIN_EXE_durable-iterator-bench").into(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime.block_on(run(&config));
    let printed = table(&report);
    println!("{printed}");

    let scenarios: Vec<&str> = report.rows.iter().map(|r| r.scenario.as_str()).collect();
    for expected in [
        "fan-out",
        "latency",
        "latency stages",
        "idle memory",
        "durable publish (redb)",
        "resume storm",
        "tls",
        "gzip",
    ] {
        assert!(
            scenarios.contains(&expected),
            "{expected} missing:\n{printed}"
        );
    }
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.starts_with("nats column skipped")),
        "smoke mode says the nats reference is skipped:\n{printed}"
    );
    for row in &report.rows {
        assert!(
            row.errors.is_empty(),
            "{} / {}: {:?}",
            row.scenario,
            row.case,
            row.errors
        );
        assert!(
            row.product.is_some(),
            "{} / {} has no figure",
            row.scenario,
            row.case
        );
        assert_eq!(
            row.counted, row.expected,
            "{} / {} counted what it sent",
            row.scenario, row.case
        );
        if let Some(variant) = &row.variant {
            // The product against itself: both halves ran and counted what they sent.
            assert!(
                variant.without.is_some(),
                "{} / {} ({}): no figure without {}",
                row.scenario,
                row.case,
                row.unit,
                variant.with
            );
            assert_eq!(
                variant.counted, variant.expected,
                "{} / {} ({}) without {} counted what it sent",
                row.scenario, row.case, row.unit, variant.with
            );
        }
        if ["fan-out", "idle memory", "durable publish (redb)"].contains(&row.scenario.as_str()) {
            assert!(
                row.baseline.is_some(),
                "{} / {}: no baseline figure",
                row.scenario,
                row.case
            );
        }
    }
    // The numbers behind the counts: 50 events to 2 subscribers; 10 sessions x 5 events.
    let fan_out = report
        .rows
        .iter()
        .find(|r| r.scenario == "fan-out")
        .unwrap();
    assert_eq!(fan_out.expected, 100);
    let storm = report
        .rows
        .iter()
        .find(|r| r.scenario == "resume storm")
        .unwrap();
    assert_eq!(storm.expected, 50);
    // Long resumes: every session received its whole gap, read in pages.
    let resumes: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.scenario == "resume memory")
        .collect();
    assert_eq!(resumes.len(), 3);
    for row in resumes {
        assert!(row.errors.is_empty(), "{row:?}");
        assert_eq!((row.expected, row.counted), (400, 400), "{row:?}");
    }
    // gzip: 4 KiB events reach gzip subscribers compressed, 100-byte ones as they are.
    let wire = |size: &str| {
        report
            .rows
            .iter()
            .find(|r| r.scenario == "gzip" && r.case.ends_with(size) && r.unit.contains("bytes"))
            .and_then(|r| r.variant.as_ref()?.ratio)
            .unwrap_or_else(|| panic!("no gzip bytes row for {size}:\n{printed}"))
    };
    assert!(wire(" 4096 B") < 0.9, "4 KiB events compressed:\n{printed}");
    assert!(
        (0.99..1.01).contains(&wire(" 100 B")),
        "100-byte events sent as they are:\n{printed}"
    );
    // tls: both layouts of fan-out and of idle memory.
    let tls_cases = report.rows.iter().filter(|r| r.scenario == "tls").count();
    assert_eq!(tls_cases, 6, "tls rows:\n{printed}");
    peers_ran_where_installed(&report, &printed);
}

/// The `peers` rows: 3 publish shapes, fan-out to 2 consumers (events/s and server CPU per
/// delivery), a replay of 200 events; every
/// installed peer measured each of its shapes and counted what it sent, a missing one is
/// skipped with a note.
fn peers_ran_where_installed(report: &Report, printed: &str) {
    let rows: Vec<&Row> = report.rows.iter().filter(|r| r.peers.is_some()).collect();
    let cases: Vec<&str> = rows.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(
        cases,
        [
            "peers: durable publish",
            "peers: durable publish",
            "peers: durable publish",
            "peers: fan-out",
            "peers: fan-out",
            "peers: replay"
        ],
        "{printed}"
    );
    let replay = rows.last().unwrap();
    assert_eq!((replay.expected, replay.counted), (200, 200), "{printed}");
    for row in rows {
        let peers = row.peers.as_ref().unwrap();
        for (name, binary, figure) in [
            ("JetStream", "nats-server", &peers.jetstream),
            ("Redis Streams", "redis-server", &peers.redis_streams),
        ] {
            let what = format!("{name} / {}:\n{printed}", row.case);
            let Some(PeerFigure {
                value,
                expected,
                counted,
                skipped,
                ..
            }) = figure
            else {
                // No such measurement: Redis Streams has no fan-out.
                assert!(
                    name == "Redis Streams" && row.scenario == "peers: fan-out",
                    "{what}"
                );
                continue;
            };
            if servers::find_binary(binary).is_some() {
                assert!(skipped.is_none() && value.is_some(), "{what}");
                assert!(*expected > 0 && counted == expected, "{what}");
            } else {
                assert!(skipped.is_some() && value.is_none(), "{what}");
                let note = format!("{name} column skipped");
                assert!(report.notes.iter().any(|n| n.starts_with(&note)), "{what}");
            }
        }
    }
}

#[test]
fn the_redis_store_on_one_node_and_across_two_counts_what_it_sent() {
    if servers::find_binary("redis-server").is_none() {
        eprintln!("skipped: redis-server is not installed");
        return;
    }
    let mut config = Config::smoke(
        server_binary(),
        env!("CARGO_BIN_EXE_durable-iterator-bench").into(),
    );
    config.only = vec!["redis".into()];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime.block_on(run(&config));
    let printed = table(&report);
    println!("{printed}");

    let case = |unit_with: &str, case: &str| {
        report
            .rows
            .iter()
            .find(|r| r.variant.as_ref().is_some_and(|v| v.with == unit_with) && r.case == case)
            .unwrap_or_else(|| panic!("no {case:?} ({unit_with}) row:\n{printed}"))
    };
    for row in [
        case("Redis", "publish: 2 x 2 in flight, 5/call"),
        case("Redis", "fan-out 2 subs, one node"),
        case("two nodes", "fan-out 2 subs on Redis"),
        case("two nodes", "fan-out 2 subs on Redis, server CPU"),
        case("Redis", "latency 500 ev/s to 2 subs, p99, one node"),
        case("A to B", "latency 500 ev/s to 2 subs, p99 on Redis"),
    ] {
        let variant = row.variant.as_ref().unwrap();
        assert!(row.errors.is_empty(), "{row:?}");
        assert!(
            row.product.is_some() && variant.without.is_some(),
            "{row:?}"
        );
        assert!(row.expected > 0, "{row:?}");
        assert_eq!(
            (row.counted, variant.counted),
            (row.expected, variant.expected),
            "{row:?}"
        );
    }
    // 50 events to 2 subscribers, one of them on the node that did not take the publishes.
    assert_eq!(case("two nodes", "fan-out 2 subs on Redis").expected, 100);
    // The store's publishes as a share of redis-server's XADD ceiling.
    if servers::find_binary("redis-benchmark").is_some() {
        let share = case("Redis store", "publish: 2 x 2 in flight, 5/call");
        assert!(share.variant.as_ref().unwrap().ratio.is_some(), "{printed}");
    }
}

#[test]
fn a_few_seconds_of_soak_lose_nothing_and_end_no_stream_unexpectedly() {
    let mut config = Config::smoke(
        server_binary(),
        env!("CARGO_BIN_EXE_durable-iterator-bench").into(),
    );
    config.only = vec!["soak".into()];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime.block_on(run(&config));
    let printed = table(&report);
    println!("{printed}");

    assert!(report.rows.is_empty(), "only the soak ran:\n{printed}");
    let soak = report
        .soak
        .as_ref()
        .unwrap_or_else(|| panic!("the soak did not run:\n{printed}"));
    assert!(!soak.failed(), "{printed}");
    assert_eq!(
        (
            soak.lost,
            soak.duplicates,
            soak.out_of_order,
            soak.unexpected
        ),
        (0, 0, 0, 0),
        "{printed}"
    );
    assert!(soak.problems.is_empty(), "{printed}");
    // Every part of the load ran: the three ways to publish, the churn, the refreshes, and
    // the slow consumers were ended as such (and resumed: nothing was lost).
    assert!(soak.publish_calls > 0 && soak.batch_calls > 0 && soak.invokes > 0);
    assert!(soak.reconnects > 0, "{printed}");
    assert!(soak.refreshes > 0, "{printed}");
    assert!(soak.slow_ends_of_stalled > 0, "{printed}");
    // 30 readers on 3 channels: each event reached at least the 10 readers of its channel.
    assert!(soak.delivered >= 10 * soak.published, "{printed}");
    assert_eq!(soak.not_caught_up, 0, "{printed}");
    // A row a second, with the server's memory and the store's file.
    assert_eq!(soak.samples.len(), 5, "{printed}");
    assert!(
        soak.samples
            .iter()
            .all(|s| s.rss_mib.is_some_and(|m| m > 0.0) && s.file_mib.is_some_and(|m| m > 0.0)),
        "{printed}"
    );
    assert!(soak.warm_up.is_some() && soak.rss_max_after_warm_up_mib.is_some());
    assert!(printed.contains("| s | RSS MiB | file MiB |"), "{printed}");
}
