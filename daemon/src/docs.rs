//! Man pages and shell completions, generated from a daemon's clap definition,
//! so that they list exactly the flags the binary takes. `make install` runs
//! `DAEMON --generate-docs DIR` for each daemon (see [`crate::cli::parse`]).
//!
//! That is no clap flag: clap_complete completes hidden flags too, and one made
//! for packaging has no place in a user's completions, `--help` or man page.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap_complete::Shell;

/// The only arguments that ask for the documentation: `--generate-docs DIR` or
/// `--generate-docs=DIR`, alone.
const FLAG: &str = "--generate-docs";

/// If the arguments (after the program's name) ask for the documentation,
/// writes it for `A` and exits: 0 when written, 1 (saying why) when not.
pub fn generate_if_asked<A: clap::CommandFactory>() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(dir) = asked(&args) else {
        return;
    };
    let cmd = A::command();
    let name = cmd.get_name().to_owned();
    match generate(cmd, &name, &dir) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{name}: {FLAG} {}: {e:#}", dir.display());
            std::process::exit(1);
        }
    }
}

/// The directory `args` ask the documentation to be written to, if they do.
fn asked(args: &[OsString]) -> Option<PathBuf> {
    match args {
        [flag, dir] if flag == FLAG => Some(dir.into()),
        [arg] => {
            let dir = arg.to_str()?.strip_prefix(FLAG)?.strip_prefix('=')?;
            (!dir.is_empty()).then(|| dir.into())
        }
        _ => None,
    }
}

/// Writes `DIR/man/NAME.1` and `DIR/completions/{NAME.bash,_NAME,NAME.fish}`
/// for `cmd`, the command of the binary `name`.
pub fn generate(mut cmd: clap::Command, name: &str, dir: &Path) -> Result<()> {
    cmd = cmd.bin_name(name).display_name(name);
    let man = dir.join("man");
    fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    let page = man.join(format!("{name}.1"));
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut roff)
        .context("rendering the man page")?;
    fs::write(&page, roff).with_context(|| format!("writing {}", page.display()))?;

    let completions = dir.join("completions");
    fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, name, &completions)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_the_flag_alone_asks_for_docs() {
        assert_eq!(asked(&args(&["--generate-docs", "d"])), Some("d".into()));
        assert_eq!(asked(&args(&["--generate-docs=d/x"])), Some("d/x".into()));
        for no in [
            &[][..],
            &["--generate-docs"],
            &["--generate-docs="],
            &["--generate-docsx"],
            &["--listen", "d"],
            &["--generate-docs", "d", "--listen"],
            &["--service", "--generate-docs"],
        ] {
            assert_eq!(asked(&args(no)), None, "{no:?}");
        }
    }
}
