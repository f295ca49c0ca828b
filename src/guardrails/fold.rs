//! Case and accent folding with a map back to the original byte offsets.
//!
//! Rules and CRM names are matched on folded text so that "AÇÃO", "ação" and
//! "acao" are the same word, and so that padding tricks (double spaces, line
//! breaks, zero-width characters) cannot split a phrase. Every folded byte
//! remembers the original byte it came from, so a match is always reported
//! against the text the caller gave us.

/// A folded copy of a text plus the way back to the original offsets.
#[derive(Debug, Clone)]
pub struct Folded<'a> {
    original: &'a str,
    text: String,
    /// `map[i]` is the byte offset in `original` of the character that produced
    /// folded byte `i`. `None` means the identity map (ASCII fast path).
    map: Option<Vec<u32>>,
}

impl<'a> Folded<'a> {
    /// Folds `original`: lowercase, diacritics removed, `ß`→`ss`, every run of
    /// whitespace collapsed to one space, invisible characters dropped.
    pub fn new(original: &'a str) -> Self {
        if is_plain_ascii(original.as_bytes()) {
            return Folded {
                original,
                text: original.to_ascii_lowercase(),
                map: None,
            };
        }
        let mut text: Vec<u8> = Vec::with_capacity(original.len() + 8);
        let mut map: Vec<u32> = Vec::with_capacity(original.len() + 8);
        let mut last_was_space = false;
        let bytes = original.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            // Offsets are u32 to halve the map; texts past 4 GiB are not ours to fold.
            let at = u32::try_from(i).unwrap_or(u32::MAX);
            let b = bytes[i];
            // ASCII is most of every message, accented or not: no decoding.
            if b < 0x80 {
                i += 1;
                if b.is_ascii_whitespace() || b == 0x0b {
                    if !last_was_space {
                        text.push(b' ');
                        map.push(at);
                    }
                    last_was_space = true;
                } else {
                    last_was_space = false;
                    text.push(b.to_ascii_lowercase());
                    map.push(at);
                }
                continue;
            }
            let c = original[i..]
                .chars()
                .next()
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            i += c.len_utf8();
            if c.is_whitespace() {
                if !last_was_space {
                    text.push(b' ');
                    map.push(at);
                }
                last_was_space = true;
                continue;
            }
            last_was_space = false;
            let before = text.len();
            match fold_one(c) {
                FoldedChar::Str(s) => text.extend_from_slice(s.as_bytes()),
                FoldedChar::Lower(l) => {
                    for lc in l {
                        let mut tmp = [0u8; 4];
                        text.extend_from_slice(lc.encode_utf8(&mut tmp).as_bytes());
                    }
                }
            }
            map.resize(map.len() + (text.len() - before), at);
        }
        // Only whole UTF-8 sequences were pushed, so this never fails; the
        // fallback keeps the function total anyway.
        let text = String::from_utf8(text)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Folded {
            original,
            text,
            map: Some(map),
        }
    }

    /// The folded text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The text this was folded from.
    pub fn original(&self) -> &'a str {
        self.original
    }

    /// Maps a byte range of the folded text back to the smallest range of the
    /// original text that covers every character it was produced from.
    pub fn original_range(&self, start: usize, end: usize) -> (usize, usize) {
        let Some(map) = &self.map else {
            return (start, end);
        };
        if start >= end || start >= map.len() {
            let at = map.get(start).map_or(self.original.len(), |&o| o as usize);
            return (at, at);
        }
        let first = map[start] as usize;
        let last = map[end.min(map.len()) - 1] as usize;
        let last_len = self.original[last..]
            .chars()
            .next()
            .map_or(0, char::len_utf8);
        (first, last + last_len)
    }
}

/// ASCII with no whitespace other than single spaces folds byte for byte.
fn is_plain_ascii(bytes: &[u8]) -> bool {
    let mut prev_space = false;
    for &b in bytes {
        if b >= 0x80 || (b.is_ascii_whitespace() && b != b' ') || b == 0x0b {
            return false;
        }
        let space = b == b' ';
        if space && prev_space {
            return false;
        }
        prev_space = space;
    }
    true
}

/// Folds a short word into `buf` without allocating; `None` if the folded
/// form does not fit (callers only compare it with short keywords).
pub fn fold_small<'b>(word: &str, buf: &'b mut [u8; 48]) -> Option<&'b str> {
    let mut n = 0;
    let mut put = |bytes: &[u8], n: &mut usize| -> Option<()> {
        buf.get_mut(*n..*n + bytes.len())?.copy_from_slice(bytes);
        *n += bytes.len();
        Some(())
    };
    for c in word.chars() {
        if c.is_ascii() {
            put(&[c.to_ascii_lowercase() as u8], &mut n)?;
            continue;
        }
        match fold_one(c) {
            FoldedChar::Str(s) => put(s.as_bytes(), &mut n)?,
            FoldedChar::Lower(l) => {
                for lc in l {
                    let mut tmp = [0u8; 4];
                    put(lc.encode_utf8(&mut tmp).as_bytes(), &mut n)?;
                }
            }
        }
    }
    std::str::from_utf8(&buf[..n]).ok()
}

/// Folds a whole string with no offset map (phrases, needles, patterns).
pub fn fold_str(s: &str) -> String {
    Folded::new(s).text
}

/// The folded form of one character.
enum FoldedChar {
    Str(&'static str),
    Lower(std::char::ToLowercase),
}

/// Appends the folded form of `c` to `out`.
pub fn fold_char(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    match fold_one(c) {
        FoldedChar::Str(s) => out.push_str(s),
        FoldedChar::Lower(l) => out.extend(l),
    }
}

fn fold_one(c: char) -> FoldedChar {
    let folded: &'static str = match c {
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'Ā' | 'ā' | 'Ă'
        | 'ă' | 'Ą' | 'ą' => "a",
        'Æ' | 'æ' => "ae",
        'Ç' | 'ç' | 'Ć' | 'ć' | 'Č' | 'č' | 'Ĉ' | 'ĉ' | 'Ċ' | 'ċ' => "c",
        'Ď' | 'ď' | 'Đ' | 'đ' | 'Ð' | 'ð' => "d",
        'È' | 'É' | 'Ê' | 'Ë' | 'è' | 'é' | 'ê' | 'ë' | 'Ē' | 'ē' | 'Ĕ' | 'ĕ' | 'Ė' | 'ė' | 'Ę'
        | 'ę' | 'Ě' | 'ě' => "e",
        'Ĝ' | 'ĝ' | 'Ğ' | 'ğ' | 'Ġ' | 'ġ' | 'Ģ' | 'ģ' => "g",
        'Ĥ' | 'ĥ' | 'Ħ' | 'ħ' => "h",
        'Ì' | 'Í' | 'Î' | 'Ï' | 'ì' | 'í' | 'î' | 'ï' | 'Ĩ' | 'ĩ' | 'Ī' | 'ī' | 'Ĭ' | 'ĭ' | 'Į'
        | 'į' | 'İ' | 'ı' => "i",
        'Ĵ' | 'ĵ' => "j",
        'Ķ' | 'ķ' => "k",
        'Ĺ' | 'ĺ' | 'Ļ' | 'ļ' | 'Ľ' | 'ľ' | 'Ŀ' | 'ŀ' | 'Ł' | 'ł' => "l",
        'Ñ' | 'ñ' | 'Ń' | 'ń' | 'Ņ' | 'ņ' | 'Ň' | 'ň' => "n",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ō' | 'ō' | 'Ŏ'
        | 'ŏ' | 'Ő' | 'ő' => "o",
        'Œ' | 'œ' => "oe",
        'Ŕ' | 'ŕ' | 'Ŗ' | 'ŗ' | 'Ř' | 'ř' => "r",
        'Ś' | 'ś' | 'Ŝ' | 'ŝ' | 'Ş' | 'ş' | 'Š' | 'š' => "s",
        'ß' | 'ẞ' => "ss",
        'Ţ' | 'ţ' | 'Ť' | 'ť' | 'Ŧ' | 'ŧ' => "t",
        'Þ' | 'þ' => "th",
        'Ù' | 'Ú' | 'Û' | 'Ü' | 'ù' | 'ú' | 'û' | 'ü' | 'Ũ' | 'ũ' | 'Ū' | 'ū' | 'Ŭ' | 'ŭ' | 'Ů'
        | 'ů' | 'Ű' | 'ű' | 'Ų' | 'ų' => "u",
        'Ŵ' | 'ŵ' => "w",
        'Ý' | 'ý' | 'ÿ' | 'Ÿ' | 'Ŷ' | 'ŷ' => "y",
        'Ź' | 'ź' | 'Ż' | 'ż' | 'Ž' | 'ž' => "z",
        'ª' => "a",
        'º' => "o",
        '‘' | '’' | '‚' | '‛' | '′' | '´' | '`' => "'",
        '“' | '”' | '„' | '‟' | '″' | '«' | '»' => "\"",
        '‐' | '‑' | '‒' | '–' | '—' | '―' | '−' => "-",
        // Invisible characters and combining marks carry no letters: dropping
        // them defeats "ig\u{200b}nore" and decomposed accents alike.
        '\u{00ad}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}' => "",
        '\u{0300}'..='\u{036f}' => "",
        _ => return FoldedChar::Lower(c.to_lowercase()),
    };
    FoldedChar::Str(folded)
}

/// The German way of writing umlauts without them: `ä`→`ae`, `ö`→`oe`,
/// `ü`→`ue` (`ß`→`ss` needs nothing: folding already writes it so).
///
/// Folding maps `ü` to `u`, which is what Portuguese and Spanish writers
/// mean by an accent-free spelling, but a German writes "Mueller", "Koeln"
/// and "kuendigen". Rather than fold text two ways, whatever is matched
/// against text (CRM values, rule phrases) gets this second spelling as an
/// extra pattern. `None` when `s` has no umlaut, so there is no variant.
pub fn umlaut_spelling(s: &str) -> Option<String> {
    if !s.chars().any(|c| umlaut_expansion(c).is_some()) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match umlaut_expansion(c) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
    }
    Some(out)
}

/// The two-letter spelling of an umlaut, in its case.
pub fn umlaut_expansion(c: char) -> Option<&'static str> {
    Some(match c {
        'ä' => "ae",
        'ö' => "oe",
        'ü' => "ue",
        'Ä' => "Ae",
        'Ö' => "Oe",
        'Ü' => "Ue",
        _ => return None,
    })
}

/// Folded text with `ae`/`oe`/`ue` reduced to their vowel, for comparing
/// values written with, without or around umlauts: "Müller", "Mueller",
/// "MULLER" all give `muller`. Used as an identity key (the vault) and for a
/// CRM value typed without umlauts, never to fold text for matching.
pub fn umlaut_insensitive(folded: &str) -> String {
    let b = folded.as_bytes();
    let mut out = String::with_capacity(folded.len());
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'a' | b'o' | b'u') && b.get(i + 1) == Some(&b'e') {
            out.push(char::from(b[i]));
            i += 2;
            continue;
        }
        let c = folded[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Whether `c` belongs to a word (for phrase and name boundaries).
pub fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether the folded text has a word boundary at byte `at`, i.e. the
/// characters on both sides are not both word characters.
pub fn boundary_before(text: &str, at: usize) -> bool {
    !text[..at].chars().next_back().is_some_and(is_word_char)
}

/// Whether no word character follows byte `at`.
pub fn boundary_after(text: &str, at: usize) -> bool {
    !text[at..].chars().next().is_some_and(is_word_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_removes_accents_case_and_extra_space() {
        let f = Folded::new("AÇÃO  Straße\n\tü");
        assert_eq!(f.as_str(), "acao strasse u");
    }

    #[test]
    fn umlauts_get_their_german_two_letter_spelling() {
        assert_eq!(
            umlaut_spelling("Jürgen Müller, Köln").as_deref(),
            Some("Juergen Mueller, Koeln")
        );
        assert_eq!(umlaut_spelling("Straße"), None);
        assert_eq!(umlaut_insensitive("mueller koeln"), "muller koln");
    }

    #[test]
    fn folded_ranges_map_back_to_original_characters() {
        let s = "Olá,  JOÃO!";
        let f = Folded::new(s);
        let at = f.as_str().find("joao").unwrap();
        let (a, b) = f.original_range(at, at + 4);
        assert_eq!(&s[a..b], "JOÃO");
    }
}
