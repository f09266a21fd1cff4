//! Crash test of the fjall backend's group commit, with a real process and a real SIGKILL.
//!
//! The parent (this test) runs rounds against one store directory. Each round starts a child process —
//! this same binary with `--child DIR` — that opens the store and appends events from several concurrent
//! writers (each batch: events of one aggregate + one outbox entry, one atomic commit, shared fsyncs),
//! printing `ack AGGREGATE VERSION OUTBOX_ID` to stdout after each acknowledged commit. After a random
//! delay the parent SIGKILLs the child, reads every line it printed, reopens the store itself and checks:
//! every acknowledged event is present with the payload written, versions are gap-free from 1, every
//! acknowledged outbox entry is present, and the store opened without repair.
//!
//! `harness = false`: `main` is the parent, or the child when called with `--child`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test harness: failures are panics, results are printed"
)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_storage::{FjallBackend, Store, SystemClock, WriteBatch};

/// Kill rounds (the issue asks for at least 50).
const ROUNDS: usize = 60;
/// Concurrent writers in the child; each owns one aggregate.
const WRITERS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // libtest-style filters/flags from `cargo test` are accepted and ignored.
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let dir = PathBuf::from(args.get(pos + 1).map_or("", String::as_str));
        child(&dir);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        // `cargo test -- --list` asks every test binary for its tests.
        println!("crash_recovery: test");
        return;
    }
    parent();
}

fn payload(aggregate: usize, version: u64) -> Vec<u8> {
    format!("agg-{aggregate}-v{version}").into_bytes()
}

fn child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let backend = FjallBackend::open(dir.to_owned()).await.expect("child open");
        let store = Store::new(Arc::new(backend), Arc::new(SystemClock));
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            let out = Arc::clone(&out);
            tasks.push(tokio::spawn(async move {
                let aggregate = format!("agg-{w}");
                let mut version = store.event_version(&aggregate).await.expect("version");
                loop {
                    let n = fastrand::u64(1..=8);
                    let events = (version + 1..=version + n).map(|v| payload(w, v)).collect();
                    let mut batch = WriteBatch::new();
                    batch.append_events(&aggregate, version, events);
                    batch.append_outbox("crash", format!("{aggregate}@{}", version + n));
                    let results = store.commit(batch).await.expect("commit");
                    version += n;
                    let outbox_id = results.last().copied().expect("outbox id");
                    // Printed only after the commit is acknowledged (= durable).
                    let mut out = out.lock().expect("stdout");
                    let _ = writeln!(out, "ack {w} {version} {outbox_id}");
                    let _ = out.flush();
                }
            }));
        }
        let _ = writeln!(out.lock().expect("stdout"), "ready");
        for t in tasks {
            let _ = t.await;
        }
    });
}

struct Acked {
    /// Highest acknowledged version per writer.
    versions: Vec<u64>,
    /// Versions below this were verified by an earlier round (each round re-reads from here; the last
    /// round re-reads everything).
    verified: Vec<u64>,
    /// Acknowledged outbox ids with their payloads.
    outbox: Vec<(u64, String)>,
}

fn parent() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut acked = Acked { versions: vec![0; WRITERS], verified: vec![1; WRITERS], outbox: Vec::new() };
    let mut total_acks = 0usize;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .arg("--child")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill at a random moment: one round in five during open/recovery, the rest mid-stream.
        if fastrand::u8(0..5) == 0 {
            std::thread::sleep(Duration::from_millis(fastrand::u64(0..40)));
        } else {
            let mut lines_seen = Vec::new();
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
                let ready = line == "ready";
                lines_seen.push(line);
                if ready {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(fastrand::u64(1..150)));
            for line in lines_seen {
                record(&line, &mut acked, &mut total_acks);
            }
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "round {round}: the child must die by the signal");
        reader.join().expect("reader");
        let lines: Vec<String> = rx.try_iter().collect();
        for line in &lines {
            record(line, &mut acked, &mut total_acks);
        }
        if round == ROUNDS - 1 {
            acked.verified = vec![1; WRITERS];
        }
        rt.block_on(verify(dir.path(), &mut acked, round));
        // verify acked (removed) the entries it checked, so the outbox stays small across rounds.
        acked.outbox.clear();
    }
    assert!(total_acks > ROUNDS, "the children acknowledged too little to prove anything ({total_acks} acks)");
    println!(
        "crash_recovery: {ROUNDS} SIGKILL rounds, {total_acks} acknowledged commits, all present after reopen ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

fn record(line: &str, acked: &mut Acked, total_acks: &mut usize) {
    let mut parts = line.split_whitespace();
    if parts.next() != Some("ack") {
        return;
    }
    let w: usize = parts.next().and_then(|s| s.parse().ok()).expect("writer");
    let v: u64 = parts.next().and_then(|s| s.parse().ok()).expect("version");
    let id: u64 = parts.next().and_then(|s| s.parse().ok()).expect("outbox id");
    acked.versions[w] = acked.versions[w].max(v);
    acked.outbox.push((id, format!("agg-{w}@{v}")));
    *total_acks += 1;
}

async fn verify(dir: &Path, acked: &mut Acked, round: usize) {
    let backend = FjallBackend::open(dir.to_owned())
        .await
        .unwrap_or_else(|e| panic!("round {round}: the store must reopen without repair: {e}"));
    let store = Store::new(Arc::new(backend), Arc::new(SystemClock));
    for (w, &want) in acked.versions.iter().enumerate() {
        let aggregate = format!("agg-{w}");
        let have = store.event_version(&aggregate).await.expect("version");
        assert!(have >= want, "round {round}: {aggregate} acknowledged v{want} but the store has v{have}");
        let mut next = acked.verified[w];
        while next <= have {
            let events = store.read_events(&aggregate, next, 1000).await.expect("read");
            assert!(!events.is_empty(), "round {round}: {aggregate} missing events from v{next} (head v{have})");
            for e in events {
                assert_eq!(e.version, next, "round {round}: {aggregate} has a gap before v{}", e.version);
                assert_eq!(e.payload, payload(w, next), "round {round}: {aggregate} v{next} payload");
                next += 1;
            }
        }
        assert_eq!(next, have.max(acked.verified[w] - 1) + 1, "round {round}: {aggregate} has events beyond v{have}");
        acked.verified[w] = next;
    }
    let pending = store.pending_outbox(usize::MAX / 2).await.expect("outbox");
    let by_id: std::collections::HashMap<u64, &[u8]> = pending.iter().map(|e| (e.id, e.payload.as_slice())).collect();
    for (id, want) in &acked.outbox {
        let have = by_id.get(id).unwrap_or_else(|| panic!("round {round}: acknowledged outbox entry {id} is missing"));
        assert_eq!(*have, want.as_bytes(), "round {round}: outbox entry {id}");
    }
    let ids: Vec<u64> = acked.outbox.iter().map(|(id, _)| *id).collect();
    store.ack_outbox(&ids).await.expect("ack outbox");
    store.close().await.expect("close");
}
