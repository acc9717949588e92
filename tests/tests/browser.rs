//! The chat example (`libipc/examples/chatd.rs`) and its page
//! (`websocketd/www/`) in a real browser: headless Chromium, driven by
//! playwright-core from `tests/browser/chat.cjs`, loads the page from
//! websocketd's `--static-dir`, and two tabs chat through websocketd and chatd.
//! A page of another origin is refused (HTTP 403) unless listed with `--origin`.
//! chatd's broadcasting is also checked on its own, with plain LibIPC clients.
//!
//!     cargo test -p libipc-tests --test browser
//!
//! Needs Debian's Chromium (`/usr/bin/chromium`), Node.js, and playwright-core
//! under `target/node` (`tests/run` installs them). Every daemon has a temporary
//! RUNDIR and a port of its own choosing (`--listen 127.0.0.1:0`); every wait is
//! bounded, here and in the script.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::Duration;

use libipc_tests::{Daemon, IO_TIMEOUT, Proc, READY_TIMEOUT, World, spawn_with_stdin, workspace};

/// Longest the browser script may run (it gives up by itself after 45 s).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest the browser script may take to reach a step of its scenario.
const STEP_TIMEOUT: Duration = Duration::from_secs(40);

/// Debian's Chromium, which playwright-core is told to run.
const CHROMIUM: &str = "/usr/bin/chromium";

// ---------------------------------------------------------------------------
// chatd with LibIPC clients.

/// A LibIPC client of chatd on its unix socket.
struct Member {
    s: UnixStream,
    who: &'static str,
}

impl Member {
    fn join(w: &World, who: &'static str) -> Member {
        let s = UnixStream::connect(w.rundir.join("chat"))
            .unwrap_or_else(|e| panic!("{who}: connect to chatd: {e}"));
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Member { s, who }
    }

    /// Sends one message.
    fn say(&mut self, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        self.s
            .write_all(&[&len[..], payload].concat())
            .unwrap_or_else(|e| panic!("{}: send: {e}", self.who));
    }

    /// Reads the next message and checks it is `want`.
    fn hears(&mut self, want: &str) {
        let mut len = [0; 4];
        let mut payload = Vec::new();
        let got = self.s.read_exact(&mut len).and_then(|()| {
            payload.resize(u32::from_be_bytes(len) as usize, 0);
            self.s.read_exact(&mut payload)
        });
        if let Err(e) = got {
            panic!("{}: waiting for {want:?}: {e}", self.who);
        }
        assert_eq!(
            String::from_utf8_lossy(&payload),
            want,
            "{}: unexpected message",
            self.who
        );
    }

    /// Joins and says `hello`: hearing it back means chatd counts it in.
    fn join_and_greet(w: &World, who: &'static str, hello: &str) -> Member {
        let mut m = Member::join(w, who);
        m.say(hello.as_bytes());
        m.hears(hello);
        m
    }
}

fn start_chatd(w: &World, label: &str) -> Proc {
    w.start_service(w.example("chatd"), "chat", label)
}

#[test]
fn chatd_sends_every_message_to_everyone_and_drops_a_member_that_does_not_read() {
    let w = World::new();
    let mut chatd = start_chatd(&w, "chatd");
    let mut a = Member::join_and_greet(&w, "a", "hello from a");
    let mut b = Member::join_and_greet(&w, "b", "hello from b");
    a.hears("hello from b");

    a.say(b"second from a");
    b.hears("second from a");
    a.hears("second from a");
    // Text for everyone: bytes that are not UTF-8 become U+FFFD. An empty
    // message says nothing.
    b.say(b"caf\xe9");
    b.say(b"");
    b.say(b"after an empty one");
    for m in [&mut a, &mut b] {
        m.hears("caf\u{fffd}");
        m.hears("after an empty one");
    }

    // c joins, then reads no more while a talks: once a high-water mark of
    // messages waits for it, chatd drops it; a and b hear everything.
    let mut c = Member::join_and_greet(&w, "c", "c is here");
    a.hears("c is here");
    b.hears("c is here");
    let big = "x".repeat(64 << 10);
    let dropped = (1..=200).find(|_| {
        a.say(big.as_bytes());
        a.hears(&big);
        b.hears(&big);
        chatd.output(None).stderr.contains("does not keep up")
    });
    let Some(sent) = dropped else {
        chatd.fail("c was not dropped after 200 messages of 64 KiB");
    };
    // Past its socket buffer and the 1 MiB high-water mark, not at once.
    assert!(sent > 8, "c dropped after only {sent} messages of 64 KiB");
    // What was in c's socket, then the end.
    let mut rest = Vec::new();
    match c.s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("c: not disconnected by chatd ({e})"),
    }
    a.say(b"still here");
    a.hears("still here");
    b.hears("still here");
    let log = chatd.kill().stderr;
    assert_eq!(
        log.matches("dropping client that does not keep up").count(),
        1,
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// The page in Chromium.

/// `node tests/browser/chat.cjs <scenario>` with playwright-core, Chromium's
/// temporary profile in the test's directory. Fails, saying what to run, if
/// Chromium, Node.js or playwright-core is missing.
fn browser_script(w: &World, scenario: &str) -> Command {
    let modules = workspace().join("target/node/node_modules");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let missing: Vec<&str> = [
        (
            Path::new(CHROMIUM).is_file(),
            "chromium (/usr/bin/chromium)",
        ),
        (node, "node"),
        (
            modules.join("playwright-core/package.json").is_file(),
            "playwright-core (target/node/node_modules)",
        ),
    ]
    .into_iter()
    .filter_map(|(there, what)| (!there).then_some(what))
    .collect();
    assert!(
        missing.is_empty(),
        "missing {}: run tests/run, which installs chromium (apt) and playwright-core (npm, \
         under target/node)",
        missing.join(", ")
    );
    let mut cmd = Command::new("node");
    cmd.arg(workspace().join("tests/browser/chat.cjs"))
        .arg(scenario)
        .env("NODE_PATH", modules)
        .env("TMPDIR", w.path());
    cmd
}

/// websocketd in `w` with `args`, listening on a port of its own.
fn websocketd(w: &World, label: &str, args: &[&str]) -> Daemon {
    Daemon::start(w, "websocketd", label, args)
}

/// Waits for the browser script's `step: <what>`, does it (`act`), and tells
/// the script (`answer`). Returns what `act` returned.
fn step<T>(
    node: &mut Proc,
    stdin: &mut ChildStdin,
    what: &str,
    answer: &str,
    act: impl FnOnce() -> T,
) -> T {
    let line = format!("step: {what}\n");
    node.wait_for_stdout(&line, STEP_TIMEOUT, |out| {
        String::from_utf8_lossy(out).contains(&line)
    });
    let done = act();
    writeln!(stdin, "{answer}").unwrap_or_else(|e| node.fail(&format!("answering {what}: {e}")));
    done
}

/// The lines of `out` that start with `prefix`, without it.
fn lines_after<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

#[test]
fn two_tabs_chat_through_websocketd_and_reconnect_after_chatd_restarts() {
    let w = World::new();
    let chatd = start_chatd(&w, "chatd");
    let www = workspace().join("websocketd/www");
    let site = websocketd(&w, "websocketd", &["--static-dir", www.to_str().unwrap()]);

    let mut cmd = browser_script(&w, "chat");
    cmd.env("CHAT_URL", format!("http://{}/", site.addr));
    let mut node = spawn_with_stdin(cmd, w.path(), "chromium", Stdio::piped());
    let mut stdin = node.take_stdin().expect("piped stdin");
    step(&mut node, &mut stdin, "stop chatd", "stopped", || {
        chatd.kill()
    });
    let _chatd = step(&mut node, &mut stdin, "start chatd", "started", || {
        start_chatd(&w, "chatd-again")
    });
    let run = node.wait(BROWSER_TIMEOUT);
    run.assert_success("the chat scenario in Chromium");
    let out = &run.stdout;
    println!("{out}");

    // What each tab's message list shows, in order: B joined after A's hello.
    let tricky = r#"<b>bold?</b> & "quotes" <img src=x onerror=alert(1)> ✓"#;
    assert_eq!(
        lines_after(out, "A log: "),
        ["hello from A", "hello from B", tricky, "back again"],
        "{}",
        run.report()
    );
    assert_eq!(
        lines_after(out, "B log: "),
        ["hello from B", tricky, "back again"],
        "{}",
        run.report()
    );
    run.assert_lines(&[
        "both tabs disconnected",
        "A state: connected",
        "B state: connected",
        // User text never became markup.
        "A elements inside log lines: 0",
        "B elements inside log lines: 0",
        "done",
    ]);
    // Nothing went wrong that only the console would tell (but a retry while
    // chatd was down may have failed, as it should).
    let errors: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" page error: ") || l.contains(" console error: "))
        .filter(|l| !l.contains("console error: WebSocket connection to "))
        .collect();
    assert!(
        errors.is_empty(),
        "errors in the page: {errors:#?}\n{}",
        run.report()
    );
    // websocketd served the page, then the tabs' WebSockets.
    let log = site.log();
    for line in [
        "request=GET / status=200",
        "request=GET /chat.js status=200",
    ] {
        assert!(log.contains(line), "websocketd did not log {line:?}\n{log}");
    }
}

#[test]
fn a_page_from_another_origin_is_refused_unless_listed() {
    let w = World::new();
    let _chatd = start_chatd(&w, "chatd");
    // Another site: a page of its own, on another port, so another origin.
    let other_www = w.path().join("other-site");
    std::fs::create_dir(&other_www).unwrap();
    std::fs::write(
        other_www.join("index.html"),
        r#"<!doctype html><html lang=en><link rel=icon href="data:,"><title>another site</title><p>elsewhere</p></html>"#,
    )
    .unwrap();
    let other = websocketd(
        &w,
        "websocketd-other",
        &["--static-dir", other_www.to_str().unwrap()],
    );
    let other_origin = format!("http://{}", other.addr);
    let mut refusing = websocketd(&w, "websocketd-same-origin", &[]);
    let listed = websocketd(&w, "websocketd-listed", &["--origin", &other_origin]);

    let mut cmd = browser_script(&w, "origins");
    cmd.env("OTHER_URL", format!("{other_origin}/"))
        .env("REFUSING_WS", format!("ws://{}/chat", refusing.addr))
        .env("LISTED_WS", format!("ws://{}/chat", listed.addr));
    let run = spawn_with_stdin(cmd, w.path(), "chromium", Stdio::null()).wait(BROWSER_TIMEOUT);
    run.assert_success("the origins scenario in Chromium");
    println!("{}", run.stdout);
    run.assert_lines(&[
        &format!("page origin: {other_origin}"),
        // The browser gets no WebSocket: 1006, the handshake failed.
        "default policy: closed before opening, code 1006",
        "listed origin: open, echo: hello from elsewhere",
        "done",
    ]);
    // Chromium tells the page's console why.
    let console = format!(
        "WebSocket connection to 'ws://{}/chat' failed",
        refusing.addr
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains(&console) && l.contains("403")),
        "no console error with 403 for the refused WebSocket\n{}",
        run.report()
    );
    // And websocketd's log, who and why.
    let refused = refusing
        .proc
        .wait_for_stderr_line("HTTP request refused", READY_TIMEOUT);
    for part in [
        "request=GET /chat",
        "status=403",
        &format!("origin {other_origin:?} not allowed"),
    ] {
        assert!(refused.contains(part), "{part:?} not in {refused:?}");
    }
    refusing.assert_running("after refusing a page");
}
