//! Static files for plain GET requests (--static-dir): so that a page and its
//! WebSocket share one origin. No directory listings, no hidden files, nothing
//! outside the directory (symbolic links included), a content type by extension.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use libipc::network::percent_decode;

use crate::http::{error, response_head};

/// Bytes of a file read in one step, and sent before the next is read: the
/// most a client that reads slowly makes websocketd hold (besides its socket
/// buffer), whatever the file's size, and the most one step of the event
/// loop reads from disk.
pub const CHUNK: usize = 64 << 10;

/// The answer to `GET path` (or HEAD).
#[derive(Debug)]
pub struct Answer {
    /// The response head; for a refusal, the whole response.
    pub head: Vec<u8>,
    /// For a 200 to a GET: the file, to send after `head`.
    pub body: Option<Body>,
    /// Why the request was refused, if it was.
    pub refused: Option<String>,
}

/// A file being sent: opened once, then read [`CHUNK`] by [`CHUNK`] as the
/// client takes what was sent before, so that it is never held whole.
#[derive(Debug)]
pub struct Body {
    file: File,
    /// Bytes still to send (the length announced in Content-Length).
    left: u64,
    path: PathBuf,
}

impl Body {
    /// Whether everything announced has been read.
    pub fn is_done(&self) -> bool {
        self.left == 0
    }

    /// The next bytes of the file, at most [`CHUNK`]. Fails, saying why, if
    /// the file cannot be read or ends before its announced length (it shrank
    /// since it was opened): the client then gets a short body, and a close.
    pub fn next_chunk(&mut self) -> Result<Vec<u8>, String> {
        let n = self.left.min(CHUNK as u64) as usize;
        let mut chunk = vec![0; n];
        self.file
            .read_exact(&mut chunk)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        self.left -= n as u64;
        Ok(chunk)
    }
}

/// The answer to `GET path` (`head_only`: HEAD). Opens the file; reads none of it.
pub fn serve(root: &Path, path: &str, head_only: bool) -> Answer {
    let refuse = |status, message, why| Answer {
        head: error(status, message, &[]),
        body: None,
        refused: Some(why),
    };
    let real = match resolve(root, path) {
        Ok(real) => real,
        Err(why) => return refuse(404, "no such file", why),
    };
    let (file, len) = match open(&real) {
        Ok(opened) => opened,
        Err(why) => return refuse(500, "cannot read the file", why),
    };
    let head = response_head(
        200,
        &[
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-cache"),
        ],
        content_type(&real),
        len,
    );
    let body = (!head_only && len > 0).then_some(Body {
        file,
        left: len,
        path: real,
    });
    Answer {
        head,
        body,
        refused: None,
    }
}

/// The file `path` names under `root`, or why there is none to serve.
fn resolve(root: &Path, path: &str) -> Result<PathBuf, String> {
    let decoded = percent_decode(path).ok_or("bad percent-encoding in the path")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "path is not UTF-8")?;
    if decoded.contains(['\0', '\\']) {
        return Err("NUL or backslash in the path".into());
    }
    let mut file = root.to_path_buf();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment.starts_with('.') {
            return Err(format!("hidden or parent segment {segment:?}"));
        }
        file.push(segment);
    }
    if file.is_dir() {
        file.push("index.html");
    }
    // Symbolic links may not lead out of the directory.
    let real = file
        .canonicalize()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if !real.starts_with(root) {
        return Err(format!(
            "{} is outside the static directory",
            real.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("{} is not a file", real.display()));
    }
    Ok(real)
}

/// The file opened, and its length (from the descriptor: the length announced
/// is that of the file sent).
fn open(real: &Path) -> Result<(File, u64), String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", real.display());
    let file = File::open(real).map_err(cannot)?;
    let len = file.metadata().map_err(cannot)?.len();
    Ok((file, len))
}

fn content_type(file: &Path) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("sub/empty")).unwrap();
        std::fs::write(root.join("index.html"), "<p>home</p>").unwrap();
        std::fs::write(root.join("sub/app.js"), "let x = 1;").unwrap();
        std::fs::write(root.join(".secret"), "no").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.join("link.txt")).unwrap();
        let root = root.canonicalize().unwrap();
        (dir, root)
    }

    /// The whole response: the head, then the body chunk by chunk.
    fn whole(answer: Answer) -> String {
        let mut bytes = answer.head;
        if let Some(mut body) = answer.body {
            while !body.is_done() {
                let chunk = body.next_chunk().unwrap();
                assert!(!chunk.is_empty() && chunk.len() <= CHUNK);
                bytes.extend_from_slice(&chunk);
            }
        }
        String::from_utf8(bytes).unwrap()
    }

    fn get(root: &Path, path: &str) -> String {
        whole(serve(root, path, false))
    }

    #[test]
    fn serves_files_with_their_type_and_index_for_directories() {
        let (_d, root) = site();
        let home = get(&root, "/");
        assert!(home.starts_with("HTTP/1.1 200 OK\r\n"), "{home}");
        assert!(home.contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(home.ends_with("\r\n\r\n<p>home</p>"));
        let js = get(&root, "/sub/app.js");
        assert!(
            js.contains("Content-Type: text/javascript; charset=utf-8\r\n"),
            "{js}"
        );
        assert!(js.contains("Content-Length: 10\r\n"));
        let head = whole(serve(&root, "/sub/app.js", true));
        assert!(head.contains("Content-Length: 10\r\n") && head.ends_with("\r\n\r\n"));
        assert!(get(&root, "/sub/%61pp.js").starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn nothing_outside_hidden_or_listed() {
        let (_d, root) = site();
        for path in [
            "/../outside.txt",
            "/sub/../../outside.txt",
            "/%2e%2e/outside.txt",
            "/%2E%2E%2Foutside.txt",
            "/.secret",
            "/link.txt",
            "/sub/empty/",
            "/nope.html",
            "/a%00b",
            "/a%zz",
            "/..%5coutside.txt",
        ] {
            let r = get(&root, path);
            assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
            assert!(
                !r.contains("no\n") || r.contains("no such file"),
                "{path}: {r}"
            );
        }
    }

    #[test]
    fn a_big_file_comes_in_chunks_of_what_was_announced() {
        let (_d, root) = site();
        let data: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("big.bin"), &data).unwrap();
        let answer = serve(&root, "/big.bin", false);
        let head = String::from_utf8(answer.head).unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", data.len())));
        let mut body = answer.body.unwrap();
        let mut got = Vec::new();
        while !body.is_done() {
            got.push(body.next_chunk().unwrap());
        }
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(sizes, [CHUNK, CHUNK, CHUNK, 5]);
        assert_eq!(got.concat(), data);
        // HEAD: the same length, nothing opened to send.
        let head = serve(&root, "/big.bin", true);
        assert!(head.body.is_none());
        let text = String::from_utf8(head.head).unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", data.len())));
    }

    #[test]
    fn a_file_that_changes_while_sent_is_cut_at_its_announced_length() {
        let (_d, root) = site();
        let path = root.join("changing.txt");
        std::fs::write(&path, vec![b'a'; CHUNK + 10]).unwrap();
        // Grows after the answer's head: only what was announced is sent.
        let mut body = serve(&root, "/changing.txt", false).body.unwrap();
        std::fs::write(&path, vec![b'b'; 3 * CHUNK]).unwrap();
        assert_eq!(body.next_chunk().unwrap().len(), CHUNK);
        assert_eq!(body.next_chunk().unwrap().len(), 10);
        assert!(body.is_done());
        // Shrinks: the rest cannot be read, and that is said.
        let mut body = serve(&root, "/changing.txt", false).body.unwrap();
        std::fs::write(&path, b"short").unwrap();
        let why = body.next_chunk().unwrap_err();
        assert!(why.contains("changing.txt"), "{why}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        /// Every file inside holds "IN:" and its name; every file outside "OUT".
        fn tree() -> (tempfile::TempDir, PathBuf) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("www");
            let out = dir.path().join("out");
            std::fs::create_dir_all(root.join("sub")).unwrap();
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(root.join("index.html"), "IN:index").unwrap();
            std::fs::write(root.join("sub/index.html"), "IN:sub").unwrap();
            std::fs::write(root.join("sub/app.js"), "IN:app").unwrap();
            std::fs::write(root.join(".hidden"), "IN:hidden").unwrap();
            std::fs::write(dir.path().join("outside.txt"), "OUT").unwrap();
            std::fs::write(out.join("index.html"), "OUT").unwrap();
            std::fs::write(out.join("app.js"), "OUT").unwrap();
            // Links out (a file, a directory) and one that stays inside.
            std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.join("out.txt"))
                .unwrap();
            std::os::unix::fs::symlink(&out, root.join("outdir")).unwrap();
            std::os::unix::fs::symlink(root.join("sub/app.js"), root.join("in.js")).unwrap();
            let root = root.canonicalize().unwrap();
            (dir, root)
        }

        /// Paths made of traversal segments, encodings and the tree's own names.
        fn path() -> impl Strategy<Value = String> {
            let segment = prop::sample::select(vec![
                "",
                ".",
                "..",
                "%2e",
                "%2e%2e",
                "%2E%2e",
                ".%2e",
                "%2f",
                "%2F",
                "%5c",
                "%00",
                "..%2f..",
                "%2e%2e%2f%2e%2e",
                "sub",
                "index.html",
                "app.js",
                "out.txt",
                "outdir",
                "in.js",
                "outside.txt",
                "www",
                "out",
                ".hidden",
                "%",
                "%zz",
                "%+2",
                "%2",
                "a b",
                "\u{e9}",
            ]);
            prop::collection::vec(segment, 0..7).prop_map(|s| format!("/{}", s.join("/")))
        }

        /// A 200 only ever carries a file inside the root, whatever the path.
        #[test]
        fn never_serves_outside_the_root() {
            let (_d, root) = tree();
            let mut runner = TestRunner::new(Config {
                cases: 2048,
                max_shrink_iters: 2048,
                ..Config::default()
            });
            runner
                .run(&path(), |p| {
                    let answer = serve(&root, &p, false);
                    let refused = answer.refused.clone();
                    let text = whole(answer);
                    if text.starts_with("HTTP/1.1 200 ") {
                        prop_assert!(refused.is_none());
                        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
                        prop_assert!(body.starts_with("IN:"), "{:?} served {:?}", p, body);
                        prop_assert!(body != "IN:hidden", "{:?} served a hidden file", p);
                    } else {
                        prop_assert!(refused.is_some() && !text.contains("OUT"), "{:?}", p);
                    }
                    Ok(())
                })
                .unwrap();
            // The tree is as the property assumes: its files can be served.
            for (p, body) in [("/", "IN:index"), ("/sub/", "IN:sub"), ("/in.js", "IN:app")] {
                assert!(get(&root, p).ends_with(body), "{p}");
            }
        }
    }
}
