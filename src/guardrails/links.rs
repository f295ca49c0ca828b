//! Links and images in a draft, and whose hosts they name: the outbound stage refuses a draft
//! that links to, or shows an image from, a host the tenant did not allow (`link_hosts`, empty
//! by default). A prompt injection can make a model write anything, so rather than recognise
//! the injection, the pipeline leaves it no way out through a URL: an image the customer's
//! client fetches by itself, or a link the customer opens, carries data only to an allowed host.
//!
//! [`links`] finds every host a reader's client could reach from a text: URLs with a scheme
//! (`https://`, `https:\\`, `mailto:`…) or without (`//host`, `www.host`, `host.tld/path`), in
//! markdown (`[t](u)`, `![a](u)`, `[r]: u`, `<u>`), HTML (`<a href>`, `<img src>`, any
//! attribute) or bare text. It reads the text as a browser would: case, HTML character
//! references (`&#46;`), percent-escapes (`%2e`), markdown escapes (`\.`), invisible characters,
//! full-width and ideographic dots (`evil。com`), backslashes for slashes, user-info
//! (`https://good.com@evil.com` goes to `evil.com`), trailing dots (`evil.com.`) and IDN
//! (`bücher.example` is `xn--bcher-kva.example`). An e-mail address is not a link (the
//! customer's own address may be quoted back), unless written as a `mailto:` URL. A path
//! segment (`/docs/file.pdf`) is not a host; a URL inside a path or query (a redirect's target)
//! is checked too.
//!
//! Linear: each character is looked at a bounded number of times.

/// A host a text links to: its byte range in the text (the URL's start to its host's end) and
/// the host, lowercase ASCII (IDN in punycode, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub start: usize,
    pub end: usize,
    pub host: String,
}

/// Hosts a tenant allows links to: each entry allows itself and its subdomains (`acme.com`
/// allows `help.acme.com`; `*.acme.com` means the same).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkHosts(Vec<String>);

impl LinkHosts {
    /// Refuses an entry that is not a host name (a URL, a path, a wildcard inside a name).
    pub fn new(entries: &[String]) -> Result<LinkHosts, String> {
        let mut hosts = Vec::with_capacity(entries.len());
        for entry in entries {
            let trimmed = entry.trim();
            let name = trimmed.strip_prefix("*.").unwrap_or(trimmed);
            let host = normalize_host(&name.to_lowercase());
            let valid = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                return Err(format!(
                    "link_hosts: `{entry}` is not a host name (write `shop.example`, without \
                     scheme or path)"
                ));
            }
            hosts.push(host);
        }
        Ok(LinkHosts(hosts))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `host` (as [`Link::host`] gives it) is allowed: an entry, or under one.
    pub fn allows(&self, host: &str) -> bool {
        self.0.iter().any(|allowed| {
            host == allowed
                || (host.len() > allowed.len()
                    && host.ends_with(allowed.as_str())
                    && host.as_bytes()[host.len() - allowed.len() - 1] == b'.')
        })
    }
}

/// The links of `text` whose host `allowed` does not allow.
pub fn foreign_links(text: &str, allowed: &LinkHosts) -> Vec<Link> {
    links(text)
        .into_iter()
        .filter(|l| !allowed.allows(&l.host))
        .collect()
}

/// Every host `text` links to, in order.
pub fn links(text: &str) -> Vec<Link> {
    let norm = Normalized::new(text);
    let c = &norm.chars;
    let n = c.len();
    let mut out = Vec::new();
    let mut i = 0;
    // Inside a URL's path, query or fragment (up to this index) only a URL with a scheme
    // starts a link: a segment like `file.pdf` is not a host.
    let mut path_end = 0;
    while i < n {
        let in_path = i < path_end;
        // A scheme may follow any punctuation (`/r/https://…`, `?u=https://…`).
        let boundary = i == 0 || !c[i - 1].is_alphanumeric();
        if boundary && c[i].is_ascii_alphabetic() {
            if let Some(after) = scheme_end(c, i) {
                let mut j = after;
                while j < n && c[j] == '/' {
                    j += 1;
                }
                let slashes = j - after;
                if let Some(a) = authority(c, j) {
                    if a.host_end > a.host_start && (a.dotted || slashes >= 2 || a.bracketed) {
                        out.push(norm.link(i, a.host_start, a.host_end));
                        path_end = url_end(c, a.end.max(path_end));
                        i = a.end;
                        continue;
                    }
                }
            }
        }
        let token_start = i == 0 || is_token_start(c[i - 1]);
        if !in_path && token_start {
            // `//host`: a URL relative to the page's scheme.
            if c[i] == '/' && c.get(i + 1) == Some(&'/') {
                if let Some(a) = authority(c, i + 2) {
                    if a.host_end > a.host_start {
                        out.push(norm.link(i, a.host_start, a.host_end));
                        path_end = url_end(c, a.end);
                        i = a.end;
                        continue;
                    }
                }
                i += 2;
                continue;
            }
            if is_host_char(c[i]) {
                // A bare `name.tld`: only host characters (no `=` or `;` of markup around it).
                let mut end = i;
                while end < n && is_host_char(c[end]) {
                    end += 1;
                }
                if c.get(end) == Some(&'@') {
                    // A bare `user@host` is an e-mail address, not a link: skip both parts.
                    end += 1;
                    while end < n && is_host_char(c[end]) {
                        end += 1;
                    }
                    i = end;
                    continue;
                }
                let mut host_end = end;
                while host_end > i && c[host_end - 1] == '.' {
                    host_end -= 1;
                }
                let host: String = c[i..host_end].iter().collect();
                // An ellipsis (`wait...ok`) is not a host.
                let dotted = host.trim_start_matches('.').contains('.') && !host.contains("..");
                if dotted && (host.starts_with("www.") || has_known_tld(&host)) {
                    out.push(norm.link(i, i, host_end));
                    path_end = url_end(c, end);
                }
                i = end.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    out
}

const MAX_AUTHORITY: usize = 512;

struct Authority {
    host_start: usize,
    host_end: usize,
    /// Index after the authority (at `/`, `?`, `#` or a delimiter).
    end: usize,
    dotted: bool,
    bracketed: bool,
}

/// The authority starting at `start`: user-info, host, port. `None` when empty.
fn authority(c: &[char], start: usize) -> Option<Authority> {
    let mut end = start;
    let mut at = None;
    // Longer than any user-info and host: a cut keeps the scan linear, and what it leaves
    // names no allowed host.
    let limit = c.len().min(start + MAX_AUTHORITY);
    while end < limit && is_authority_char(c[end]) {
        if c[end] == '@' {
            at = Some(end);
        }
        end += 1;
    }
    if end == start {
        return None;
    }
    let host_start = at.map_or(start, |a| a + 1);
    let mut host_end = host_start;
    let bracketed = c.get(host_start) == Some(&'[');
    if bracketed {
        // An IPv6 literal: up to its `]`.
        while host_end < end && c[host_end] != ']' {
            host_end += 1;
        }
        host_end = (host_end + 1).min(end);
    } else {
        while host_end < end && is_host_char(c[host_end]) {
            host_end += 1;
        }
        // A trailing dot names the same host (and ends many sentences).
        while host_end > host_start && c[host_end - 1] == '.' {
            host_end -= 1;
        }
    }
    let dotted = c[host_start..host_end]
        .iter()
        .skip_while(|&&ch| ch == '.')
        .any(|&ch| ch == '.');
    Some(Authority {
        host_start,
        host_end,
        end,
        dotted,
        bracketed,
    })
}

/// Index after `scheme:` when a scheme starts at `i`.
fn scheme_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < c.len() && j - i <= 32 {
        match c[j] {
            ':' => return Some(j + 1),
            ch if ch.is_ascii_alphanumeric() || matches!(ch, '+' | '-' | '.') => j += 1,
            _ => return None,
        }
    }
    None
}

/// Where a URL whose authority ends at `from` ends: at whitespace or a character that closes
/// markdown or HTML around it.
fn url_end(c: &[char], from: usize) -> usize {
    let mut j = from;
    while j < c.len() && !(c[j].is_whitespace() || matches!(c[j], '<' | '>' | '"' | '\'' | '`')) {
        j += 1;
    }
    j
}

fn is_host_char(ch: char) -> bool {
    ch.is_alphanumeric() || matches!(ch, '-' | '_' | '.')
}

fn is_authority_char(ch: char) -> bool {
    is_host_char(ch)
        || matches!(
            ch,
            '@' | ':' | '[' | ']' | '+' | '~' | '!' | '$' | '*' | ',' | ';' | '=' | '%' | '&'
        )
}

/// Characters that continue a word or a URL: after one of them, no new link starts.
fn is_word(ch: char) -> bool {
    ch.is_alphanumeric() || matches!(ch, '-' | '_' | '.' | '+' | '%' | '@' | '/' | ':')
}

fn is_token_start(prev: char) -> bool {
    !is_word(prev)
}

/// Common generic top-level domains; every two-letter one (country codes) and every IDN one
/// (`xn--`) counts as well. A bare `name.tld` with another ending is taken for a file name or
/// an abbreviation; with a scheme, `//` or `www.` any ending counts.
const GENERIC_TLDS: &[&str] = &[
    "app", "art", "biz", "blog", "cloud", "club", "com", "dev", "email", "info", "link", "live",
    "mobi", "name", "net", "online", "org", "page", "pro", "shop", "site", "store", "tech", "top",
    "website", "xyz", "zip",
];

fn has_known_tld(host: &str) -> bool {
    let ascii = normalize_host(host);
    let tld = ascii.rsplit('.').next().unwrap_or("");
    tld.starts_with("xn--")
        || (tld.len() == 2 && tld.bytes().all(|b| b.is_ascii_lowercase()))
        || GENERIC_TLDS.contains(&tld)
}

/// Lowercase ASCII, IDN labels in punycode, no trailing dot; the text itself when it is not a
/// valid domain (it then matches no allowed host).
fn normalize_host(host: &str) -> String {
    let host = host.trim_end_matches('.');
    match idna::domain_to_ascii(host) {
        Ok(ascii) if !ascii.is_empty() => ascii.trim_end_matches('.').to_string(),
        _ => host.to_lowercase(),
    }
}

/// The text as a browser or a markdown renderer reads it, one char at a time, each with the
/// byte offset in the original where it came from.
struct Normalized {
    chars: Vec<char>,
    /// `at[i]`: where `chars[i]` starts in the original; `at[chars.len()]` is its length.
    at: Vec<usize>,
}

impl Normalized {
    fn new(text: &str) -> Normalized {
        let mut chars = Vec::with_capacity(text.len());
        let mut at = Vec::with_capacity(text.len() + 1);
        let bytes = text.as_bytes();
        let mut iter = text.char_indices().peekable();
        while let Some((i, ch)) = iter.next() {
            let (decoded, consumed) = match ch {
                '&' => match char_reference(&text[i..]) {
                    Some((d, len)) => (d, len),
                    None => ('&', 1),
                },
                '%' => match percent(bytes, i) {
                    Some(d) => (d, 3),
                    None => ('%', 1),
                },
                '\\' => match iter.peek() {
                    // A markdown escape (`evil\.com`) shows the character alone.
                    Some(&(_, next))
                        if next.is_ascii_punctuation() && next != '/' && next != '\\' =>
                    {
                        continue;
                    }
                    // Browsers read `https:\\host` as `https://host`.
                    _ => ('/', 1),
                },
                other => (other, other.len_utf8()),
            };
            // Skip what a reference or escape consumed beyond its first char.
            while let Some(&(j, _)) = iter.peek() {
                if j < i + consumed {
                    iter.next();
                } else {
                    break;
                }
            }
            let Some(mapped) = fold_char(decoded) else {
                continue;
            };
            for lower in mapped.to_lowercase() {
                chars.push(lower);
                at.push(i);
            }
        }
        at.push(text.len());
        Normalized { chars, at }
    }

    /// A link from char `start` with its host at `host_start..host_end`, in original offsets.
    fn link(&self, start: usize, host_start: usize, host_end: usize) -> Link {
        let raw: String = self.chars[host_start..host_end].iter().collect();
        let raw = raw.trim_start_matches('[').trim_end_matches(']');
        Link {
            start: self.at[start],
            end: self.at[host_end],
            host: normalize_host(raw),
        }
    }
}

/// Full-width forms and other dots and slashes as their ASCII selves; invisible characters
/// dropped (`None`).
fn fold_char(ch: char) -> Option<char> {
    Some(match ch {
        '\u{200B}'..='\u{200F}'
        | '\u{2060}'..='\u{2064}'
        | '\u{FEFF}'
        | '\u{00AD}'
        | '\u{180E}' => return None,
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(ch as u32 - 0xFEE0).unwrap_or(ch),
        '\u{3002}' | '\u{FF61}' | '\u{FE52}' | '\u{2024}' => '.',
        '\u{2044}' | '\u{2215}' => '/',
        other => other,
    })
}

/// An ASCII character written as `%XX`.
fn percent(bytes: &[u8], i: usize) -> Option<char> {
    let hex = bytes.get(i + 1..i + 3)?;
    let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    (value.is_ascii() && !value.is_ascii_control()).then_some(value as char)
}

/// An HTML character reference at the start of `s` (`&#46;`, `&#x2e;`, `&period;`…) and its
/// length in bytes.
fn char_reference(s: &str) -> Option<(char, usize)> {
    let rest = &s[1..];
    if let Some(num) = rest.strip_prefix('#') {
        let (digits, radix, skip) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 3),
            None => (num, 10, 2),
        };
        let len = digits
            .bytes()
            .take(8)
            .take_while(|b| b.is_ascii_hexdigit() && (radix == 16 || b.is_ascii_digit()))
            .count();
        if len == 0 {
            return None;
        }
        let value = u32::from_str_radix(&digits[..len], radix).ok()?;
        let semi = usize::from(digits[len..].starts_with(';'));
        return Some((char::from_u32(value)?, skip + len + semi));
    }
    const NAMED: &[(&str, char)] = &[
        ("period;", '.'),
        ("sol;", '/'),
        ("colon;", ':'),
        ("commat;", '@'),
        ("amp;", '&'),
        ("lt;", '<'),
        ("gt;", '>'),
        ("quot;", '"'),
        ("apos;", '\''),
        ("num;", '#'),
        ("quest;", '?'),
        ("equals;", '='),
        ("lpar;", '('),
        ("rpar;", ')'),
        ("bsol;", '\\'),
        ("nbsp;", ' '),
    ];
    NAMED.iter().find_map(|(name, ch)| {
        rest.get(..name.len())
            .filter(|r| r.eq_ignore_ascii_case(name))
            .map(|_| (*ch, 1 + name.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(text: &str) -> Vec<String> {
        links(text).into_iter().map(|l| l.host).collect()
    }

    #[test]
    fn a_link_covers_its_url_up_to_the_host_in_original_offsets() {
        let text = "see https://Evil.com/x?q=1 now";
        let link = &links(text)[0];
        assert_eq!(&text[link.start..link.end], "https://Evil.com");
        assert_eq!(link.host, "evil.com");
    }

    #[test]
    fn path_segments_and_email_addresses_are_not_hosts() {
        assert_eq!(
            hosts("https://shop.example/docs/file.pdf and ana.silva@gmail.com"),
            ["shop.example"]
        );
        assert_eq!(
            hosts("version 1.2.3 costs 19.99, e.g. today"),
            Vec::<String>::new()
        );
    }
}
