//! `loadtest wake-cost`: what one cross-core wake-up costs on this machine, with no server in the way.
//!
//! A server at moderate load spends most of its CPU going to sleep and being woken (an arrival, a post
//! from another core), and what that costs is the machine's, not the server's: on bare metal a few
//! microseconds, on a virtual machine several times that (the wake is an inter-processor interrupt,
//! the sleep a halted virtual CPU, each a trip through the hypervisor). So the rooms scenario's CPU is
//! read against this figure, measured the same way on the same machine.
//!
//! Two threads, pinned to two cores, pass a token back and forth through two eventfds, each blocking
//! in `read` until the other's `write`: every pass is one wake-up of a sleeping thread on another core.
//! The CPU time both threads used (`getrusage(RUSAGE_THREAD)`), divided by the passes, is the cost of
//! one wake-up, writer's and sleeper's sides together. It must not touch the network.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What `wake-cost` measured.
#[derive(Debug, Serialize)]
pub struct WakeCost {
    /// Wake-ups measured (both directions).
    pub wakes: u64,
    /// CPU time of both threads per wake-up, microseconds.
    pub cpu_us_per_wake: f64,
    /// Wall time per wake-up, microseconds (latency from `write` to the woken thread's return).
    pub wall_us_per_wake: f64,
    /// The cores the two threads were pinned to, when the machine has two or more.
    pub cores: Option<(usize, usize)>,
}

/// Runs `round_trips` round trips (two wake-ups each) between two threads pinned to two cores.
pub fn measure(round_trips: u64) -> io::Result<WakeCost> {
    let there = eventfd()?;
    let back = eventfd()?;
    let cores = two_cores();
    let (there_fd, back_fd) = (there.as_raw_fd(), back.as_raw_fd());
    let echo = std::thread::spawn(move || -> io::Result<Duration> {
        if let Some((_, core)) = cores {
            pin(core);
        }
        for _ in 0..round_trips {
            take(there_fd)?;
            give(back_fd)?;
        }
        Ok(thread_cpu())
    });
    if let Some((core, _)) = cores {
        pin(core);
    }
    let start_cpu = thread_cpu();
    let start = Instant::now();
    for _ in 0..round_trips {
        give(there_fd)?;
        take(back_fd)?;
    }
    let wall = start.elapsed();
    let own_cpu = thread_cpu() - start_cpu;
    let echo_cpu = echo
        .join()
        .map_err(|_| io::Error::other("echo thread panicked"))??;
    let wakes = round_trips * 2;
    Ok(WakeCost {
        wakes,
        cpu_us_per_wake: (own_cpu + echo_cpu).as_secs_f64() * 1e6 / wakes as f64,
        wall_us_per_wake: wall.as_secs_f64() * 1e6 / wakes as f64,
        cores,
    })
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we now own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn give(fd: i32) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a descriptor this module owns.
    let n = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn take(fd: i32) -> io::Result<()> {
    let mut value: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64 from a descriptor this module owns.
    let n = unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) };
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The first two cores this process may run on, if there are two.
fn two_cores() -> Option<(usize, usize)> {
    // SAFETY: `set` is a plain bit set sched_getaffinity fills in; its size is passed along.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        return None;
    }
    // SAFETY: CPU_ISSET reads a bit of the set filled in above.
    let mut allowed =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    Some((allowed.next()?, allowed.next()?))
}

fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET sets one bit of it, and the calling thread
    // (0) is pinned to that set. A failure leaves the thread unpinned, which only blurs the figure.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// CPU time (user and system) the calling thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_pass_is_counted_and_costs_something() {
        let cost = super::measure(200).unwrap();
        assert_eq!(cost.wakes, 400);
        assert!(cost.cpu_us_per_wake > 0.0);
        assert!(cost.wall_us_per_wake > 0.0);
    }
}
