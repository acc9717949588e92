//! The C API: `include/libipc.h`, compatible with the original LibIPC header.
//!
//! This is the only module allowed `unsafe`: it turns C pointers into Rust
//! references at the boundary, and nothing else. Every entry point catches panics
//! (unwinding into C is undefined) and reports them as -1.
#![allow(unsafe_code)] // the FFI boundary; each block carries a SAFETY note.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use libipc::switch::Frames;
use libipc::{Config, ConnId, Context, Error, Event, EventKind};

const EGENERIC: c_int = -1;
const EQUEUEFULL: c_int = -2;
const ECLOSED: c_int = -2;
const ETOOSMALL: c_int = -3;

/// What a C `void *ctx` points to.
struct CContext {
    ctx: Context,
    /// An event whose payload did not fit the caller's buffer, returned again next time.
    held_event: Option<Event>,
    /// A message `ipc_read` could not hand over for lack of room.
    held_read: Option<(ConnId, Vec<u8>)>,
}

/// Runs `f`, turning a panic into -1.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(EGENERIC)
}

/// # Safety
/// `ctx` must be null or a pointer returned by `ipc_context_init` and not yet freed.
unsafe fn cctx<'a>(ctx: *mut c_void) -> Option<&'a mut CContext> {
    // SAFETY: per this function's contract, a non-null `ctx` is a live, exclusively
    // used `CContext` allocated by `ipc_context_init`.
    unsafe { ctx.cast::<CContext>().as_mut() }
}

/// # Safety
/// `ptr` must be null or valid for reading `len` bytes.
unsafe fn bytes<'a>(ptr: *const c_char, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return (len == 0).then_some(&[][..]);
    }
    // SAFETY: the caller guarantees `len` readable bytes at `ptr`.
    Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// The context and the payload of a send.
///
/// # Safety
/// As for [`cctx`] and [`bytes`].
unsafe fn ctx_and_payload<'a>(
    ctx: *mut c_void,
    buf: *const c_char,
    len: u32,
) -> Option<(&'a mut CContext, &'a [u8])> {
    // SAFETY: forwarded contract.
    unsafe { Some((cctx(ctx)?, bytes(buf, len as usize)?)) }
}

/// Copies `payload` to the caller's buffer of capacity `*len`, or reports the size needed.
///
/// # Safety
/// `buf` must be valid for writing `*len` bytes; `len` must be valid.
unsafe fn copy_out(payload: &[u8], buf: *mut c_char, len: *mut usize) -> Result<(), ()> {
    // SAFETY: `len` is valid per the contract.
    let cap = unsafe { *len };
    // SAFETY: as above.
    unsafe { *len = payload.len() };
    if payload.len() > cap || (buf.is_null() && !payload.is_empty()) {
        return Err(());
    }
    if !payload.is_empty() {
        // SAFETY: `buf` has room for `cap >= payload.len()` bytes; the regions
        // cannot overlap (one is ours).
        unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), buf.cast::<u8>(), payload.len()) };
    }
    Ok(())
}

/// Allocates a context. Returns 0, or -1.
///
/// # Safety
/// `ptr` must be valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_context_init(ptr: *mut *mut c_void) -> c_int {
    guard(|| {
        if ptr.is_null() {
            return EGENERIC;
        }
        // As the original: ipc_schedule queues whatever it is given, unless
        // the program opts in to a limit (ipc_set_queue_limit).
        let Ok(ctx) = Context::with_config(Config::default().schedule_backpressure(false)) else {
            return EGENERIC;
        };
        let boxed = Box::new(CContext {
            ctx,
            held_event: None,
            held_read: None,
        });
        // SAFETY: `ptr` is valid for writes per the contract.
        unsafe { *ptr = Box::into_raw(boxed).cast() };
        0
    })
}

/// Closes everything, frees the context, sets `*ptr` to null.
///
/// # Safety
/// `ptr` must be null or point to null or to a context from `ipc_context_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_context_deinit(ptr: *mut *mut c_void) {
    guard(|| {
        if ptr.is_null() {
            return 0;
        }
        // SAFETY: `ptr` is valid per the contract.
        let raw = unsafe { *ptr };
        if !raw.is_null() {
            // SAFETY: `raw` came from `Box::into_raw` in `ipc_context_init` and is
            // freed once: the pointer is nulled right after.
            drop(unsafe { Box::from_raw(raw.cast::<CContext>()) });
            // SAFETY: as above.
            unsafe { *ptr = std::ptr::null_mut() };
        }
        0
    });
}

/// Shared body of `ipc_service_init` and `ipc_connect_service`.
///
/// # Safety
/// As for those two functions.
unsafe fn open_service(
    ctx: *mut c_void,
    fd: *mut c_int,
    name: *const c_char,
    len: u16,
    open: fn(&mut Context, &str) -> libipc::Result<ConnId>,
) -> c_int {
    guard(|| {
        // SAFETY: contract of the calling function.
        let (Some(c), Some(name)) = (unsafe { cctx(ctx) }, unsafe { bytes(name, len.into()) })
        else {
            return EGENERIC;
        };
        if fd.is_null() {
            return EGENERIC;
        }
        let Ok(name) = libipc::service::validate_name(name) else {
            return EGENERIC;
        };
        let opened = open(&mut c.ctx, name);
        // SAFETY: `fd` is non-null and valid for writes per the contract.
        unsafe { put_fd(c, opened, fd) }
    })
}

/// Writes the descriptor of connection `opened` to `out`: 0, or -1 if it
/// could not be opened.
///
/// # Safety
/// `out` non-null and valid for writes.
unsafe fn put_fd(c: &CContext, opened: libipc::Result<ConnId>, out: *mut c_int) -> c_int {
    match opened.map(|id| c.ctx.fd(id)) {
        Ok(Some(raw)) => {
            // SAFETY: the caller's contract.
            unsafe { *out = raw };
            0
        }
        _ => EGENERIC,
    }
}

/// Serves, in `ctx` too, the service `servicefd` of context `from`: one event
/// loop per thread sharing its clients. `*newfd` receives this context's
/// descriptor for it. Returns 0, or -1.
///
/// # Safety
/// `ctx` and `from` from `ipc_context_init`, distinct, and `from` not in use
/// by another thread during the call; `newfd` valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_service_share(
    ctx: *mut c_void,
    from: *mut c_void,
    servicefd: c_int,
    newfd: *mut c_int,
) -> c_int {
    guard(|| {
        if ctx == from || newfd.is_null() {
            return EGENERIC;
        }
        // SAFETY: contract: `from` is a live context nobody else uses now,
        // distinct from `ctx` (checked), so the two borrows do not alias.
        let (Some(from), Some(c)) = (unsafe { cctx(from) }, unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        let Some(service) = from.ctx.id_of_fd(servicefd) else {
            return EGENERIC;
        };
        let added = from
            .ctx
            .share_service(service)
            .and_then(|l| c.ctx.add_service(l));
        // SAFETY: `newfd` is non-null and valid for writes per the contract.
        unsafe { put_fd(c, added, newfd) }
    })
}

/// Creates service `name`. Returns 0, or -1.
///
/// # Safety
/// `ctx` from `ipc_context_init`; `fd` valid for writes; `name` valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_service_init(
    ctx: *mut c_void,
    fd: *mut c_int,
    name: *const c_char,
    len: u16,
) -> c_int {
    // SAFETY: same contract.
    unsafe { open_service(ctx, fd, name, len, Context::service_init) }
}

/// Connects to service `name`. Returns 0, or -1.
///
/// # Safety
/// `ctx` from `ipc_context_init`; `fd` valid for writes; `name` valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_connect_service(
    ctx: *mut c_void,
    fd: *mut c_int,
    name: *const c_char,
    len: u16,
) -> c_int {
    // SAFETY: same contract.
    unsafe { open_service(ctx, fd, name, len, Context::connect_service) }
}

/// Sends a message now (blocking). Returns 0, or -1.
///
/// # Safety
/// `ctx` from `ipc_context_init`; `buf` valid for `len` bytes; if `fd` is not one of
/// the context's, it must be an open descriptor.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_write(
    ctx: *mut c_void,
    fd: c_int,
    buf: *const c_char,
    len: u32,
) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some((c, payload)) = (unsafe { ctx_and_payload(ctx, buf, len) }) else {
            return EGENERIC;
        };
        if let Some(id) = c.ctx.id_of_fd(fd) {
            return if c.ctx.write(id, payload).is_ok() {
                0
            } else {
                EGENERIC
            };
        }
        if fd < 0 {
            return EGENERIC;
        }
        // SAFETY: the caller guarantees `fd` is open for the duration of the call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        match libipc::write_frame(borrowed, payload) {
            Ok(()) => 0,
            Err(_) => EGENERIC,
        }
    })
}

/// Queues a message. Returns 0, -1, or -2 (queue full).
///
/// # Safety
/// `ctx` from `ipc_context_init`; `buf` valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_schedule(
    ctx: *mut c_void,
    fd: c_int,
    buf: *const c_char,
    len: u32,
) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some((c, payload)) = (unsafe { ctx_and_payload(ctx, buf, len) }) else {
            return EGENERIC;
        };
        let Some(id) = c.ctx.id_of_fd(fd) else {
            return EGENERIC;
        };
        match c.ctx.schedule(id, payload) {
            Ok(()) => 0,
            Err(Error::Backpressure { .. }) => EQUEUEFULL,
            Err(_) => EGENERIC,
        }
    })
}

/// Shared body of `ipc_read` and `ipc_read_fd`.
///
/// # Safety
/// `buf` valid for `*len` bytes, `len` valid.
unsafe fn read_into(c: &mut CContext, id: ConnId, buf: *mut c_char, len: *mut usize) -> c_int {
    if len.is_null() {
        return EGENERIC;
    }
    let payload = match c.held_read.take() {
        Some((held, p)) if held == id => p,
        other => {
            c.held_read = other;
            match c.ctx.read(id) {
                Ok(p) => p,
                Err(Error::Closed) => return ECLOSED,
                Err(_) => return EGENERIC,
            }
        }
    };
    // SAFETY: contract.
    match unsafe { copy_out(&payload, buf, len) } {
        Ok(()) => 0,
        Err(()) => {
            c.held_read = Some((id, payload));
            ETOOSMALL
        }
    }
}

/// Reads one message from `fd` (blocking). Returns 0, -1, -2 (closed) or -3 (too small).
///
/// # Safety
/// `ctx` from `ipc_context_init`; `buf` valid for `*len` bytes; `len` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_read_fd(
    ctx: *mut c_void,
    fd: c_int,
    buf: *mut c_char,
    len: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some(c) = (unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        let Some(id) = c.ctx.id_of_fd(fd) else {
            return EGENERIC;
        };
        // SAFETY: contract.
        unsafe { read_into(c, id, buf, len) }
    })
}

/// Reads one message from connection `index` (blocking). Same returns as `ipc_read_fd`.
///
/// # Safety
/// `ctx` from `ipc_context_init`; `buf` valid for `*len` bytes; `len` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_read(
    ctx: *mut c_void,
    index: usize,
    buf: *mut c_char,
    len: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some(c) = (unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        // SAFETY: contract.
        unsafe { read_into(c, ConnId::from_u64(index as u64), buf, len) }
    })
}

/// Waits for the next event. Returns 0, -1 (poller failed) or -3 (buffer too small).
///
/// # Safety
/// `ctx` from `ipc_context_init`; `kind`, `index`, `origin`, `len` valid for writes;
/// `buf` valid for `*len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_wait_event(
    ctx: *mut c_void,
    kind: *mut c_char,
    index: *mut usize,
    origin: *mut c_int,
    buf: *mut c_char,
    len: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some(c) = (unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        if kind.is_null() || index.is_null() || origin.is_null() || len.is_null() {
            return EGENERIC;
        }
        let event = match c.held_event.take() {
            Some(e) => e,
            None => match c.ctx.wait_event() {
                Ok(e) => e,
                Err(_) => return EGENERIC,
            },
        };
        let id = event.id();
        let fd = id.and_then(|id| c.ctx.fd(id)).unwrap_or(0);
        // SAFETY: the out-pointers are non-null and valid per the contract.
        unsafe {
            *kind = event.kind() as u8 as c_char;
            *index = id.map_or(0, |i| i.as_u64() as usize);
            *origin = fd;
        }
        let payload: &[u8] = match &event {
            Event::Message { payload, .. } => payload,
            _ => &[],
        };
        // SAFETY: contract.
        match unsafe { copy_out(payload, buf, len) } {
            Ok(()) => 0,
            Err(()) => {
                debug_assert_eq!(event.kind(), EventKind::MessageRx);
                c.held_event = Some(event);
                ETOOSMALL
            }
        }
    })
}

/// Bounds what `ipc_schedule` queues per connection (0: no bound, the
/// default). Returns 0, or -1.
///
/// # Safety
/// `ctx` from `ipc_context_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_set_queue_limit(ctx: *mut c_void, bytes: u32) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some(c) = (unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        c.ctx.set_queue_limit((bytes > 0).then_some(bytes as usize));
        0
    })
}

/// Sets the timer in ms (negative: none).
///
/// # Safety
/// `ctx` from `ipc_context_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_context_timer(ctx: *mut c_void, timer: c_int) {
    guard(|| {
        // SAFETY: contract.
        if let Some(c) = unsafe { cctx(ctx) } {
            let t = u64::try_from(timer).ok().map(Duration::from_millis);
            c.ctx.set_timer(t);
        }
        0
    });
}

/// Closes connection `index`. Returns 0, or -1.
///
/// # Safety
/// `ctx` from `ipc_context_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_close(ctx: *mut c_void, index: usize) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some(c) = (unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        close_id(c, ConnId::from_u64(index as u64))
    })
}

fn close_id(c: &mut CContext, id: ConnId) -> c_int {
    if c.held_event.as_ref().and_then(Event::id) == Some(id) {
        c.held_event = None;
    }
    match c.ctx.close(id) {
        Ok(()) => 0,
        Err(_) => EGENERIC,
    }
}

/// Closes the connection using `fd`. Returns 0, or -1.
///
/// # Safety
/// `ctx` from `ipc_context_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_close_fd(ctx: *mut c_void, fd: c_int) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some(c) = (unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        match c.ctx.id_of_fd(fd) {
            Some(id) => close_id(c, id),
            None => EGENERIC,
        }
    })
}

/// Closes every connection. Returns 0, or -1 for a null context.
///
/// # Safety
/// `ctx` from `ipc_context_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_close_all(ctx: *mut c_void) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some(c) = (unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        c.held_event = None;
        c.held_read = None;
        c.ctx.close_all();
        0
    })
}

/// Watches foreign descriptor `fd` (the context takes ownership). Returns 0, or -1.
///
/// # Safety
/// `ctx` from `ipc_context_init`; `fd` an open descriptor that nothing else will close.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_add_external(ctx: *mut c_void, fd: c_int) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some(c) = (unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        // Taking ownership of a descriptor we already own, or of a closed one,
        // would end in a double close.
        if fd < 0 || c.ctx.id_of_fd(fd).is_some() || !fd_is_open(fd) {
            return EGENERIC;
        }
        // SAFETY: `fd` is open and, per the contract, handed over to us alone.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        match c.ctx.add_external(owned) {
            Ok(_) => 0,
            Err(_) => EGENERIC,
        }
    })
}

fn fd_is_open(fd: RawFd) -> bool {
    nix::fcntl::fcntl(
        // SAFETY: only used for F_GETFD, which is harmless on any number.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_ok()
}

/// Switches two of the context's connections. Returns 0, or -1.
///
/// # Safety
/// `ctx` from `ipc_context_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_add_switch(ctx: *mut c_void, fd1: c_int, fd2: c_int) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some(c) = (unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        let (Some(a), Some(b)) = (c.ctx.id_of_fd(fd1), c.ctx.id_of_fd(fd2)) else {
            return EGENERIC;
        };
        let max = c.ctx.config().max_message_size;
        match c.ctx.add_switch(a, b, Box::new(Frames::new(max))) {
            Ok(()) => 0,
            Err(_) => EGENERIC,
        }
    })
}

mod switch;
pub use switch::ipc_set_switch_callbacks;
