//! Services and connections to them: creating a service (on one loop or
//! several), and connecting to one, directly or through `IPC_NETWORK`.

use mio::Interest;

use super::Context;
use super::conn::{Io, Role};
use crate::error::{Error, Result};
use crate::event::ConnId;
use crate::network::{self, Connected, Route};
use crate::service::{self, ServiceListener};

impl Context {
    /// Creates service `name`: `$RUNDIR/name`, mode 0660, locked against a second
    /// instance. Clients connecting to it produce [`Event::Connection`](crate::Event::Connection); their
    /// messages, [`Event::Message`](crate::Event::Message).
    ///
    /// Fails if the name is not a valid service name
    /// ([`service::validate_name`]: 1 to 64 letters, digits, `.`, `_`, `-`, not
    /// starting with `.`), or another context serves it.
    ///
    /// ```
    /// use libipc::{Context, Error};
    ///
    /// # let rundir = tempfile::tempdir()?;
    /// let mut ctx = Context::new()?;
    /// # ctx.set_rundir(rundir.path());
    /// let service = ctx.service_init("pong")?;
    /// assert!(ctx.rundir().join("pong").exists());
    ///
    /// // The name is taken while `ctx` lives, by this process or another.
    /// let mut other = Context::new()?;
    /// # other.set_rundir(rundir.path());
    /// assert!(other.service_init("pong").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn service_init(&mut self, name: &str) -> Result<ConnId> {
        let listener = ServiceListener::bind(&self.rundir, name.as_bytes())?;
        tracing::debug!(path = %listener.path().display(), "service listening");
        self.add_service(listener)
    }

    /// Serves `listener` too: a clone ([`ServiceListener::try_clone`]) of a
    /// service another context created, so that several event loops, one per
    /// thread, share its clients. Each client lives on the loop that accepted
    /// it. See [`Context::share_service`].
    pub fn add_service(&mut self, listener: ServiceListener) -> Result<ConnId> {
        let id = self.insert(
            Io::Listener(Box::new(listener)),
            Role::Listener,
            Interest::READABLE,
        )?;
        if let Err(e) = self.add_handoff_listener(id) {
            tracing::debug!(error = %e, "no handoff endpoint");
        }
        Ok(id)
    }

    /// A handle on service `id`'s listening socket for another context
    /// ([`Context::add_service`]): a service on every core.
    ///
    /// ```
    /// use libipc::{Context, Event};
    ///
    /// # let rundir = tempfile::tempdir()?;
    /// let mut ctx = Context::new()?;
    /// # ctx.set_rundir(rundir.path());
    /// let service = ctx.service_init("echo")?;
    /// let workers: Vec<_> = (0..2)
    ///     .map(|_| {
    ///         let listener = ctx.share_service(service)?;
    ///         Ok(std::thread::spawn(move || -> libipc::Result<()> {
    ///             let mut ctx = Context::new()?;
    ///             ctx.add_service(listener)?;
    ///             # ctx.set_timer(Some(std::time::Duration::from_millis(50)));
    ///             loop {
    ///                 match ctx.wait_event()? {
    ///                     Event::Message { id, payload } => ctx.schedule(id, &payload)?,
    ///                     # Event::Timer => return Ok(()),
    ///                     _ => {}
    ///                 }
    ///             }
    ///         }))
    ///     })
    ///     .collect::<libipc::Result<_>>()?;
    /// // This thread serves "echo" too (or closes its handle: `ctx.close(service)`).
    /// # for w in workers { w.join().unwrap()?; }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn share_service(&self, id: ConnId) -> Result<ServiceListener> {
        match self.conns.get(id).map(|c| &c.io) {
            Some(Io::Listener(l)) => l.try_clone(),
            Some(_) => Err(Error::WrongKind {
                id,
                what: "not a service",
            }),
            None => Err(Error::NoSuchConnection(id)),
        }
    }

    /// Connects to service `name` and adds the connection.
    ///
    /// If `IPC_NETWORK` (or [`Context::set_network`]) routes `name` elsewhere, the
    /// connection goes there: to another local service, or through a protocol
    /// daemon to a remote one (see [`crate::network`]); this blocks until the daemon
    /// answers, at most [`Config::connect_timeout`](crate::Config::connect_timeout). Otherwise it connects to
    /// `$RUNDIR/name`.
    ///
    /// ```
    /// use libipc::Context;
    ///
    /// # let rundir = tempfile::tempdir()?;
    /// let mut ctx = Context::new()?;
    /// # ctx.set_rundir(rundir.path());
    /// ctx.service_init("pong-v2")?;
    /// // Clients asking for "pong" reach "pong-v2", as IPC_NETWORK="pong unix://pong-v2"
    /// // would do for every program started with it.
    /// ctx.set_network(Some("pong unix://pong-v2".into()));
    /// let client = ctx.connect_service("pong")?;
    /// # let _ = client;
    /// // Nobody serves "ping": the error says which socket was tried.
    /// assert!(ctx.connect_service("ping").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect_service(&mut self, name: &str) -> Result<ConnId> {
        let network = match &self.network {
            Some(n) => n.clone(),
            None => std::env::var(network::IPC_NETWORK).unwrap_or_default(),
        };
        match network::route(&network, name)? {
            Route::Local(local) => {
                let stream = service::connect(&self.rundir, local.as_bytes())?;
                self.add_stream(stream.into())
            }
            Route::Daemon { daemon, uri } => {
                let stream = service::connect_outbound(&self.rundir, daemon.as_bytes())?;
                match network::ask_daemon(stream, daemon, uri, self.config.connect_timeout)? {
                    Connected::Relayed(stream) => self.add_stream(stream.into()),
                    Connected::HandedOff { socket, rest } => self.add_stream_with(socket, &rest),
                }
            }
        }
    }

    /// Uses `routes` (the `IPC_NETWORK` syntax) instead of the environment variable.
    pub fn set_network(&mut self, routes: Option<String>) {
        self.network = routes;
    }
}
