//! A burst of requests, real process: every request is answered, the server starts no
//! thread for it, and its read connections stay within a fixed number. Before, a request
//! waiting for its token to be checked could start a blocking thread and open a
//! connection: in the benchmark's burst of a thousand phones, 161 threads were started.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Barrier;

use doorstep_server::readers::{READER_THREADS, TOKEN_THREADS};
use doorstep_server::store::data_dir::STORE_FILE;
use support::*;

/// Requests sent at once.
const BURST: usize = 240;

/// The descriptors the server holds open on its store file.
fn store_descriptors(pid: u32, store: &Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the server's descriptors are listed")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target == store)
        .count()
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads are listed").count()
}

#[test]
fn a_burst_of_requests_is_answered_with_a_bounded_number_of_connections_and_threads() {
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1"]);
    admin.household("王", "c1", "b1", &["m1"]);
    let pid = district.server.child.id();
    let store: PathBuf = district.data.join(STORE_FILE).canonicalize().expect("the store exists");
    let (connections_before, threads_before) = (store_descriptors(pid, &store), threads(pid));

    // Half read the coordinator API (a token check, then a read), half ask for a device
    // list (a token check, then the writer), all released together.
    let start = Barrier::new(BURST);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..BURST)
            .map(|i| {
                let (start, url, token) = (&start, &district.server.url, &district.admin_token);
                s.spawn(move || {
                    start.wait();
                    let path = if i % 2 == 0 { "/v1/households" } else { "/v1/admin/devices" };
                    get(&format!("{url}{path}"), token).0
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a request thread")).collect()
    });
    let (connections, threads_after) = (store_descriptors(pid, &store), threads(pid));

    assert!(statuses.iter().all(|&s| s == 200), "every request answered: {statuses:?}");
    // Each read connection holds the store file open once; a reader thread opens one.
    let bound = READER_THREADS + TOKEN_THREADS;
    assert!(
        connections <= connections_before + bound,
        "at most {bound} read connections opened for {BURST} requests: {connections_before} before, {connections} after"
    );
    assert_eq!(threads_after, threads_before, "no thread started for the burst: the readers were there before");
    district.server.assert_sound();
}
