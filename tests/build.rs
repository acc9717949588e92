//! Copies the README's tested Rust programs into OUT_DIR, where the binaries
//! `readme-service` and `readme-client` (src/bin/) include them: they are
//! compiled, linted and run by the tests (tests/readme.rs) exactly as the
//! README shows them.

use std::path::PathBuf;

#[path = "src/readme.rs"]
mod readme;

fn main() {
    let path = "../README.md";
    println!("cargo::rerun-if-changed={path}");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    for name in ["rust-service", "rust-client"] {
        let code = readme::tested_block(&text, name).unwrap_or_else(|e| panic!("{e}"));
        let file = out.join(format!("{name}.rs"));
        std::fs::write(&file, code).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
