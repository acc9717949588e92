//! A relay's process tree, and its CPU time and memory, from /proc.
//!
//! nginx runs a master and workers, socat forks a process per connection: what a
//! relay costs is the sum over the process it was started as and all its
//! descendants.

use std::collections::HashMap;
use std::time::Duration;

use crate::server::process_cpu;

/// `root` and all its descendants (found by scanning /proc for parent pids).
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(ppid) = parent(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        if let Some(c) = children.get(&all[i]) {
            all.extend_from_slice(c);
        }
        i += 1;
    }
    all
}

/// Restricts every thread of every process in the tree under `root` to
/// `cpu`; processes it forks later inherit that.
pub fn pin_tree(root: u32, cpu: usize) -> anyhow::Result<()> {
    for pid in tree(root) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue; // gone meanwhile
        };
        for task in tasks.flatten() {
            if let Some(tid) = task.file_name().to_str().and_then(|s| s.parse().ok()) {
                crate::pin_task(tid, cpu)?;
            }
        }
    }
    Ok(())
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces): state, then the parent pid.
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system, all threads) of the whole tree under `root`; `None`
/// if `root` itself is gone.
pub fn tree_cpu(root: u32) -> Option<Duration> {
    let mut total = process_cpu(root)?;
    for pid in tree(root).into_iter().skip(1) {
        // A descendant may exit between the scan and the read: it then counts 0.
        total += process_cpu(pid).unwrap_or_default();
    }
    Some(total)
}

/// Resident memory of a process tree, summed over its processes, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// VmRSS: counts pages shared between the processes (socat's forks) once each.
    pub rss: u64,
    /// Pss: shared pages divided among the processes sharing them.
    pub pss: u64,
    pub processes: usize,
}

pub fn tree_memory(root: u32) -> Memory {
    let mut m = Memory::default();
    for pid in tree(root) {
        let rss = status_kib(pid, "VmRSS:");
        let pss = kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
        if let (Some(rss), Some(pss)) = (rss, pss) {
            m.rss += rss * 1024;
            m.pss += pss * 1024;
            m.processes += 1;
        }
    }
    m
}

/// A `Name:   1234 kB` field of /proc/`pid`/status (`VmRSS:`, `VmHWM:`), KiB.
pub fn status_kib(pid: u32, name: &str) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), name)
}

/// The number of descriptors process `pid` has open.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(path: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_tree_and_memory() {
        let me = std::process::id();
        assert_eq!(tree(me)[0], me);
        assert!(tree_cpu(me).is_some());
        let m = tree_memory(me);
        assert!(m.processes >= 1 && m.rss > 0 && m.pss > 0, "{m:?}");
        assert!(status_kib(me, "VmHWM:").is_some_and(|k| k > 0));
        assert!(fd_count(me).is_some_and(|n| n >= 3));
    }
}
