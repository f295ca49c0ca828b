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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether an address is reachable on the public internet (not loopback, private, link-local,
/// shared, reserved, documentation, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(a),
        },
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

fn is_public_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        // Unique local, fc00::/7.
        || (s[0] & 0xfe00) == 0xfc00
        // Link-local, fe80::/10.
        || (s[0] & 0xffc0) == 0xfe80
        // Documentation, 2001:db8::/32.
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // IPv4-compatible and other ::/96 forms.
        || (s[0..6].iter().all(|x| *x == 0)))
}

/// What a tenant-named URL is for, to say so when it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Action,
    Provider,
}

impl Target {
    fn refusal(self) -> &'static str {
        match self {
            Target::Action => "actions may only call endpoints on the internet",
            Target::Provider => {
                "the model provider must be on the internet (an operator running one on a private \
                 network allows it with ACTIONS_ALLOW_PRIVATE=true)"
            }
        }
    }

    fn credentials(self) -> &'static str {
        match self {
            Target::Action => "the URL must not carry credentials: use the action's secret",
            Target::Provider => "the URL must not carry credentials: use the API key",
        }
    }
}

/// Checks an action URL before it is saved or called: http(s), a host, and, when the host is an
/// IP address, a public one (unless private targets are allowed).
pub fn check_url(raw: &str, allow_private: bool) -> Result<(), String> {
    check_target(raw, allow_private, Target::Action)
}

/// [`check_url`] for any tenant-named target (an action endpoint, a model provider).
pub fn check_target(raw: &str, allow_private: bool, target: Target) -> Result<(), String> {
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
        Some(ip) if !allow_private && !is_public(ip) => Err(format!(
            "{ip} is not a public address: {}",
            target.refusal()
        )),
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
    let builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    let builder = if allow_private {
        builder
    } else {
        builder.dns_resolver(Arc::new(PublicOnly(Target::Action)))
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
    fn action_urls_must_be_http_to_a_public_or_named_host() {
        assert!(check_url("https://shop.example/refund", false).is_ok());
        assert!(check_url("http://93.184.216.34/x", false).is_ok());
        for bad in [
            "http://127.0.0.1:8080/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://[::ffff:10.0.0.1]/x",
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
        let refused =
            check_target("http://127.0.0.1:11434/v1", false, Target::Provider).unwrap_err();
        assert!(refused.contains("ACTIONS_ALLOW_PRIVATE"), "{refused}");
        assert!(check_target("http://127.0.0.1:11434/v1", true, Target::Provider).is_ok());
        assert!(check_target("https://api.openai.com/v1", false, Target::Provider).is_ok());
        assert!(
            check_target("https://k:sk-1@api.openai.com/v1", true, Target::Provider)
                .unwrap_err()
                .contains("API key")
        );
    }
}
