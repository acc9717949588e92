//! websocketd's own flags (beside the TLS ones and those every daemon
//! shares), and the settings of its transport they make.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use daemon::cli::{self, Common};

use crate::http::{self, Policy};
use crate::site::{self, Origins, PublicHost, Site};
use crate::ws::{MessageType, Settings};

/// The flags of websocketd's WebSocket and HTTP side.
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// Type of the WebSocket messages sent to clients: `mirror` answers in the
    /// type of the client's last message (text until it sent one, when the
    /// payload is UTF-8), `auto` sends text when the payload is UTF-8, `text`
    /// sends text (binary for a payload that is not UTF-8), `binary` always binary.
    #[arg(long, value_enum, default_value_t = MessageType::Mirror)]
    pub message_type: MessageType,

    /// A name clients reach this daemon by, NAME or NAME:PORT (repeatable;
    /// e.g. example.org behind a reverse proxy). Every request must name the
    /// daemon in its Host header: an IP address or localhost (at any port), or
    /// a public host (at its PORT if given, else at any); others are refused
    /// with 421, which defeats DNS rebinding (static files included).
    #[arg(
        long = "public-host",
        env = "PUBLIC_HOST",
        value_delimiter = ',',
        value_name = "NAME[:PORT]",
        value_parser = site::parse_public_host
    )]
    pub public_hosts: Vec<PublicHost>,

    /// Accept requests whatever host their Host header names (for clients that
    /// reach the daemon by names not given with --public-host). Browser pages
    /// still need an allowed origin.
    #[arg(long)]
    pub allow_any_host: bool,

    /// Browser origin allowed to connect (repeatable; `https://app.example.org`),
    /// instead of this daemon's own. By default a page may connect from: the
    /// host and port of the request (when that host is the daemon's: an IP
    /// address, localhost or a --public-host), localhost or a listen address
    /// (127.0.0.1 or ::1 for a wildcard one) at a listen port, or a public
    /// host at its port (default: the scheme's); with the listener's scheme,
    /// http for ws and https for wss (a public host may be https on a plain
    /// listener, behind a TLS terminator). Clients that send no Origin (not
    /// browsers) are not affected. Refusals get 403.
    #[arg(long, value_parser = http::parse_origin, conflicts_with = "allow_any_origin")]
    pub origin: Vec<String>,

    /// Let pages from any origin connect (cross-site WebSocket hijacking is then
    /// the services' problem). The Host check still applies.
    #[arg(long)]
    pub allow_any_origin: bool,

    /// Subprotocol to accept when a client offers it (repeatable, in preference
    /// order). Clients that offer none are accepted too.
    #[arg(long = "subprotocol", value_name = "NAME")]
    pub subprotocols: Vec<String>,

    /// Serve the files in this directory for plain GET requests (index.html for
    /// directories; no listings, nothing outside it; sent 64 KiB at a time as
    /// the client reads).
    #[arg(long)]
    pub static_dir: Option<PathBuf>,

    /// Ping a client after this long without traffic (0: never). A client that
    /// answers no ping for --idle-timeout is closed.
    #[arg(long, default_value = "30s", value_parser = cli::parse_duration)]
    pub ping_interval: Duration,

    /// Time a client has to send its HTTP request head, from its connection
    /// (with wss, counted after --tls-handshake-timeout).
    #[arg(long, default_value = "10s", value_parser = cli::parse_duration)]
    pub header_timeout: Duration,
}

impl Flags {
    /// The transport's settings: the HTTP policy for a daemon listening on
    /// `listeners` (its bound addresses), over TLS if `tls`.
    pub fn settings(
        &self,
        common: &Common,
        listeners: Vec<std::net::SocketAddr>,
        tls: bool,
    ) -> Result<Arc<Settings>> {
        let static_dir = match &self.static_dir {
            Some(d) => {
                let real = d
                    .canonicalize()
                    .with_context(|| format!("--static-dir {}", d.display()))?;
                if !real.is_dir() {
                    bail!("--static-dir {}: not a directory", d.display());
                }
                Some(real)
            }
            None => None,
        };
        let origins = if self.allow_any_origin {
            Origins::Any
        } else if self.origin.is_empty() {
            Origins::Own
        } else {
            Origins::List(self.origin.clone())
        };
        let idle = common.idle_timeout;
        let max_unanswered_pings = match self.keepalive() {
            Some(p) if !idle.is_zero() => idle.as_millis().div_ceil(p.as_millis()).max(1) as u32,
            _ => u32::MAX,
        };
        Ok(Arc::new(Settings {
            policy: Policy {
                fixed_service: common.service.clone(),
                site: Site {
                    listeners,
                    public: self.public_hosts.clone(),
                    any_host: self.allow_any_host,
                    origins,
                    tls,
                },
                subprotocols: self.subprotocols.clone(),
                static_dir,
            },
            message_type: self.message_type,
            max_message_size: common.max_message_size,
            max_unanswered_pings,
        }))
    }

    /// How often a quiet client is pinged (`None`: never).
    pub fn keepalive(&self) -> Option<Duration> {
        (!self.ping_interval.is_zero()).then_some(self.ping_interval)
    }
}
