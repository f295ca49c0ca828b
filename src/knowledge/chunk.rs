//! Splitting an article into passages small enough to embed and to quote: by headings first,
//! then paragraphs, then sentences, each passage carrying its section's heading so it still
//! makes sense alone.

/// Target passage size in characters.
pub const TARGET: usize = 700;
/// No passage grows past this.
pub const MAX: usize = 1200;

pub fn chunk(title: &str, markdown: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut heading = title.trim().to_string();
    let mut current = String::new();

    let flush = |current: &mut String, heading: &str, chunks: &mut Vec<String>| {
        let text = current.trim();
        if !text.is_empty() {
            chunks.push(if heading.is_empty() {
                text.to_string()
            } else {
                format!("{heading}\n{text}")
            });
        }
        current.clear();
    };

    for block in markdown.split("\n\n") {
        let block = block.trim();
        if block.is_empty() {
            continue;
        }
        if let Some(h) = block.lines().next().filter(|l| l.starts_with('#')) {
            flush(&mut current, &heading, &mut chunks);
            heading = h.trim_start_matches('#').trim().to_string();
            let rest = block.lines().skip(1).collect::<Vec<_>>().join("\n");
            if rest.trim().is_empty() {
                continue;
            }
            current.push_str(rest.trim());
            continue;
        }
        if current.len() + block.len() > TARGET && !current.is_empty() {
            flush(&mut current, &heading, &mut chunks);
        }
        if block.len() > MAX {
            for piece in split_long(block) {
                if current.len() + piece.len() > TARGET && !current.is_empty() {
                    flush(&mut current, &heading, &mut chunks);
                }
                current.push_str(&piece);
                current.push(' ');
            }
        } else {
            if !current.is_empty() {
                current.push_str("\n\n");
            }
            current.push_str(block);
        }
    }
    flush(&mut current, &heading, &mut chunks);
    if chunks.is_empty() && !title.trim().is_empty() {
        chunks.push(title.trim().to_string());
    }
    chunks
}

/// Cuts an over-long paragraph at sentence ends, or hard at MAX characters.
fn split_long(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for sentence in text.split_inclusive(['.', '!', '?', '\n']) {
        if current.len() + sentence.len() > TARGET && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push_str(sentence);
        while current.len() > MAX {
            let cut = (0..=MAX)
                .rev()
                .find(|i| current.is_char_boundary(*i))
                .unwrap_or(0);
            let rest = current.split_off(cut);
            out.push(std::mem::replace(&mut current, rest));
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_carry_their_section_heading() {
        let md = "Intro paragraph.\n\n## Returns\n\nYou can return items within 30 days.\n\n## Shipping\n\nWe ship in 2 days.";
        let chunks = chunk("Help", md);
        assert_eq!(chunks.len(), 3, "{chunks:?}");
        assert_eq!(chunks[0], "Help\nIntro paragraph.");
        assert!(chunks[1].starts_with("Returns\n") && chunks[1].contains("30 days"));
        assert!(chunks[2].starts_with("Shipping\n"));
    }

    #[test]
    fn no_passage_exceeds_the_maximum_even_without_sentence_ends() {
        let long = "x".repeat(5000) + " " + &"é".repeat(3000);
        for c in chunk("T", &long) {
            assert!(c.len() <= MAX + 10, "{}", c.len());
        }
    }
}
