//! Which of our four languages a customer writes in, so that the replies the platform writes
//! itself (safe replies, "a colleague will confirm", a reviewer's decision) come in the
//! customer's language.
//!
//! Short support messages defeat statistical detectors, so this one counts evidence that is
//! hard to mistake: common function words of each language and letters only one of them uses
//! (`ã`, `ñ`, `ß`…). It answers only when one language leads clearly; "ok", "👍" or an order
//! number give `None`, and the conversation keeps the language it had.

use serde::{Deserialize, Serialize};

use crate::guardrails::rules::Lang;

const LANGS: [Lang; 4] = [Lang::En, Lang::Pt, Lang::Es, Lang::De];

/// Words (lowercase, with their accents) that point to one language. A word common to two
/// languages is listed under both, so it cancels out between them.
const WORDS: [&[&str]; 4] = [
    // English
    &[
        "the", "is", "are", "was", "were", "i", "i'm", "my", "you", "your", "to", "of", "and",
        "in", "it", "this", "that", "for", "with", "have", "has", "had", "not", "can", "can't",
        "please", "hi", "hello", "thanks", "thank", "want", "need", "help", "me", "we", "our",
        "what", "when", "where", "how", "why", "do", "does", "did", "don't", "be", "on", "at",
        "from", "would", "could", "will", "there", "still", "yet", "just", "get", "got", "if",
        "an", "order", "refund", "account", "name", "call", "tomorrow", "today", "yes", "who",
        "which", "they", "been", "about", "should", "any", "some", "money", "back", "know",
    ],
    // Portuguese
    &[
        "de",
        "que",
        "o",
        "os",
        "as",
        "um",
        "uma",
        "é",
        "em",
        "no",
        "na",
        "nos",
        "nas",
        "do",
        "da",
        "dos",
        "das",
        "com",
        "não",
        "nao",
        "eu",
        "meu",
        "minha",
        "você",
        "voce",
        "vocês",
        "obrigado",
        "obrigada",
        "olá",
        "ola",
        "oi",
        "bom",
        "boa",
        "dia",
        "tarde",
        "quero",
        "preciso",
        "tenho",
        "isso",
        "este",
        "esta",
        "está",
        "estou",
        "muito",
        "ainda",
        "já",
        "quando",
        "onde",
        "também",
        "tambem",
        "para",
        "pra",
        "por",
        "favor",
        "mas",
        "meus",
        "ajuda",
        "pedido",
        "conta",
        "seu",
        "sua",
        "ele",
        "ela",
        "foi",
        "ser",
        "ter",
        "pelo",
        "pela",
        "nome",
        "aqui",
        "agora",
        "hoje",
        "amanhã",
        "sim",
        "porque",
        "qual",
        "fazer",
        "posso",
        "pode",
        "gostaria",
        "dinheiro",
        "reembolso",
    ],
    // Spanish
    &[
        "de",
        "que",
        "el",
        "la",
        "los",
        "las",
        "un",
        "una",
        "es",
        "en",
        "del",
        "al",
        "con",
        "no",
        "yo",
        "mi",
        "mis",
        "tu",
        "usted",
        "gracias",
        "hola",
        "buenos",
        "buenas",
        "días",
        "dias",
        "quiero",
        "necesito",
        "tengo",
        "eso",
        "esto",
        "este",
        "esta",
        "está",
        "estoy",
        "muy",
        "mucho",
        "todavía",
        "todavia",
        "ya",
        "cuando",
        "dónde",
        "donde",
        "también",
        "para",
        "por",
        "favor",
        "pero",
        "ayuda",
        "pedido",
        "cuenta",
        "su",
        "sus",
        "fue",
        "ser",
        "tener",
        "nombre",
        "aquí",
        "aqui",
        "ahora",
        "hoy",
        "mañana",
        "sí",
        "porque",
        "cuál",
        "cual",
        "hacer",
        "puedo",
        "puede",
        "gustaría",
        "dinero",
        "reembolso",
        "llamo",
        "me",
        "se",
        "lo",
        "le",
        "hay",
    ],
    // German
    &[
        "der",
        "die",
        "das",
        "den",
        "dem",
        "des",
        "ich",
        "ist",
        "nicht",
        "und",
        "mein",
        "meine",
        "meiner",
        "meinen",
        "sie",
        "ihr",
        "ihre",
        "ein",
        "eine",
        "einen",
        "mit",
        "für",
        "bitte",
        "danke",
        "hallo",
        "wo",
        "was",
        "wie",
        "warum",
        "wann",
        "habe",
        "haben",
        "hat",
        "kann",
        "können",
        "auf",
        "zu",
        "von",
        "noch",
        "schon",
        "mir",
        "mich",
        "es",
        "in",
        "im",
        "um",
        "guten",
        "tag",
        "möchte",
        "brauche",
        "hilfe",
        "bestellung",
        "konto",
        "heiße",
        "heisse",
        "name",
        "geld",
        "zurück",
        "heute",
        "morgen",
        "ja",
        "nein",
        "wer",
        "welche",
        "sind",
        "wir",
        "aber",
        "auch",
        "oder",
        "wurde",
        "bin",
        "keine",
        "kein",
        "erstattung",
        "rückerstattung",
    ],
];

/// Letters that only one of the four languages uses, worth two words each.
fn marker(c: char) -> Option<usize> {
    match c {
        'ã' | 'õ' | 'ç' | 'â' | 'ê' | 'ô' | 'à' => Some(1),
        'ñ' | '¿' | '¡' => Some(2),
        'ß' | 'ä' | 'ö' | 'ü' => Some(3),
        _ => None,
    }
}

/// The language `text` is written in, when the evidence for one clearly outweighs the others:
/// at least two points, and two more than the runner-up.
pub fn detect(text: &str) -> Option<Lang> {
    let mut score = [0u32; 4];
    // Addresses, URLs and host names say nothing about the language ("example.com.br").
    let prose = text.split_whitespace().filter(|chunk| {
        let chunk = chunk.trim_end_matches(|c: char| !c.is_alphanumeric());
        !(chunk.contains('@')
            || chunk.contains('/')
            || chunk
                .as_bytes()
                .windows(2)
                .any(|w| w[0] == b'.' && w[1].is_ascii_alphanumeric()))
    });
    for word in prose
        .flat_map(|chunk| chunk.split(|c: char| !(c.is_alphanumeric() || c == '\'')))
        .filter(|w| !w.is_empty())
    {
        let lower = word.to_lowercase();
        let lower = lower.trim_matches('\'');
        for (i, list) in WORDS.iter().enumerate() {
            if list.contains(&lower) {
                score[i] += 1;
            }
        }
    }
    for c in text.chars().flat_map(char::to_lowercase) {
        if let Some(i) = marker(c) {
            score[i] += 2;
        }
    }
    let mut order = [0usize, 1, 2, 3];
    order.sort_by(|&a, &b| score[b].cmp(&score[a]));
    let (best, second) = (score[order[0]], score[order[1]]);
    (best >= 2 && best >= second + 2).then(|| LANGS[order[0]])
}

/// The longest text a tenant's wording may have, in characters, in any language (what the
/// settings that hold wordings allow).
pub const MAX_WORDING_CHARS: usize = 1000;

/// A tenant's wording: one text for every language, or texts by language.
#[derive(Debug, Clone, PartialEq)]
pub enum Wording {
    All(String),
    ByLang(ByLang),
}

/// Texts by language, at least one of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WordingByLanguage)]
pub struct ByLang {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub en: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub pt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub es: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub de: Option<String>,
}

impl Wording {
    /// The tenant's text for `lang`: its one text, or this language's, else its English one;
    /// `None` when it wrote neither (the caller falls back to its own default in `lang`).
    pub fn get(&self, lang: Lang) -> Option<&str> {
        match self {
            Wording::All(text) => Some(text),
            Wording::ByLang(t) => lang
                .pick([&t.en, &t.pt, &t.es, &t.de])
                .as_deref()
                .or(t.en.as_deref()),
        }
    }

    /// The text for `lang`: this language's, else English, else `builtin` in `lang`.
    pub fn pick(&self, lang: Lang, builtin: fn(Lang) -> &'static str) -> &str {
        self.get(lang).unwrap_or_else(|| builtin(lang))
    }

    /// Refuses a wording with no text, or with a blank or overlong one in any language;
    /// `name` says which setting it is in the error.
    pub fn check(&self, name: &str, max_chars: usize) -> Result<(), WordingError> {
        let texts: Vec<&String> = match self {
            Wording::All(text) => vec![text],
            Wording::ByLang(t) => [&t.en, &t.pt, &t.es, &t.de].into_iter().flatten().collect(),
        };
        if texts.is_empty() {
            return Err(format!("{name} must name at least one language").into());
        }
        if texts
            .iter()
            .any(|t| t.trim().is_empty() || t.chars().count() > max_chars)
        {
            return Err(format!(
                "{name} must be 1 to {max_chars} characters (in every language given)"
            )
            .into());
        }
        Ok(())
    }
}

impl Serialize for Wording {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Wording::All(text) => text.serialize(serializer),
            Wording::ByLang(t) => t.serialize(serializer),
        }
    }
}

/// As (de)serialised above: a text, or an object of texts by language.
impl utoipa::PartialSchema for Wording {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        // By language: at least one, each a text. Written as JSON, as utoipa's builder writes
        // `minProperties` as `maxProperties`; one object with `minProperties` rather than a
        // union of partial objects, which client generators cannot turn into a type.
        let text = serde_json::json!({
            "type": "string", "minLength": 1, "maxLength": MAX_WORDING_CHARS, "pattern": "\\S"
        });
        let languages: serde_json::Map<String, serde_json::Value> = ["en", "pt", "es", "de"]
            .into_iter()
            .map(|lang| (lang.to_string(), text.clone()))
            .collect();
        crate::http::contract::raw_schema(serde_json::json!({
            "description": "One text for every language, or texts by language (`en`, `pt`, `es`, \
                            `de`): the customer's language is used, else English, else the \
                            built-in text.",
            "oneOf": [
                text,
                {
                    "type": "object",
                    "additionalProperties": false,
                    "minProperties": 1,
                    "properties": languages
                }
            ]
        }))
    }
}

impl utoipa::ToSchema for Wording {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((
            <ByLang as utoipa::ToSchema>::name().into_owned(),
            ByLang::schema(),
        ));
        <ByLang as utoipa::ToSchema>::schemas(schemas);
    }
}

impl<'de> Deserialize<'de> for Wording {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => Ok(Wording::All(text)),
            v @ serde_json::Value::Object(_) => {
                serde_json::from_value(v).map(Wording::ByLang).map_err(|e| {
                    D::Error::custom(format!(
                        "a wording by language takes en, pt, es and de as strings: {e}"
                    ))
                })
            }
            _ => Err(D::Error::custom(
                "a wording is a string (every language) or an object by language (en, pt, es, de)",
            )),
        }
    }
}

impl Lang {
    /// The ISO 639-1 code, as stored and shown.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Pt => "pt",
            Lang::Es => "es",
            Lang::De => "de",
        }
    }

    /// A code as stored or sent by a member (`pt-BR` counts as `pt`).
    pub fn from_code(code: &str) -> Option<Lang> {
        let base = code.split(['-', '_']).next()?.to_ascii_lowercase();
        match base.as_str() {
            "en" => Some(Lang::En),
            "pt" => Some(Lang::Pt),
            "es" => Some(Lang::Es),
            "de" => Some(Lang::De),
            _ => None,
        }
    }

    /// A stored code, or English when there is none (or it is not one of ours).
    pub fn from_stored(code: Option<&str>) -> Lang {
        code.and_then(Lang::from_code).unwrap_or_default()
    }

    /// Picks this language's text out of `[en, pt, es, de]`.
    pub fn pick<T>(self, texts: [T; 4]) -> T {
        let [en, pt, es, de] = texts;
        match self {
            Lang::En => en,
            Lang::Pt => pt,
            Lang::Es => es,
            Lang::De => de,
        }
    }
}

crate::error::message_error! {
    /// Why a tenant's wording is refused: the message says what to fix.
    pub struct WordingError;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wording_is_documented_with_the_limits_it_is_checked_against() {
        use utoipa::PartialSchema;
        // Written as JSON, kept as written (`contract::raw_schema`).
        let raw = serde_json::to_value(Wording::schema()).unwrap();
        let doc = &raw["x-raw-schema"];
        let text = &doc["oneOf"][0];
        assert_eq!(text["maxLength"], MAX_WORDING_CHARS);
        assert_eq!(text["minLength"], 1);
        let by_lang = &doc["oneOf"][1];
        for lang in ["en", "pt", "es", "de"] {
            assert_eq!(by_lang["properties"][lang]["maxLength"], MAX_WORDING_CHARS);
            assert_eq!(by_lang["properties"][lang]["type"], "string");
        }
        // At least one language, with a text: `{}` and `{"en": null}` are refused.
        assert_eq!(by_lang["minProperties"], 1);
        for bad in [serde_json::json!({}), serde_json::json!({ "en": null })] {
            let wording: Wording = serde_json::from_value(bad).unwrap();
            assert!(wording.check("w", MAX_WORDING_CHARS).is_err());
        }
        let longest = Wording::All("é".repeat(MAX_WORDING_CHARS));
        assert!(longest.check("w", MAX_WORDING_CHARS).is_ok());
        let longer = Wording::All("é".repeat(MAX_WORDING_CHARS + 1));
        assert!(longer.check("w", MAX_WORDING_CHARS).is_err());
    }
}
