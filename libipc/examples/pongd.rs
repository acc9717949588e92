//! pongd: an echo service. Every message a client sends comes back to it.
//!
//!     cargo run -p libipc --example pongd [NAME]      # default name: pong
//!
//! Listens on `$RUNDIR/NAME` (default `/tmp/.libipc-run/pong`). `RUST_LOG=debug`
//! shows every event.

use std::time::Duration;

use ipc::{Context, Event};

fn main() -> std::process::ExitCode {
    if let Err(e) = run() {
        eprintln!("pongd: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

fn run() -> Result<(), ipc::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let name = std::env::args().nth(1).unwrap_or_else(|| "pong".into());
    let mut ctx = Context::new()?;
    let listener = ctx.service_init(&name)?;
    tracing::info!(
        path = %ctx.rundir().join(&name).display(),
        %listener,
        "pongd ready"
    );
    ctx.set_timer(Some(Duration::from_secs(10)));
    loop {
        match ctx.wait_event()? {
            Event::Connection { id, .. } => tracing::info!(%id, "client connected"),
            Event::Disconnection { id, reason: None } => tracing::info!(%id, "client left"),
            Event::Disconnection {
                id,
                reason: Some(e),
            } => tracing::warn!(%id, error = %e, "client dropped"),
            Event::Message { id, payload } => {
                tracing::debug!(%id, bytes = payload.len(), "echo");
                match ctx.schedule_vec(id, payload) {
                    Ok(()) => {}
                    // The client sends faster than it reads: it gets no more echoes
                    // until its queue drains (the loop stops reading it meanwhile).
                    Err(e @ ipc::Error::Backpressure { .. }) => {
                        tracing::warn!(%id, error = %e, "dropping client that does not read");
                        ctx.close(id)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            Event::Timer => tracing::debug!(clients = ctx.len() - 1, "idle"),
            other => tracing::debug!(?other, "event"),
        }
    }
}
