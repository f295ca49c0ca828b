//! Where tenant-defined actions may send requests. A tenant names the URL of its action
//! endpoint; without a check, that URL could point the platform at its own network (the cloud
//! metadata service, the database, an admin port). Action requests therefore go only to public
//! addresses: IP literals are checked when an action is saved and again when it is called, host
//! names are checked after resolution (by the HTTP client's resolver, so a name that resolves
//! to a private address at call time is refused too), and redirects are not followed.
//! `ACTIONS_ALLOW_PRIVATE=true` lifts this for deployments whose action endpoints live on a
//! private network (and for tests, whose fake endpoints listen on loopback).
//!
//! A tenant's model provider is a URL the tenant names too, and the platform posts the (masked)
//! conversation to it and shows what it answers (errors included) in the execution record, so
//! the same policy applies to it ([`Target::Provider`]): public addresses only, unless the
//! operator opts in with the same setting. A local Ollama or vLLM at `127.0.0.1` is a real
//! deployment, and it is the operator's own network that such an opt-in opens, the same
//! decision as for actions: one switch for "tenants may point the platform at private
//! addresses".

/// A tenant-named URL as the API document states it (`$http_url`): http(s), a host name of
/// lowercase labels whose last one is all letters (a name a URL parser never reads as an IPv4
/// address, so [`check_target`] has no literal to refuse), an optional port and plain path. The
/// server takes more (IP literals on public addresses, upper case, queries); whatever this
/// pattern allows, it takes.
pub const HTTP_URL: &str =
    "^https?://([a-z0-9]+(-[a-z0-9]+)*\\.)+[a-z]{2,24}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]*)*$";

/// [`HTTP_URL`] for targets reached over https only (an identity provider's issuer).
pub const HTTPS_URL: &str =
    "^https://([a-z0-9]+(-[a-z0-9]+)*\\.)+[a-z]{2,24}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]*)*$";

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether an address is reachable on the public internet (not loopback, private, link-local,
/// shared, reserved, documentation, multicast or unspecified). An IPv6 address that carries an
/// IPv4 address for a translator or tunnel (mapped, NAT64, SIIT, 6to4, Teredo, ISATAP) reaches
/// that IPv4 address in the end, so it is public only when the IPv4 address inside is: a
/// `[64:ff9b::7f00:1]` is the loopback address by another name.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => is_public_v6(a) && embedded_v4(a).is_none_or(is_public_v4),
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    !(a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_broadcast()
        || a.is_documentation()
        || a.is_unspecified()
        || a.is_multicast()
        || o0 == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (o0 == 100 && (o1 & 0xc0) == 64)
        // IETF protocol assignments, 192.0.0.0/24.
        || (o0 == 192 && o1 == 0 && o2 == 0)
        // Benchmarking, 198.18.0.0/15.
        || (o0 == 198 && (o1 & 0xfe) == 18)
        // Reserved, 240.0.0.0/4.
        || o0 >= 240)
}

/// The IPv6 address's own range, leaving aside any IPv4 address it carries.
fn is_public_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        // Unique local, fc00::/7.
        || (s[0] & 0xfe00) == 0xfc00
        // Link-local, fe80::/10.
        || (s[0] & 0xffc0) == 0xfe80
        // Site-local, fec0::/10: deprecated, but still routed inside some networks.
        || (s[0] & 0xffc0) == 0xfec0
        // Documentation, 2001:db8::/32 and 3fff::/20.
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] & 0xfff0) == 0x3ff0
        // Benchmarking, 2001:2::/48; ORCHID, 2001:10::/28 and 2001:20::/28.
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0)
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010)
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0020)
        // Discard-only, 100::/64.
        || (s[0] == 0x0100 && s[1..4].iter().all(|x| *x == 0))
        // Local-use NAT64, 64:ff9b:1::/48: a translator of the operator's own network.
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001)
        // IPv4-compatible and other ::/96 forms.
        || (s[0..6].iter().all(|x| *x == 0)))
}

/// The IPv4 address an IPv6 address carries, for the forms that lead to it: IPv4-mapped
/// (`::ffff:a.b.c.d`), SIIT's IPv4-translated (`::ffff:0:a.b.c.d`), NAT64's well-known prefix
/// (`64:ff9b::a.b.c.d`), 6to4 (`2002:aabb:ccdd::`), Teredo (`2001:0::`, the client's address
/// inverted in the last 32 bits; its server's address too) and ISATAP interface ids
/// (`…:0:5efe:a.b.c.d`, `…:200:5efe:a.b.c.d`). For Teredo, whichever of the two is not public
/// is returned, so both must be.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    let last = v4(s[6], s[7]);
    if s[0..5].iter().all(|x| *x == 0) && s[5] == 0xffff {
        return Some(last);
    }
    if s[0..4].iter().all(|x| *x == 0) && s[4] == 0xffff && s[5] == 0 {
        return Some(last);
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
        return Some(last);
    }
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        let server = v4(s[2], s[3]);
        let client = v4(!s[6], !s[7]);
        return Some(if is_public_v4(server) { client } else { server });
    }
    if (s[4] & 0xfdff) == 0 && s[5] == 0x5efe {
        return Some(last);
    }
    None
}

/// What a tenant-named URL is for, to say so when it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Action,
    Provider,
    /// A tenant's OpenID Connect provider: its issuer and the endpoints its discovery document
    /// names (the platform fetches them and posts the client secret to one of them).
    IdentityProvider,
}

impl Target {
    fn refusal(self) -> &'static str {
        match self {
            Target::Action => "actions may only call endpoints on the internet",
            Target::Provider => {
                "the model provider must be on the internet (an operator running one on a private \
                 network allows it with ACTIONS_ALLOW_PRIVATE=true)"
            }
            Target::IdentityProvider => {
                "the identity provider must be on the internet (an operator running one on a \
                 private network allows it with ACTIONS_ALLOW_PRIVATE=true)"
            }
        }
    }

    fn credentials(self) -> &'static str {
        match self {
            Target::Action => "the URL must not carry credentials: use the action's secret",
            Target::Provider => "the URL must not carry credentials: use the API key",
            Target::IdentityProvider => "the URL must not carry credentials: use the client secret",
        }
    }
}

crate::error::message_error! {
    /// Why a tenant-named URL may not be called: the message says what to fix.
    pub struct UrlRefused;
}

/// Checks an action URL before it is saved or called: http(s), a host, and, when the host is an
/// IP address, a public one (unless private targets are allowed).
pub fn check_url(raw: &str, allow_private: bool) -> Result<(), UrlRefused> {
    check_target(raw, allow_private, Target::Action)
}

/// [`check_url`] for any tenant-named target (an action endpoint, a model provider).
pub fn check_target(raw: &str, allow_private: bool, target: Target) -> Result<(), UrlRefused> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the URL must be http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(target.credentials().into());
    }
    let host = url.host_str().ok_or("the URL has no host")?;
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    match ip {
        Some(ip) if !allow_private && !is_public(ip) => {
            Err(format!("{ip} is not a public address: {}", target.refusal()).into())
        }
        _ => Ok(()),
    }
}

/// Resolves `host` and keeps only its public addresses; none is an error naming the target.
async fn public_addresses(
    host: String,
    target: Target,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
    if public.is_empty() {
        return Err(format!("{host} resolves to no public address: {}", target.refusal()).into());
    }
    Ok(public)
}

/// A resolver that drops every non-public address, so a host name cannot lead a request into
/// the platform's own network.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly(pub Target);

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let target = self.0;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let public = public_addresses(host, target).await?;
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The same resolver for the provider's HTTP client (reqwest 0.13, under async-openai).
impl reqwest013::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest013::dns::Name) -> reqwest013::dns::Resolving {
        let target = self.0;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let public = public_addresses(host, target).await?;
            Ok(Box::new(public.into_iter()) as reqwest013::dns::Addrs)
        })
    }
}

/// The HTTP client for tenants' action endpoints.
pub fn client(allow_private: bool) -> reqwest::Result<reqwest::Client> {
    client_for(allow_private, Target::Action)
}

/// The HTTP client for a kind of tenant-named target: no redirects, a short timeout, and host
/// names resolved to public addresses only (unless private targets are allowed).
pub fn client_for(allow_private: bool, target: Target) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    let builder = if allow_private {
        builder
    } else {
        builder.dns_resolver(Arc::new(PublicOnly(target)))
    };
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_that_carry_a_private_ipv4_address_are_not_public() {
        for ip in [
            // NAT64 (well-known prefix) to loopback, private and metadata addresses.
            "64:ff9b::7f00:1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::169.254.169.254",
            // Local-use NAT64 leads into the operator's network whatever it carries.
            "64:ff9b:1::5db8:d822",
            // SIIT's IPv4-translated form.
            "::ffff:0:7f00:1",
            "::ffff:0:192.168.0.1",
            // 6to4 of loopback and of a private network.
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2002:c0a8:101::",
            // Teredo whose client (inverted) is loopback, and whose server is private.
            "2001:0:5db8:d822:0:0:80ff:fffe",
            "2001:0:a00:1::1",
            // ISATAP interface ids over private addresses.
            "2606:4700::5efe:10.0.0.1",
            "2606:4700::200:5efe:127.0.0.1",
            // Site-local, discard-only, benchmarking, documentation.
            "fec0::1",
            "feff::1",
            "100::1",
            "2001:2::1",
            "3fff::1",
            // IPv4-compatible.
            "::7f00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            // The same forms carrying a public address lead to the internet.
            "64:ff9b::5db8:d822",
            "::ffff:0:5db8:d822",
            "2002:5db8:d822::1",
            "2001:0:5db8:d822:0:0:a247:29dd",
            "2606:4700::5efe:93.184.216.34",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn action_urls_must_be_http_to_a_public_or_named_host() {
        assert!(check_url("https://shop.example/refund", false).is_ok());
        assert!(check_url("http://93.184.216.34/x", false).is_ok());
        for bad in [
            "http://127.0.0.1:8080/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://[::ffff:10.0.0.1]/x",
            "http://[64:ff9b::7f00:1]/x",
            "http://[::ffff:0:7f00:1]/x",
            "http://[2002:7f00:1::]/x",
            "http://[fec0::1]/x",
            "ftp://shop.example/x",
            "https://user:pw@shop.example/x",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:8080/x", true).is_ok());
    }

    #[test]
    fn a_private_provider_is_refused_with_a_message_naming_the_opt_in() {
        let refused = check_target("http://127.0.0.1:11434/v1", false, Target::Provider)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("ACTIONS_ALLOW_PRIVATE"), "{refused}");
        assert!(check_target("http://127.0.0.1:11434/v1", true, Target::Provider).is_ok());
        assert!(check_target("https://api.openai.com/v1", false, Target::Provider).is_ok());
        assert!(
            check_target("https://k:sk-1@api.openai.com/v1", true, Target::Provider)
                .unwrap_err()
                .to_string()
                .contains("API key")
        );
    }
}
