//! Backend addresses given as DNS names: `app.internal:8080` (A/AAAA records, one port) or
//! `_http._tcp.app.internal` (SRV records: targets, ports and weights), and the `[resolver]`
//! table that says where and how often they are resolved.

use std::net::SocketAddr;

use super::model::DnsTarget;

/// The DNS name `text` stands for, or `None` when it is not a valid name (then it is read as
/// a socket address and its error reported as such).
pub(super) fn dns_target(text: &str) -> Option<DnsTarget> {
    if text.parse::<SocketAddr>().is_ok() {
        return None;
    }
    if text.starts_with('_') && !text.contains(':') {
        let name = text.trim_end_matches('.');
        return host_name(name, true).then(|| DnsTarget::Srv {
            name: name.to_owned(),
        });
    }
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = host.trim_end_matches('.');
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    (!is_ip && host_name(host, false)).then(|| DnsTarget::Host {
        host: host.to_owned(),
        port,
    })
}

/// Whether `name` is a DNS host name (RFC 1123 labels; SRV names also allow the leading
/// `_service._proto` labels). A name of digits and dots only is an invalid IP, not a name.
fn host_name(name: &str, srv: bool) -> bool {
    let label = |l: &str| {
        let body = if srv {
            l.strip_prefix('_').unwrap_or(l)
        } else {
            l
        };
        !body.is_empty()
            && l.len() <= 63
            && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !body.starts_with('-')
            && !body.ends_with('-')
    };
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(label)
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_a_port_are_hosts_and_underscore_names_are_srv() {
        assert_eq!(
            dns_target("app.internal:8080"),
            Some(DnsTarget::Host {
                host: "app.internal".into(),
                port: 8080
            })
        );
        assert_eq!(
            dns_target("localhost:9001"),
            Some(DnsTarget::Host {
                host: "localhost".into(),
                port: 9001
            })
        );
        assert_eq!(
            dns_target("_http._tcp.app.internal"),
            Some(DnsTarget::Srv {
                name: "_http._tcp.app.internal".into()
            })
        );
    }

    #[test]
    fn addresses_and_malformed_names_are_not_dns_targets() {
        for text in [
            "127.0.0.1:80",
            "[::1]:80",
            "app.internal",
            "app.internal:0",
            "app.internal:99999",
            "bad name:80",
            "-bad.example:80",
            "1.2.3:80",
            "::1:80",
        ] {
            assert_eq!(dns_target(text), None, "{text}");
        }
    }
}
