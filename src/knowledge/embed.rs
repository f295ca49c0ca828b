//! The built-in embedder of the offline default: no model, no network. Words (case and accent
//! folded) and their character trigrams are hashed into a fixed-size vector and normalised, so
//! passages sharing words and word pieces score close under cosine similarity, in any of the
//! four languages. It is a lexical matcher, labelled as such wherever it is used.

use sha2::{Digest, Sha256};

pub const LOCAL_DIMS: usize = 384;
pub const LOCAL_MODEL: &str = "custodian-local-hash-v1";

/// Words too common to say anything about a passage, in the four languages.
const STOP: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "is", "are", "it", "my", "i",
    "you", "we", "do", "does", "can", "how", "what", "with", "be", "me", "o", "os", "as", "um",
    "uma", "de", "do", "da", "e", "em", "no", "na", "que", "meu", "minha", "eu", "voce", "el",
    "la", "los", "las", "y", "en", "mi", "es", "por", "con", "der", "die", "das", "und", "ich",
    "ist", "ein", "eine", "zu", "mit", "wie", "mein", "meine",
];

fn fold(text: &str) -> String {
    crate::guardrails::fold::Folded::new(text)
        .as_str()
        .to_string()
}

fn bucket(feature: &str) -> (usize, f32) {
    let digest = Sha256::digest(feature.as_bytes());
    let index =
        u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]) as usize % LOCAL_DIMS;
    let sign = if digest[4] & 1 == 0 { 1.0 } else { -1.0 };
    (index, sign)
}

pub fn embed_local(text: &str) -> Vec<f32> {
    let folded = fold(text);
    let mut v = vec![0f32; LOCAL_DIMS];
    for word in folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if STOP.contains(&word) {
            continue;
        }
        let (i, s) = bucket(word);
        v[i] += 2.0 * s;
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for gram in padded.windows(3) {
            let (i, s) = bucket(&gram.iter().collect::<String>());
            v[i] += 0.5 * s;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn related_passages_score_higher_than_unrelated_ones() {
        let q = embed_local("How do I return an item?");
        let returns = embed_local("Returns: you can return items within 30 days of delivery.");
        let shipping =
            embed_local("Shipping: orders leave our warehouse within two business days.");
        assert!(cosine(&q, &returns) > cosine(&q, &shipping) + 0.1);
    }

    #[test]
    fn accents_and_case_do_not_matter() {
        let a = embed_local("Devolução do pedido");
        let b = embed_local("devolucao do PEDIDO");
        assert!((cosine(&a, &b) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn vectors_are_unit_length_or_zero() {
        let v = embed_local("anything at all");
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-5);
        assert!(embed_local("the and of").iter().all(|x| *x == 0.0));
    }
}
