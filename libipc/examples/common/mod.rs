//! What the example services (pongd, chatd) share: logging, their service name
//! from the command line, and the exit status.

#![allow(dead_code)] // each example uses its part

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
    serve: fn(&mut Context) -> Result<(), libipc::Error>,
) -> ExitCode {
    run_service_on(program, default_name, 1, serve)
}

/// [`run_service`] on `workers` event loops, one thread each, sharing the
/// service's clients (`Context::share_service`).
pub fn run_service_on(
    program: &str,
    default_name: &str,
    workers: usize,
    serve: fn(&mut Context) -> Result<(), libipc::Error>,
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
    let run = || -> Result<(), libipc::Error> {
        let mut ctx = Context::new()?;
        let listener = ctx.service_init(&name)?;
        // The other loops, each on a thread of its own; this thread is one.
        let others = (1..workers.max(1))
            .map(|n| {
                let shared = ctx.share_service(listener)?;
                Ok(std::thread::spawn(move || {
                    let _worker = tracing::info_span!("worker", n).entered();
                    let mut ctx = Context::new()?;
                    ctx.add_service(shared)?;
                    serve(&mut ctx)
                }))
            })
            .collect::<Result<Vec<_>, libipc::Error>>()?;
        tracing::info!(
            path = %ctx.rundir().join(&name).display(),
            %listener,
            workers = others.len() + 1,
            "{program} ready"
        );
        let _worker = tracing::info_span!("worker", n = 0).entered();
        serve(&mut ctx)?;
        for other in others {
            other.join().expect("a worker panicked")?;
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {}", Chain(&e));
            ExitCode::FAILURE
        }
    }
}
