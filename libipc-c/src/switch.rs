//! `ipc_set_switch_callbacks`: a C program reads and writes one side of a
//! switched pair itself.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::RawFd;

use libipc::switch::{HookStatus, SwitchHooks};

use crate::{EGENERIC, cctx, guard};

/// A C switch callback pair.
type CbIn = unsafe extern "C" fn(c_int, *mut c_char, *mut u32) -> c_int;
type CbOut = unsafe extern "C" fn(c_int, *const c_char, u32) -> c_int;

#[derive(Debug)]
struct CHooks {
    cb_in: CbIn,
    cb_out: CbOut,
}

fn status(code: c_int) -> HookStatus {
    match code {
        0 => HookStatus::Done,
        2 => HookStatus::Closing,
        3 => HookStatus::Ignore,
        _ => HookStatus::Error,
    }
}

impl SwitchHooks for CHooks {
    fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> (HookStatus, usize) {
        let mut len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        // SAFETY: the callback was given to us as a valid function; `buf` holds
        // `len` initialised, writable bytes.
        let code = unsafe { (self.cb_in)(fd, buf.as_mut_ptr().cast(), &mut len) };
        (status(code), (len as usize).min(buf.len()))
    }

    fn write(&mut self, fd: RawFd, frame: &[u8]) -> HookStatus {
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        // SAFETY: valid callback; `frame` is readable for `len` bytes.
        status(unsafe { (self.cb_out)(fd, frame.as_ptr().cast(), len) })
    }
}

/// Sets the callbacks that read and write switched `fd`. Returns 0, or -1.
///
/// # Safety
/// `ctx` from `ipc_context_init`; `cb_in` and `cb_out` null or valid functions of
/// the declared types, callable for as long as the switch lasts.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ipc_set_switch_callbacks(
    ctx: *mut c_void,
    fd: c_int,
    cb_in: Option<CbIn>,
    cb_out: Option<CbOut>,
) -> c_int {
    guard(|| {
        // SAFETY: contract.
        let Some(c) = (unsafe { cctx(ctx) }) else {
            return EGENERIC;
        };
        let (Some(cb_in), Some(cb_out), Some(id)) = (cb_in, cb_out, c.ctx.id_of_fd(fd)) else {
            return EGENERIC;
        };
        match c
            .ctx
            .set_switch_hooks(id, Box::new(CHooks { cb_in, cb_out }))
        {
            Ok(()) => 0,
            Err(_) => EGENERIC,
        }
    })
}
