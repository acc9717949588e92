//! A per-thread cache of byte buffers.
//!
//! Payload buffers and send-queue chunks are taken from here and given back once
//! written, so a busy connection does not pay a malloc and a free (and, for large
//! buffers, the kernel's brk/page-fault round trip) per message, and an idle one
//! holds nothing: its buffers are back in the pool, warm for the next connection
//! that needs one. A context runs on one thread, so a thread-local pool is the
//! context's pool without threading it through every call.

use std::cell::RefCell;

use crate::queue::Queued;

/// Buffers up to this capacity are "small" (send-queue chunks, small payloads).
pub(crate) const SMALL: usize = 16 * 1024;
/// Small buffers kept at most.
const SMALL_KEEP: usize = 64;
/// Bytes of large buffers kept at most.
const LARGE_KEEP_BYTES: usize = 4 << 20;

#[derive(Default)]
struct Pool {
    small: Vec<Vec<u8>>,
    large: Vec<Vec<u8>>,
    large_bytes: usize,
    /// Send-queue states let go by connections that went idle.
    #[allow(clippy::vec_box)] // the boxes are what is reused, as OutQueue holds them
    queues: Vec<Box<Queued>>,
}

/// Send-queue states kept at most (each a box and two small rings).
const QUEUES_KEEP: usize = 64;
/// Ring entries (chunks and message ends) past which a state is not kept.
const QUEUE_RING_KEEP: usize = 1024;

thread_local! {
    static POOL: RefCell<Pool> = RefCell::default();
}

/// An empty buffer with room for at least `len` bytes.
pub(crate) fn take(len: usize) -> Vec<u8> {
    let found = POOL.with_borrow_mut(|p| {
        if len <= SMALL {
            return p.small.pop();
        }
        let i = p.large.iter().rposition(|b| b.capacity() >= len)?;
        let b = p.large.swap_remove(i);
        p.large_bytes -= b.capacity();
        Some(b)
    });
    match found {
        Some(mut b) => {
            b.reserve(len);
            b
        }
        None => Vec::with_capacity(len.max(if len <= SMALL { 4096 } else { 0 })),
    }
}

/// Gives a buffer back (its contents are dropped).
pub(crate) fn give(mut b: Vec<u8>) {
    let cap = b.capacity();
    if cap < 4096 {
        // Too small to be worth keeping: a fresh one costs as little.
        return;
    }
    b.clear();
    POOL.with_borrow_mut(|p| {
        if cap <= SMALL {
            if p.small.len() < SMALL_KEEP {
                p.small.push(b);
            }
        } else if p.large_bytes + cap <= LARGE_KEEP_BYTES {
            p.large_bytes += cap;
            p.large.push(b);
        }
    });
}

/// An empty send-queue state: one a connection let go of, or a new one. A
/// busy connection takes one for each burst and gives it back once its queue
/// is written, so the box and its rings are reused, not allocated per burst.
pub(crate) fn take_queue() -> Box<Queued> {
    POOL.with_borrow_mut(|p| p.queues.pop()).unwrap_or_default()
}

/// Gives a send-queue state back; one whose rings a backlog grew is dropped.
pub(crate) fn give_queue(mut q: Box<Queued>) {
    if q.ring_capacity() > QUEUE_RING_KEEP {
        return;
    }
    q.reset();
    POOL.with_borrow_mut(|p| {
        if p.queues.len() < QUEUES_KEEP {
            p.queues.push(q);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back() {
        let b = take(100_000);
        let ptr = b.as_ptr();
        give(b);
        let again = take(50_000);
        assert_eq!(again.as_ptr(), ptr, "the large buffer was reused");
        assert!(again.is_empty() && again.capacity() >= 100_000);
        give(again);
        let s = take(10);
        assert!(s.capacity() >= 10);
        give(s);
    }

    #[test]
    fn pool_is_bounded() {
        let bufs: Vec<_> = (0..10).map(|_| take(1 << 20)).collect();
        for b in bufs {
            give(b);
        }
        POOL.with_borrow(|p| assert!(p.large_bytes <= LARGE_KEEP_BYTES));
    }

    #[test]
    fn queue_states_come_back_empty_and_bounded() {
        use crate::queue::OutQueue;
        use std::os::fd::AsFd;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let written = |q: &mut OutQueue| {
            assert!(q.flush(ours.as_fd()).unwrap().drained);
            assert!(q.holds_nothing());
        };
        // A connection's burst, written: its state goes back to the pool,
        // for the next burst.
        let mut q = OutQueue::default();
        q.push_message(b"hello");
        written(&mut q);
        let state = take_queue();
        assert!(state.ring_capacity() > 0, "the used state was not reused");
        give_queue(state);
        // A backlog's big rings are not kept.
        let mut big = OutQueue::default();
        for _ in 0..5000 {
            big.push_message(&[1; 10]);
        }
        written(&mut big);
        POOL.with_borrow(|p| {
            assert!(
                p.queues
                    .iter()
                    .all(|q| q.ring_capacity() <= QUEUE_RING_KEEP)
            );
        });
        // At most QUEUES_KEEP states.
        let states: Vec<_> = (0..QUEUES_KEEP + 10).map(|_| take_queue()).collect();
        for s in states {
            give_queue(s);
        }
        POOL.with_borrow(|p| assert!(p.queues.len() <= QUEUES_KEEP));
        drop(theirs);
    }
}
