//! Black-box tests of the C API: the C programs in `tests/c/` are compiled against
//! `libipc.h` and the library cargo built (`libipc.so`, once `libipc.a`), then run
//! against each other and against the Rust examples `pongd` and `pong`.
//!
//!     cargo test -p libipc-tests --test c_api
//!
//! Needs a C compiler (`cc`). The library is the one cargo built for this test
//! (`target/<profile>/deps/libipc.{so,a}`); the Rust examples are built by the test
//! itself (see [`libipc_tests::build_binaries`]), so the command above is all it
//! takes. Every child process is killed after [`CHILD_TIMEOUT`]; a service is ready
//! when its socket accepts a connection, never after a fixed sleep. The helpers are
//! the crate's library, `tests/src/lib.rs`, shared with the tcpd tests.

use std::process::Command;

use libipc_tests::{
    CHILD_TIMEOUT, Proc, World, assert_pongd_done, echoes, run_cmd, spawn, workspace,
};

#[test]
fn header_compiles_without_warnings() {
    let w = World::new();
    let src = w.path().join("header.c");
    std::fs::write(&src, "#include <libipc.h>\nint main(void) { return 0; }\n").unwrap();
    let mut cmd = Command::new("cc");
    cmd.current_dir(workspace())
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(["-I", "libipc-c/include", "-fsyntax-only"])
        .arg(&src);
    run_cmd(cmd, w.path(), "cc-header", CHILD_TIMEOUT).assert_success("libipc.h alone");
}

#[test]
fn c_pong_against_c_pongd() {
    let w = World::new();
    let (pongd, pong) = (w.compile("pongd"), w.compile("pong"));
    let service = w.c_pongd(&pongd, "pong", 2);

    let msg = "hello, plz bounce me";
    let mut cmd = w.command(&pong);
    cmd.args(["pong", msg, "3"]);
    let run = run_cmd(cmd, w.path(), "pong", CHILD_TIMEOUT);
    run.assert_success("C pong");
    assert_eq!(run.stdout, echoes(msg, 3), "{}", run.report());

    // Empty messages are messages.
    let mut cmd = w.command(&pong);
    cmd.args(["pong", "", "2"]);
    let run = run_cmd(cmd, w.path(), "pong-empty", CHILD_TIMEOUT);
    run.assert_success("C pong with empty messages");
    assert_eq!(run.stdout, "\n\n", "{}", run.report());

    assert_pongd_done(service, 2);
}

#[test]
fn rust_pong_against_c_pongd() {
    let w = World::new();
    let pongd = w.compile("pongd");
    let service = w.c_pongd(&pongd, "pong", 1);

    let mut cmd = w.example("pong");
    cmd.args(["-s", "pong", "hello from Rust", "", "second"]);
    let run = run_cmd(cmd, w.path(), "rust-pong", CHILD_TIMEOUT);
    run.assert_success("Rust pong");
    assert_eq!(
        run.stdout,
        "hello from Rust\n\nsecond\n",
        "{}",
        run.report()
    );

    assert_pongd_done(service, 1);
}

#[test]
fn c_pong_against_rust_pongd() {
    let w = World::new();
    let pong = w.compile("pong");
    let mut cmd = w.example("pongd");
    cmd.arg("rpong");
    let mut service = w.start_service(cmd, "rpong", "rust-pongd");

    let msg = "ping from C";
    let mut cmd = w.command(&pong);
    cmd.args(["rpong", msg, "5"]);
    let run = run_cmd(cmd, w.path(), "pong", CHILD_TIMEOUT);
    run.assert_success("C pong");
    assert_eq!(run.stdout, echoes(msg, 5), "{}", run.report());

    // The Rust pongd never exits by itself: Drop kills it. It must still be up.
    assert!(service.running(), "{}", service.output(None).report());
}

#[test]
fn static_c_pongd_serves_concurrent_c_clients() {
    let w = World::new();
    let (pongd, pong) = (w.compile_static("pongd"), w.compile("pong"));
    // Without LD_LIBRARY_PATH: proof that it does not need libipc.so.
    let mut cmd = w.command(&pongd);
    cmd.env_remove("LD_LIBRARY_PATH").args(["pong", "5"]); // 4 clients, 1 probe
    let service = w.start_service(cmd, "pong", "pongd-static");

    let clients: Vec<(String, Proc)> = (0..4)
        .map(|i| {
            let msg = format!("client {i} says hi");
            let mut cmd = w.command(&pong);
            cmd.args(["pong", &msg, "50"]);
            let p = spawn(cmd, w.path(), &format!("pong-{i}"));
            (msg, p)
        })
        .collect();
    for (msg, p) in clients {
        let run = p.wait(CHILD_TIMEOUT);
        run.assert_success("C pong");
        assert_eq!(run.stdout, echoes(&msg, 50), "{}", run.report());
    }

    assert_pongd_done(service, 4);
}

#[test]
fn message_larger_than_buffer_is_not_truncated() {
    let w = World::new();
    let (pongd, toosmall) = (w.compile("pongd"), w.compile("toosmall"));
    let service = w.c_pongd(&pongd, "pong", 1);

    let mut cmd = w.command(&toosmall);
    cmd.arg("pong");
    let run = run_cmd(cmd, w.path(), "toosmall", CHILD_TIMEOUT);
    run.assert_success("toosmall");
    run.assert_lines(&[
        "ipc_wait_event: 5000 bytes: IPC_ETOOSMALL with a 100-byte buffer, then intact",
        "ipc_read_fd: 5000 bytes: IPC_ETOOSMALL with a 100-byte buffer, then intact",
        "ipc_wait_event: 1048576 bytes: IPC_ETOOSMALL with a 100-byte buffer, then intact",
        "ipc_read_fd: 1048576 bytes: IPC_ETOOSMALL with a 100-byte buffer, then intact",
        "toosmall: ok",
    ]);

    assert_pongd_done(service, 1);
}

#[test]
fn writing_to_a_gone_peer_fails_without_sigpipe() {
    let w = World::new();
    let nosigpipe = w.compile("nosigpipe");
    let run = run_cmd(w.command(&nosigpipe), w.path(), "nosigpipe", CHILD_TIMEOUT);
    run.assert_success("nosigpipe");
    run.assert_lines(&[
        "ipc_write to a closed peer: -1",
        "ipc_schedule to an fd unknown to the context: -1",
        "ipc_write to a connection whose service is gone: -1",
        "nosigpipe: ok, still alive",
    ]);
}

#[test]
fn switch_callbacks_relay_frames_in_order() {
    let w = World::new();
    let (pongd, switch) = (w.compile("pongd"), w.compile("switch"));
    let service = w.c_pongd(&pongd, "pong", 1);

    let mut cmd = w.command(&switch);
    cmd.arg("pong");
    let run = run_cmd(cmd, w.path(), "switch", CHILD_TIMEOUT);
    run.assert_success("switch");
    let frames: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("frame "))
        .collect();
    assert_eq!(
        frames,
        [
            "frame 0 back: \"one\"",
            "frame 1 back: \"two\"",
            "frame 2 back: \"\"",
            "frame 3 back: \"four, a longer one\"",
            "frame 4 back: \"five\"",
        ],
        "{}",
        run.report()
    );
    run.assert_lines(&["callbacks: in 5, out 5", "switch: ok"]);

    assert_pongd_done(service, 1);
}

/// What `tests/c/burst` prints when every echo came back: 45 messages of 0 B
/// to 300 KB, and how often `ipc_schedule` said the queue was full.
fn burst_done(full: &str) -> String {
    let bytes: u64 = (0..45u64).map(|i| 300_000 * i / 44).sum();
    format!("echoed 45 messages, {bytes} bytes; queue full {full} times\n")
}

/// A program written for the original schedules as many messages as it
/// likes and then waits for the answers: `ipc_schedule` never refuses it
/// (the original has no IPC_EQUEUEFULL), whichever service echoes.
#[test]
fn a_burst_scheduled_at_once_is_all_echoed_as_with_the_original() {
    let w = World::new();
    let (pongd, burst) = (w.compile("pongd"), w.compile("burst"));

    let service = w.c_pongd(&pongd, "cpong", 1);
    let mut cmd = w.command(&burst);
    cmd.arg("cpong");
    let run = run_cmd(cmd, w.path(), "burst-c", CHILD_TIMEOUT);
    run.assert_success("burst against the C pongd");
    assert_eq!(run.stdout, burst_done("0"), "{}", run.report());
    assert_pongd_done(service, 1);

    let mut cmd = w.example("pongd");
    cmd.arg("rpong");
    let mut rust = w.start_service(cmd, "rpong", "rust-pongd");
    let mut cmd = w.command(&burst);
    cmd.arg("rpong");
    let run = run_cmd(cmd, w.path(), "burst-rust", CHILD_TIMEOUT);
    run.assert_success("burst against the Rust pongd");
    assert_eq!(run.stdout, burst_done("0"), "{}", run.report());
    assert!(rust.running(), "{}", rust.output(None).report());
}

/// `ipc_set_queue_limit` (not in the original) opts in to backpressure:
/// `ipc_schedule` then says IPC_EQUEUEFULL at the limit, and the program
/// schedules the rest after MESSAGE_TX.
#[test]
fn a_queue_limit_opts_in_to_backpressure() {
    let w = World::new();
    let burst = w.compile("burst");
    let mut cmd = w.example("pongd");
    cmd.arg("rpong");
    let _rust = w.start_service(cmd, "rpong", "rust-pongd");
    let mut cmd = w.command(&burst);
    cmd.args(["rpong", "1048576"]);
    let run = run_cmd(cmd, w.path(), "burst-limited", CHILD_TIMEOUT);
    run.assert_success("burst with a queue limit");
    let full: u32 = run
        .stdout
        .rsplit_once("queue full ")
        .and_then(|(_, n)| n.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{}", run.report()));
    assert!(full > 0, "never told the queue was full\n{}", run.report());
    assert_eq!(
        run.stdout,
        burst_done(&full.to_string()),
        "{}",
        run.report()
    );
}

/// Clients held open at once on `name` in `w`'s run directory, each echoed
/// a message of its own; returns when all are closed.
fn concurrent_echo_clients(w: &World, name: &str, count: usize) {
    use std::io::{Read, Write};
    let path = w.rundir.join(name);
    let mut clients: Vec<std::os::unix::net::UnixStream> = (0..count)
        .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(libipc_tests::IO_TIMEOUT)).unwrap();
        c.write_all(&libipc_tests::frame(format!("client {i}").as_bytes()))
            .unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let want = libipc_tests::frame(format!("client {i}").as_bytes());
        let mut got = vec![0; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, want, "client {i}");
    }
}

/// How many clients each worker of a pongd reports in `out` ("worker N:
/// client ... connected", the C pongd's lines; `worker{n=N}` in the Rust
/// pongd's log).
fn clients_per_worker(out: &str, workers: usize) -> Vec<usize> {
    (0..workers)
        .map(|n| {
            let (c, rust) = (format!("worker {n}: client"), format!("worker{{n={n}}}"));
            out.lines()
                .filter(|l| l.contains("connected") && !l.contains("disconnected"))
                .filter(|l| l.contains(&c) || l.contains(&rust))
                .count()
        })
        .collect()
}

/// Bursts of 16 clients at once on `name`, each echoed, until both loops
/// of its pongd have served some (as `output` shows), at most 3 bursts.
/// Which loop takes a client is the scheduler's call on a loaded machine:
/// one loop may take a whole burst; three in a row would be no sharing.
fn assert_both_workers_serve(w: &World, name: &str, output: impl Fn() -> String) {
    let mut per_worker = Vec::new();
    for _ in 0..3 {
        concurrent_echo_clients(w, name, 16);
        per_worker = clients_per_worker(&output(), 2);
        if per_worker.iter().all(|&n| n >= 1) {
            return;
        }
    }
    panic!(
        "clients per worker after 3 bursts: {per_worker:?}\n{}",
        output()
    );
}

/// A service on two event loops (`ipc_service_share` in C,
/// `Context::share_service` in Rust): clients at once are all echoed, and
/// both loops serve some of them. (How evenly is a matter of scheduling;
/// libipc's parallel tests and ipc-bench look at that.)
#[test]
fn a_service_on_two_workers_serves_clients_on_both() {
    let w = World::new();
    let pongd = w.compile("pongd");
    let mut cmd = w.command(&pongd);
    // No client count: it serves until the test ends. 2 workers.
    cmd.args(["cpong", "0", "2"]);
    let c = w.start_service(cmd, "cpong", "pongd-2");
    assert_both_workers_serve(&w, "cpong", || c.output(None).stdout);

    let mut cmd = w.example("pongd");
    cmd.args(["rpong", "2"]);
    let mut rust = w.start_service(cmd, "rpong", "rust-pongd-2");
    assert_both_workers_serve(&w, "rpong", || rust.output(None).stderr);
    assert!(rust.running(), "{}", rust.output(None).stderr);
}

#[test]
fn context_deinit_nulls_the_pointer_and_removes_the_service() {
    let w = World::new();
    let deinit = w.compile("deinit");
    let mut cmd = w.command(&deinit);
    cmd.arg("gone");
    let run = run_cmd(cmd, w.path(), "deinit", CHILD_TIMEOUT);
    run.assert_success("deinit");
    run.assert_lines(&["deinit: ok"]);
}
