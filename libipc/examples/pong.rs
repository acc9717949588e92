//! pong: sends messages to a service and prints the answers.
//!
//!     cargo run -p libipc --example pong [-s NAME] [MESSAGE...]
//!
//! Each MESSAGE (default: "hello, plz bounce me") is sent as one LibIPC message;
//! the program waits for one answer per message, prints it, and exits 0 once all
//! came back (1 on error, or if nothing comes back within 5 seconds).

use std::process::ExitCode;
use std::time::Duration;

use libipc::error::Chain;
use libipc::{Context, Event};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pong: {}", Chain(&*e));
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut service = "pong".to_string();
    if args.first().is_some_and(|a| a == "-s") {
        if args.len() < 2 {
            return Err("-s needs a service name".into());
        }
        service = args.remove(1);
        args.remove(0);
    }
    if args.is_empty() {
        args.push("hello, plz bounce me".into());
    }
    let mut ctx = Context::new()?;
    let id = ctx.connect_service(&service)?;
    for msg in &args {
        ctx.schedule(id, msg.as_bytes())?;
    }
    ctx.set_timer(Some(Duration::from_secs(5)));
    let mut answered = 0;
    while answered < args.len() {
        match ctx.wait_event()? {
            Event::Message { payload, .. } => {
                println!("{}", String::from_utf8_lossy(&payload));
                answered += 1;
            }
            Event::Disconnection { reason, .. } => {
                return Err(match reason {
                    Some(e) => format!("service {service} closed the connection: {e}"),
                    None => format!("service {service} closed the connection"),
                }
                .into());
            }
            Event::Timer => return Err(format!("no answer from {service} within 5 s").into()),
            _ => {}
        }
    }
    Ok(())
}
