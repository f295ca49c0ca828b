//! Check-digit and structure validators for structured identifiers.
//!
//! All take the compact form (separators already removed) and never panic on
//! any input.

/// Luhn mod-10 over ASCII digits.
pub fn luhn_is_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether a 13-19 digit number belongs to a payment-card range of a current
/// brand: Visa, Mastercard (51-55 and the 2221-2720 2-series), Amex,
/// Discover, Diners, JCB, UnionPay (62 and 81), Maestro, Elo, Hipercard,
/// Mir (2200-2204), RuPay (60, 65, 81, 82, 508, 353, 356) and Troy (9792).
pub fn card_brand_matches(digits: &str) -> bool {
    let len = digits.len();
    let p = |n: usize| -> u32 { digits.get(..n).and_then(|s| s.parse().ok()).unwrap_or(0) };
    let (p1, p2, p3, p4) = (p(1), p(2), p(3), p(4));
    // JCB's original 15-digit ranges.
    if (p4 == 1800 || p4 == 2131) && len == 15 {
        return true;
    }
    match p1 {
        4 => matches!(len, 13 | 16 | 19),
        2 => {
            ((2221..=2720).contains(&p4) && len == 16)
                // Mir.
                || ((2200..=2204).contains(&p4) && (16..=19).contains(&len))
        }
        5 => match p2 {
            51..=55 => len == 16,
            // Maestro, Elo (5041, 5066, 5067, 509x) and RuPay (508) share
            // the 50-58 space.
            50 | 56..=58 => (12..=19).contains(&len),
            _ => false,
        },
        3 => match p2 {
            34 | 37 => len == 15,
            36 | 38 | 39 => (14..=19).contains(&len),
            30 => (300..=305).contains(&p3) && (14..=19).contains(&len),
            // JCB (3528-3589; RuPay's co-branded 353 and 356 fall inside
            // it). The rest of 35 is unassigned but Luhn-valid numbers
            // there are still written as cards, by people and by fake-data
            // libraries alike: a card is the only thing they can be.
            35 => (16..=19).contains(&len),
            _ => false,
        },
        6 => {
            // Discover, UnionPay, Elo, Hipercard, Maestro (6304, 6759,
            // 676x, 6390: also 12-15 digits); RuPay's 60 and 65.
            ((16..=19).contains(&len)
                && (p4 == 6011
                    || matches!(p2, 60 | 62 | 63 | 65 | 67)
                    || (644..=649).contains(&p3)))
                || ((12..=19).contains(&len) && matches!(p2, 63 | 67))
        }
        // RuPay (81, 82) and UnionPay (81).
        8 => matches!(p2, 81 | 82) && (16..=19).contains(&len),
        // Troy.
        9 => p4 == 9792 && len == 16,
        _ => false,
    }
}

/// Brazilian CPF: 11 digits, two mod-11 check digits, not all equal.
pub fn cpf_is_valid(digits: &str) -> bool {
    let b = digits.as_bytes();
    if b.len() != 11 || !b.iter().all(u8::is_ascii_digit) || b.iter().all(|&c| c == b[0]) {
        return false;
    }
    let d: Vec<u32> = b.iter().map(|&c| u32::from(c - b'0')).collect();
    let dv = |n: usize| -> u32 {
        let sum: u32 = (0..n).map(|i| d[i] * (n as u32 + 1 - i as u32)).sum();
        let r = (sum * 10) % 11;
        if r == 10 {
            0
        } else {
            r
        }
    };
    dv(9) == d[9] && dv(10) == d[10]
}

/// Brazilian CNPJ, numeric or the alphanumeric form introduced in 2026: 12
/// characters from `0-9A-Z` followed by two numeric mod-11 check digits, each
/// character weighing its ASCII code minus 48.
pub fn cnpj_is_valid(chars: &str) -> bool {
    let b = chars.as_bytes();
    if b.len() != 14
        || !b[..12]
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        || !b[12..].iter().all(u8::is_ascii_digit)
        || b.iter().all(|&c| c == b[0])
    {
        return false;
    }
    let v: Vec<u32> = b.iter().map(|&c| u32::from(c) - 48).collect();
    let dv = |n: usize| -> u32 {
        // Weights run 2..=9 from the right, wrapping.
        let sum: u32 = (0..n).map(|i| v[n - 1 - i] * (2 + (i as u32 % 8))).sum();
        let r = sum % 11;
        if r < 2 {
            0
        } else {
            11 - r
        }
    };
    dv(12) == v[12] && dv(13) == v[13]
}

/// US Social Security Number structure: area not 000, 666 or 900-999; group
/// not 00; serial not 0000.
pub fn ssn_is_valid(digits: &str) -> bool {
    let b = digits.as_bytes();
    if b.len() != 9 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let area: u32 = digits[..3].parse().unwrap_or(0);
    let group: u32 = digits[3..5].parse().unwrap_or(0);
    let serial: u32 = digits[5..].parse().unwrap_or(0);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// IBAN length per country (SWIFT IBAN registry).
pub fn iban_length(country: &str) -> Option<usize> {
    #[rustfmt::skip]
    const LENGTHS: &[(&str, usize)] = &[
        ("AD", 24), ("AE", 23), ("AL", 28), ("AT", 20), ("AZ", 28), ("BA", 20), ("BE", 16),
        ("BG", 22), ("BH", 22), ("BI", 27), ("BR", 29), ("BY", 28), ("CH", 21), ("CR", 22),
        ("CY", 28), ("CZ", 24), ("DE", 22), ("DJ", 27), ("DK", 18), ("DO", 28), ("EE", 20),
        ("EG", 29), ("ES", 24), ("FI", 18), ("FK", 18), ("FO", 18), ("FR", 27), ("GB", 22),
        ("GE", 22), ("GI", 23), ("GL", 18), ("GR", 27), ("GT", 28), ("HN", 28), ("HR", 21),
        ("HU", 28), ("IE", 22), ("IL", 23), ("IQ", 23), ("IS", 26), ("IT", 27), ("JO", 30),
        ("KW", 30), ("KZ", 20), ("LB", 28), ("LC", 32), ("LI", 21), ("LT", 20), ("LU", 20),
        ("LV", 21), ("LY", 25), ("MC", 27), ("MD", 24), ("ME", 22), ("MK", 19), ("MN", 20),
        ("MR", 27), ("MT", 31), ("MU", 30), ("NI", 28), ("NL", 18), ("NO", 15), ("OM", 23),
        ("PK", 24), ("PL", 28), ("PS", 29), ("PT", 25), ("QA", 29), ("RO", 24), ("RS", 22),
        ("RU", 33), ("SA", 24), ("SC", 31), ("SD", 18), ("SE", 24), ("SI", 19), ("SK", 24),
        ("SM", 27), ("SO", 23), ("ST", 25), ("SV", 28), ("TL", 23), ("TN", 24), ("TR", 26),
        ("UA", 29), ("VA", 22), ("VG", 24), ("XK", 20), ("YE", 30),
    ];
    LENGTHS.iter().find(|(c, _)| *c == country).map(|&(_, n)| n)
}

/// IBAN: known country, exact length, alphanumeric BBAN, mod 97 == 1.
pub fn iban_is_valid(compact: &str) -> bool {
    let b = compact.as_bytes();
    if b.len() < 5 || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let country = compact[..2].to_ascii_uppercase();
    if iban_length(&country) != Some(b.len()) || !b[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let c = c.to_ascii_uppercase();
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_good_identifiers_validate() {
        assert!(luhn_is_valid("4111111111111111"));
        assert!(card_brand_matches("2223003122003222"));
        assert!(cpf_is_valid("52998224725"));
        assert!(!cpf_is_valid("11111111111"));
        assert!(cnpj_is_valid("11222333000181"));
        assert!(cnpj_is_valid("12ABC34501DE35"));
        assert!(iban_is_valid("DE89370400440532013000"));
        assert!(iban_is_valid("GB82WEST12345698765432"));
        assert!(!iban_is_valid("DE89370400440532013001"));
        assert!(ssn_is_valid("123456789"));
        assert!(!ssn_is_valid("666123456"));
        assert!(!ssn_is_valid("900123456"));
        assert!(!ssn_is_valid("123001234"));
        assert!(!ssn_is_valid("123450000"));
    }
}
