//! What the example services (pongd, chatd) share: logging, their service name
//! from the command line, and the exit status.

use std::process::ExitCode;

use libipc::Context;
use libipc::error::Chain;

/// Runs service `program`: logs to stderr (`RUST_LOG`, default `info`), creates
/// `$RUNDIR/NAME` (NAME: the first argument, else `default_name`), says it is
/// ready, then hands the context to `serve`. An error ends the program with
/// status 1.
pub fn run_service(
    program: &str,
    default_name: &str,
    serve: impl FnOnce(&mut Context) -> Result<(), libipc::Error>,
) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default_name.into());
    let run = || {
        let mut ctx = Context::new()?;
        let listener = ctx.service_init(&name)?;
        tracing::info!(
            path = %ctx.rundir().join(&name).display(),
            %listener,
            "{program} ready"
        );
        serve(&mut ctx)
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {}", Chain(&e));
            ExitCode::FAILURE
        }
    }
}
