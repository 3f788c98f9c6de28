//! Fixed loopback ports for the processes the runner starts.
//!
//! A restarted process must get its port back, so ports are chosen once and reused. They
//! come from below the ephemeral range (32768–60999 here): a port in that range could be
//! taken as the source port of some outgoing connection while its owner is down, and
//! the restart would then fail to bind.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

use anyhow::bail;

/// Lowest port handed out: clear of well-known service ports (RabbitMQ's 25672 is
/// skipped by the bind check like any port in use).
const LOWEST: u16 = 20_000;
/// One past the highest port handed out: the ephemeral range starts at 32768.
const BELOW: u16 = 32_700;

/// `span` consecutive loopback ports that are free now and were not handed out before
/// in this process; returns the first. A RabbitMQ node needs two (AMQP and distribution).
pub fn free_port_block(span: u16) -> anyhow::Result<u16> {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Mutex::default);
    // Start somewhere different in each process so parallel runs rarely probe the same
    // ports; the bind check settles any overlap.
    let offset = (std::process::id() as u64).wrapping_mul(7_919) % u64::from(BELOW - LOWEST);
    let mut taken = handed_out.lock().unwrap_or_else(|p| p.into_inner());
    for step in 0..u64::from(BELOW - LOWEST) {
        let first = LOWEST + ((offset + step * 13) % u64::from(BELOW - LOWEST - span)) as u16;
        let block = first..first + span;
        if block.clone().any(|port| taken.contains(&port)) {
            continue;
        }
        if block
            .clone()
            .all(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
        {
            taken.extend(block);
            return Ok(first);
        }
    }
    bail!("no {span} consecutive free loopback ports between {LOWEST} and {BELOW}")
}

/// One free port (see [`free_port_block`]).
pub fn free_port() -> anyhow::Result<u16> {
    free_port_block(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let first = free_port_block(2).unwrap();
            assert!((LOWEST..BELOW).contains(&first) && first + 1 < 32_768);
            assert!(seen.insert(first) && seen.insert(first + 1), "{first}");
        }
    }
}
