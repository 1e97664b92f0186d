//! The only `unsafe` in sluice: asking the kernel to SIGKILL a child when its
//! parent dies, so that instances never outlive a supervisor that was SIGKILLed
//! (or crashed) and cannot stop them itself.
//!
//! `prctl(PR_SET_PDEATHSIG)` must run in the child, between fork and exec, and the
//! only std hook there is `CommandExt::pre_exec`, which is `unsafe` because code
//! in a forked child of a multi-threaded process may only do async-signal-safe
//! things. No crate offers a safe wrapper (checked: `nix` makes the prctl safe but
//! not the hook; `process-wrap` has process groups and sessions, no death
//! signal). The closure below calls two system calls and allocates nothing.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::unistd::{getpid, getppid};

/// Makes the child `command` spawns receive SIGKILL when the thread that spawns
/// it exits (Linux ties the death signal to the parent *thread*: spawn from a
/// thread that lives as long as the process, see `spawner`).
pub(super) fn kill_child_when_parent_dies(command: &mut Command) {
    let parent = getpid();
    // SAFETY: the closure runs in the forked child before exec. It only makes the
    // prctl(2) and getppid(2) system calls (both async-signal-safe), converts
    // errno values into `io::Error` without allocating, and touches no lock or
    // shared state.
    unsafe {
        command.pre_exec(move || {
            prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The parent may have died between fork and prctl: then no signal
            // will ever come, so give up instead of running orphaned.
            if getppid() != parent {
                return Err(io::Error::from(Errno::ESRCH));
            }
            Ok(())
        });
    }
}
