//! The sender's name for `__syslog_connection_hostname`: a reverse lookup of its address
//! (`/etc/hosts`, then DNS), as Promtail does. The standard library has no reverse lookup,
//! so this calls the C library's `getnameinfo`, on a blocking thread and with a deadline so a
//! slow DNS server never stalls a listener; names are cached per address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a lookup may take before the sender is labelled without a name.
const DEADLINE: Duration = Duration::from_secs(2);
/// Names remembered; the cache starts over when full, so a flood of senders cannot grow it.
const CACHE_SIZE: usize = 4096;

/// Reverse lookups with a cache shared by a listener's connections.
#[derive(Clone, Default)]
pub struct Resolver {
    cache: Arc<Mutex<HashMap<IpAddr, Arc<str>>>>,
}

impl Resolver {
    /// The name of `ip`, or "" when it has none (or the lookup took too long).
    pub async fn name(&self, ip: IpAddr) -> Arc<str> {
        if let Some(name) = self.lock().get(&ip) {
            return name.clone();
        }
        let lookup = tokio::task::spawn_blocking(move || reverse_lookup(ip));
        let name: Arc<str> = match tokio::time::timeout(DEADLINE, lookup).await {
            Ok(Ok(Some(name))) => name.into(),
            _ => "".into(),
        };
        let mut cache = self.lock();
        if cache.len() >= CACHE_SIZE {
            cache.clear();
        }
        cache.insert(ip, name.clone());
        name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Arc<str>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn reverse_lookup(ip: IpAddr) -> Option<String> {
    let addr = SocketAddr::new(ip, 0);
    // SAFETY: the sockaddr is built in properly sized and aligned storage of the family's
    // type, getnameinfo only reads it and writes at most `host.len()` bytes into `host`.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in);
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6);
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_scope_id = a.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        let mut host = [0 as libc::c_char; 1025];
        let rc = libc::getnameinfo(
            &storage as *const _ as *const libc::sockaddr,
            len as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        );
        if rc != 0 {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(host.as_ptr()).to_string_lossy();
        Some(name.trim_end_matches('.').to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_has_a_name_and_is_cached() {
        let resolver = Resolver::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let name = resolver.name(ip).await;
        // /etc/hosts names 127.0.0.1 on every system these run on.
        assert!(!name.is_empty());
        assert!(Arc::ptr_eq(&name, &resolver.name(ip).await));
    }
}
