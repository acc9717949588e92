//! The code blocks of README.md that the tests build and run, so that the
//! README cannot drift from what works.
//!
//! A tested block follows a marker line, invisible once the README is
//! rendered:
//!
//! ````text
//! <!-- tested: NAME -->
//! ```rust
//! ...
//! ```
//! ````
//!
//! Also compiled into `tests/build.rs` (with `#[path]`): it uses nothing but
//! std.

/// The body of the fenced block after the marker `<!-- tested: NAME -->`.
///
/// Fails (with a message for the test's output) when there is no such
/// marker, it is given twice, or no fenced block follows it.
pub fn tested_block(readme: &str, name: &str) -> Result<String, String> {
    let marker = format!("<!-- tested: {name} -->");
    let mut found = readme.match_indices(&marker);
    let (at, _) = found
        .next()
        .ok_or_else(|| format!("README.md has no {marker}"))?;
    if found.next().is_some() {
        return Err(format!("README.md has {marker} twice"));
    }
    let mut lines = readme[at + marker.len()..].lines().skip(1);
    let fence = lines
        .next()
        .filter(|l| l.starts_with("```"))
        .ok_or_else(|| format!("no ``` block right after {marker}"))?;
    let mut body = String::new();
    for line in lines {
        if line == "```" {
            return Ok(body);
        }
        body.push_str(line);
        body.push('\n');
    }
    Err(format!("the block {fence} after {marker} never ends"))
}
