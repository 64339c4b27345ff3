//! Free TCP ports on loopback.

use std::net::{Ipv4Addr, TcpListener};

use crate::error::{IoContext, Result};

/// Returns `N` distinct ports that were free on 127.0.0.1 a moment ago.
///
/// All listeners are held until every port is chosen so the kernel cannot hand out the
/// same port twice; another process may still grab one before we use it, which callers
/// handle by retrying with new ports.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ctx(|| "binding 127.0.0.1:0")?;
        *port = listener.local_addr().ctx(|| "reading a bound port")?.port();
        listeners.push(listener);
    }
    Ok(ports)
}
