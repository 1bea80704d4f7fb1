//! Resident memory and CPU time of a process, from `/proc`.
//!
//! Owns reading `/proc/PID/stat` (utime + stime of all threads), `/proc/PID/status` (VmRSS) and each
//! thread's `/proc/PID/task/TID/status` (how often it went to sleep). Used for the server
//! (`--server-pid`) and for the harness itself, so the two CPU figures are measured the same way. It does
//! not decide what to do with the numbers (see `report`).

use std::fs;
use std::io;

/// One reading of a process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time of every thread, in seconds.
    pub cpu_seconds: f64,
    /// How many times its threads went to sleep (voluntary context switches of every live thread):
    /// each is a wake-up later, the main cost of a server at moderate load. `None` if unreadable.
    pub sleeps: Option<u64>,
}

impl Sample {
    /// Two processes' readings together (the nodes of a cluster).
    pub fn plus(&self, other: &Sample) -> Sample {
        Sample {
            rss_bytes: self.rss_bytes + other.rss_bytes,
            cpu_seconds: self.cpu_seconds + other.cpu_seconds,
            sleeps: self.sleeps.zip(other.sleeps).map(|(a, b)| a + b),
        }
    }
}

/// Reads `pid`, or the harness itself for `None`.
pub fn sample(pid: Option<u32>) -> io::Result<Sample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let stat = fs::read_to_string(format!("{dir}/stat"))?;
    let status = fs::read_to_string(format!("{dir}/status"))?;
    Ok(Sample {
        rss_bytes: rss_bytes(&status).ok_or_else(|| malformed("VmRSS"))?,
        cpu_seconds: cpu_seconds(&stat).ok_or_else(|| malformed("stat"))?,
        sleeps: sleeps(&dir),
    })
}

/// The voluntary context switches of every thread of the process in `dir`. A thread that ends between
/// two readings takes its count with it, so a difference is exact only while the threads live (a
/// server's shards do).
fn sleeps(dir: &str) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("{dir}/task")).ok()? {
        let Ok(status) = fs::read_to_string(task.ok()?.path().join("status")) else {
            continue; // The thread ended after the listing.
        };
        total += voluntary_switches(&status)?;
    }
    Some(total)
}

fn voluntary_switches(status: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unreadable {what} in /proc"),
    )
}

/// utime + stime, converted from clock ticks. The command name may contain spaces and parentheses, so
/// fields are counted from the last `)`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // Fields after the name start at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / ticks)
}

fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample(None).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_seconds >= 0.0);
        assert!(s.sleeps.is_some());
    }

    #[test]
    fn a_thread_that_sleeps_is_counted() {
        // This thread's own count: other test threads may end meanwhile and take theirs with them.
        let own = || voluntary_switches(&fs::read_to_string("/proc/thread-self/status").unwrap());
        let before = own().unwrap();
        // Going to sleep is what is counted (not a wait for something): this thread blocks once.
        std::thread::sleep(std::time::Duration::from_millis(1));
        let after = own().unwrap();
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn names_with_parentheses_do_not_shift_fields() {
        let stat = "42 (a) b) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_seconds(stat), Some(300.0 / ticks));
        assert_eq!(
            rss_bytes("Name:\tx\nVmRSS:\t  1234 kB\n"),
            Some(1234 * 1024)
        );
        assert_eq!(
            voluntary_switches(
                "Name:\tx\nvoluntary_ctxt_switches:\t17\nnonvoluntary_ctxt_switches:\t3\n"
            ),
            Some(17)
        );
    }
}
