//! Names and other CRM-known values.
//!
//! Three sources, from most to least certain:
//! 1. values the CRM already knows about this contact (name, first name alone,
//!    company, e-mail, phone, address), matched case- and accent-insensitively;
//! 2. self-introductions ("my name is", "meu nome é", "me llamo", "ich heiße"…);
//! 3. sign-offs ("Obrigado,\nJoão", "Viele Grüße\nHans Müller").
//!
//! A capitalised word on its own is never a name: German capitalises every
//! noun ("Meine Bestellung"), and sentence starts are capitalised everywhere.

use memchr::memmem;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::LazyLock;

use crate::guardrails::fold::{self, Folded};
use crate::guardrails::pii::{Cue, CueMatch, PiiSpan, PiiType};

/// What the CRM knows about the person in the conversation. Deserialises from
/// `{"names": [...], "companies": [...], "emails": [...], "phones": [...],
/// "addresses": [...]}`, every list optional.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(from = "KnownEntitiesSpec", into = "KnownEntitiesSpec")]
pub struct KnownEntities {
    spec: KnownEntitiesSpec,
    needles: Vec<Needle>,
    /// Folded needles already added: a large context is built in linear time.
    seen: HashSet<String>,
    /// Known phones as digits without leading zeros.
    phones: Vec<String>,
}

/// The serialised shape of [`KnownEntities`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnownEntitiesSpec {
    pub names: Vec<String>,
    pub companies: Vec<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub addresses: Vec<String>,
}

#[derive(Clone)]
struct Needle {
    finder: memmem::Finder<'static>,
    kind: PiiType,
    score: f32,
}

// Values are PII: Debug shows how many there are, never what they are.
impl fmt::Debug for KnownEntities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnownEntities")
            .field("names", &self.spec.names.len())
            .field("companies", &self.spec.companies.len())
            .field("emails", &self.spec.emails.len())
            .field("phones", &self.spec.phones.len())
            .field("addresses", &self.spec.addresses.len())
            .finish()
    }
}

impl From<KnownEntitiesSpec> for KnownEntities {
    fn from(spec: KnownEntitiesSpec) -> Self {
        let mut k = KnownEntities::default();
        for n in &spec.names {
            k.add_name(n);
        }
        for c in &spec.companies {
            k.add_company(c);
        }
        for e in &spec.emails {
            k.push(e, PiiType::Email, 1.0);
        }
        for p in &spec.phones {
            k.add_phone(p);
        }
        for a in &spec.addresses {
            k.add_address(a);
        }
        k.spec = spec;
        k
    }
}

impl From<KnownEntities> for KnownEntitiesSpec {
    fn from(k: KnownEntities) -> Self {
        k.spec
    }
}

const PARTICLES: &[&str] = &[
    "da", "de", "do", "dos", "das", "di", "del", "della", "van", "von", "der", "den", "la", "le",
    "y", "e", "du", "dei", "zu", "ter", "ten", "bin", "al", "el",
];

const LEGAL_SUFFIXES: &[&str] = &[
    "ltda", "ltda.", "s.a.", "s.a", "sa", "s/a", "me", "eireli", "gmbh", "ag", "kg", "ug", "inc",
    "inc.", "llc", "ltd", "ltd.", "plc", "corp", "corp.", "co", "co.", "sl", "s.l.", "slu", "sas",
    "sarl", "srl", "spa", "s.p.a.", "lda", "lda.",
];

impl KnownEntities {
    /// No known entities.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the contact's name: the full name, the first name alone, the
    /// last name alone and first + last all become needles.
    pub fn with_name(mut self, name: &str) -> Self {
        self.spec.names.push(name.to_string());
        self.add_name(name);
        self
    }

    pub fn with_company(mut self, company: &str) -> Self {
        self.spec.companies.push(company.to_string());
        self.add_company(company);
        self
    }

    pub fn with_email(mut self, email: &str) -> Self {
        self.spec.emails.push(email.to_string());
        self.push(email, PiiType::Email, 1.0);
        self
    }

    pub fn with_phone(mut self, phone: &str) -> Self {
        self.spec.phones.push(phone.to_string());
        self.add_phone(phone);
        self
    }

    pub fn with_address(mut self, address: &str) -> Self {
        self.spec.addresses.push(address.to_string());
        self.add_address(address);
        self
    }

    /// The values as given.
    pub fn spec(&self) -> &KnownEntitiesSpec {
        &self.spec
    }

    fn push(&mut self, value: &str, kind: PiiType, score: f32) {
        let value = value.trim();
        let folded = fold::fold_str(value);
        self.push_folded(folded.clone(), kind, score);
        if kind == PiiType::Email {
            // An address is spelled one way only.
            return;
        }
        // "Müller" in the CRM is written "Mueller" by a German without
        // umlauts on the keyboard (folding alone gives "muller")…
        if let Some(spelled) = fold::umlaut_spelling(value) {
            self.push_folded(fold::fold_str(&spelled), kind, score);
        }
        // …and a CRM value typed as "Mueller" must still catch "Müller".
        self.push_folded(umlauts_restored(&folded), kind, score);
    }

    fn push_folded(&mut self, folded: String, kind: PiiType, score: f32) {
        if folded.chars().filter(|c| c.is_alphanumeric()).count() < 2 || self.seen.contains(&folded)
        {
            return;
        }
        // Order does not matter: every needle's matches are reported and
        // overlaps merge under the longest (see `resolve_overlaps`).
        self.needles.push(Needle {
            finder: memmem::Finder::new(folded.as_bytes()).into_owned(),
            kind,
            score,
        });
        self.seen.insert(folded);
    }

    fn add_name(&mut self, name: &str) {
        self.push(name, PiiType::Name, 1.0);
        let parts: Vec<&str> = name
            .split_whitespace()
            .filter(|p| !PARTICLES.contains(&fold::fold_str(p).as_str()))
            .collect();
        if let (Some(first), Some(last)) = (parts.first(), parts.last()) {
            self.push(first, PiiType::Name, 1.0);
            if parts.len() > 1 {
                self.push(last, PiiType::Name, 0.95);
                self.push(&format!("{first} {last}"), PiiType::Name, 1.0);
            }
        }
    }

    fn add_company(&mut self, company: &str) {
        self.push(company, PiiType::Company, 1.0);
        let words: Vec<&str> = company.split_whitespace().collect();
        if let Some((last, head)) = words.split_last() {
            let last = fold::fold_str(last.trim_start_matches(','));
            if !head.is_empty() && LEGAL_SUFFIXES.contains(&last.as_str()) {
                let head = head.join(" ");
                self.push(head.trim_end_matches(','), PiiType::Company, 0.95);
            }
        }
    }

    fn add_phone(&mut self, phone: &str) {
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        let digits = digits.trim_start_matches('0').to_string();
        if digits.len() >= 8 {
            self.phones.push(digits);
        }
    }

    fn add_address(&mut self, address: &str) {
        self.push(address, PiiType::Address, 1.0);
        if let Some((street, _)) = address.split_once(',') {
            if street.split_whitespace().count() >= 2 && street.len() >= 8 {
                self.push(street, PiiType::Address, 0.95);
            }
        }
    }

    /// Whether `digits` is one of the known phones, with or without country
    /// code or trunk prefix.
    pub(crate) fn is_known_phone(&self, digits: &str) -> bool {
        let d = digits.trim_start_matches('0');
        d.len() >= 8
            && self.phones.iter().any(|p| {
                let (short, long) = if p.len() <= d.len() {
                    (p.as_str(), d)
                } else {
                    (d, p.as_str())
                };
                long.len() - short.len() <= 4 && long.ends_with(short)
            })
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty() && self.phones.is_empty()
    }
}

pub(super) fn detect(
    text: &str,
    folded: &Folded<'_>,
    cues: &[CueMatch],
    known: &KnownEntities,
    out: &mut Vec<PiiSpan>,
) {
    crm(folded, known, out);
    introductions(text, folded, cues, out);
    sign_offs(text, folded, cues, out);
    closing_line(text, out);
    anywhere(text, out);
    lowercase_after_role(text, folded, cues, out);
}

/// A first name typed in lowercase right after a relation or role word
/// ("falei com o atendente lucas", "mi marido feliciana portero", "ihr
/// mitarbeiter alexei"), with the listed first names and surnames that
/// follow it. Only listed words count, and none that is also an everyday
/// word, so "my husband will call" stays text.
fn lowercase_after_role(
    text: &str,
    folded: &Folded<'_>,
    cues: &[CueMatch],
    out: &mut Vec<PiiSpan>,
) {
    for m in cues {
        if m.cue != Cue::Role {
            continue;
        }
        let (_, orig_end) = folded.original_range(m.start, m.end);
        let rest = &text[orig_end..];
        let skipped = rest.len() - rest.trim_start_matches([' ', ',', ':']).len();
        if skipped == 0 || skipped > 3 {
            continue;
        }
        let start = orig_end + skipped;
        let name_word = |w: &str, first: bool| {
            let mut buf = [0u8; 48];
            let Some(f) = fold::fold_small(w, &mut buf) else {
                return false;
            };
            let fl = flags(f);
            w.chars().all(char::is_lowercase)
                && f.len() >= 3
                && fl & (NOT_NAME | AMBIGUOUS | NEVER | ROLE) == 0
                && fl & if first { FIRST } else { FIRST | SURNAME } != 0
        };
        let Some(first) = word_at(text, start).filter(|w| name_word(w, true)) else {
            continue;
        };
        let mut end = start + first.len();
        for _ in 0..3 {
            let Some(w) = text[end..]
                .strip_prefix(' ')
                .and_then(|_| word_at(text, end + 1))
            else {
                break;
            };
            if !name_word(w, false) {
                break;
            }
            end += 1 + w.len();
        }
        out.push(PiiSpan::new(PiiType::Name, start, end, 0.7));
    }
}

/// First names of the census and name-dictionary lists in
/// `data/first-names.txt` (see `data/README.md`), folded, one per line.
static FIRST_NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    include_str!("../../../data/first-names.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .collect()
});

/// The most frequent surnames of the US Census list in `data/surnames.txt`,
/// folded: the last word of a capitalised pair whose first name is not
/// listed ("Hablé con Perlita Giralt").
static SURNAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    include_str!("../../../data/surnames.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .collect()
});

/// Forces the name lists to load.
pub(crate) fn warm_up() {
    LazyLock::force(&LEXICON);
}

/// What a folded word is to the name detector, as bit flags.
const FIRST: u8 = 1;
const SURNAME: u8 = 2;
const NOT_NAME: u8 = 4;
const AMBIGUOUS: u8 = 8;
const NEVER: u8 = 16;
const ROLE: u8 = 32;

/// FNV-1a: words are a few bytes long, where it beats SipHash several
/// times over, and the keys are our own lists, not attacker input.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Every word list of this module in one map, so that a word costs one
/// lookup instead of one per list.
static LEXICON: LazyLock<HashMap<&'static str, u8, BuildHasherDefault<Fnv>>> =
    LazyLock::new(|| {
        let mut map: HashMap<&'static str, u8, BuildHasherDefault<Fnv>> = HashMap::default();
        map.reserve(FIRST_NAMES.len() + SURNAMES.len() + 2_000);
        let lists: [(&[&'static str], u8); 4] = [
            (NOT_NAMES, NOT_NAME),
            (AMBIGUOUS_FIRST, AMBIGUOUS),
            (NEVER_HEAD, NEVER),
            (ROLE_WORDS, ROLE),
        ];
        for &w in FIRST_NAMES.iter() {
            *map.entry(w).or_default() |= FIRST;
        }
        for &w in SURNAMES.iter() {
            *map.entry(w).or_default() |= SURNAME;
        }
        for (list, flag) in lists {
            for &w in list {
                *map.entry(w).or_default() |= flag;
            }
        }
        map
    });

fn flags(folded: &str) -> u8 {
    LEXICON.get(folded).copied().unwrap_or(0)
}

/// Words that begin the names of places, shops, brands and events rather
/// than of people ("São Paulo", "El Corte Inglés", "Apple Pay", "Black
/// Friday"): never the head of a name found without a role word.
const NEVER_HEAD: &[&str] = &[
    "dia",
    "dias",
    "semana",
    "festa",
    "feira",
    "sao",
    "santa",
    "santo",
    "san",
    "rio",
    "porto",
    "belo",
    "new",
    "los",
    "las",
    "el",
    "la",
    "le",
    "black",
    "cyber",
    "amazon",
    "apple",
    "google",
    "samsung",
    "mercado",
    "banco",
    "bank",
    "deutsche",
    "corte",
    "magazine",
    "casas",
    "lojas",
    "caixa",
    "nubank",
    "itau",
    "bradesco",
    "santander",
    "paypal",
    "visa",
    "master",
    "american",
    "united",
    "western",
    "saint",
    "st",
    "fort",
    "port",
    "lake",
    "mount",
    "hotel",
    "uber",
    "air",
    "via",
    "rua",
    "avenida",
    "calle",
    "plaza",
    "strasse",
    "dr",
    "mr",
    "mrs",
    "ms",
    "prof",
];

/// Whether `folded` (one word, folded) is a first name of the lists; a
/// hyphenated one ("klaus-gunter") by its first part too.
fn is_first_name(folded: &str) -> bool {
    flags(folded) & FIRST != 0
        || folded
            .split_once('-')
            .is_some_and(|(head, _)| flags(head) & FIRST != 0)
}

/// First names that are also everyday words, months, places or products
/// ("Will", "Hope", "Rosa", "São", "Echo", "Mercedes", "Ernst"): alone, or
/// at the head of a capitalised phrase, they need a role word before them.
const AMBIGUOUS_FIRST: &[&str] = &[
    // English
    "will",
    "may",
    "june",
    "april",
    "august",
    "mark",
    "bill",
    "rose",
    "grace",
    "hope",
    "faith",
    "joy",
    "ivy",
    "art",
    "chance",
    "rich",
    "sky",
    "summer",
    "autumn",
    "dawn",
    "eve",
    "guy",
    "ray",
    "pat",
    "sue",
    "don",
    "echo",
    "alexa",
    "siri",
    "apple",
    "page",
    "case",
    "day",
    "king",
    "young",
    "long",
    "white",
    "brown",
    "major",
    "miles",
    "price",
    "sunny",
    "star",
    "crystal",
    "jewel",
    "honey",
    "angel",
    "baby",
    "cherry",
    "ginger",
    "holly",
    "lane",
    "rocky",
    "precious",
    "lucky",
    "happy",
    "chase",
    "wells",
    "sterling",
    "jan",
    "mon",
    "sat",
    "sun",
    "best",
    "dear",
    "ok",
    "can",
    "hi",
    "bud",
    "buck",
    "carol",
    "christian",
    "english",
    "france",
    "georgia",
    "india",
    "jordan",
    "kansas",
    "paris",
    "china",
    "israel",
    "sydney",
    "victoria",
    "virginia",
    "florida",
    "dakota",
    "austin",
    "denver",
    "phoenix",
    "houston",
    "dallas",
    "memphis",
    "orlando",
    "raleigh",
    "tracy",
    "early",
    "love",
    "lovely",
    "royal",
    "rusty",
    "sandy",
    "storm",
    "winter",
    "spring",
    "story",
    "trinity",
    "unique",
    "destiny",
    "harmony",
    "justice",
    "liberty",
    "serenity",
    "amber",
    "ruby",
    "pearl",
    "jade",
    "coral",
    "olive",
    "iris",
    "violet",
    "lily",
    "daisy",
    "poppy",
    "willow",
    "ash",
    "river",
    "ocean",
    "rain",
    "cash",
    "gene",
    "ken",
    "lee",
    "lou",
    "ping",
    "wang",
    "van",
    "von",
    "le",
    "la",
    "les",
    "del",
    "della",
    "al",
    "el",
    "sir",
    "dr",
    "mr",
    "mrs",
    "ms",
    "prof",
    "amazon",
    "target",
    "prime",
    "order",
    "tracking",
    "refund",
    "delivery",
    "package",
    "black",
    "friday",
    "cyber",
    "monday",
    // Portuguese
    "paz",
    "luz",
    "cruz",
    "rosa",
    "flor",
    "gloria",
    "vitoria",
    "dia",
    "sol",
    "santa",
    "santo",
    "sao",
    "rio",
    "porto",
    "belo",
    "bom",
    "boa",
    "amor",
    "mar",
    "neve",
    "estrela",
    "perola",
    "graca",
    "fe",
    "bahia",
    "natal",
    "lapa",
    "campos",
    "salvador",
    "aurora",
    "alegre",
    "fortaleza",
    "recife",
    "belem",
    "manaus",
    "goiania",
    "curitiba",
    "londrina",
    "olinda",
    "maringa",
    "caxias",
    "santos",
    "campinas",
    "brasil",
    "magazine",
    "casa",
    "nota",
    "pedido",
    "conta",
    "cartao",
    "oi",
    "ola",
    "obrigado",
    "obrigada",
    "bom",
    "tudo",
    "boleto",
    "pix",
    // Spanish
    "reyes",
    "pilar",
    "dolores",
    "consuelo",
    "rocio",
    "mercedes",
    "san",
    "santiago",
    "leon",
    "blanca",
    "angeles",
    "montserrat",
    "nieves",
    "soledad",
    "socorro",
    "esperanza",
    "remedios",
    "valencia",
    "sevilla",
    "granada",
    "toledo",
    "malaga",
    "murcia",
    "alicante",
    "bilbao",
    "madrid",
    "barcelona",
    "zaragoza",
    "cordoba",
    "espana",
    "corte",
    "ingles",
    "hola",
    "buenas",
    "gracias",
    "milagros",
    "purificacion",
    "inmaculada",
    "encarnacion",
    "asuncion",
    "concepcion",
    "candelaria",
    "visitacion",
    "trinidad",
    "natividad",
    "rosario",
    "luna",
    "cielo",
    "alma",
    // German
    "ernst",
    "frank",
    "wolf",
    "engel",
    "sonne",
    "mai",
    "juni",
    "juli",
    "heide",
    "liebe",
    "otto",
    "gerade",
    "bitte",
    "danke",
    "hallo",
    "moin",
    "gruss",
    "kai",
    "hans",
    "konig",
    "kaiser",
    "graf",
    "furst",
    "herzog",
    "ritter",
    "vogel",
    "fink",
    "fuchs",
    "hahn",
    "bar",
    "berlin",
    "hamburg",
    "koln",
    "munchen",
    "frankfurt",
    "bremen",
    "dresden",
    "leipzig",
    "deutschland",
    "osterreich",
    "schweiz",
    "zalando",
    "thermomix",
    "sparkasse",
    "paket",
    "konto",
    "karte",
    "rechnung",
    "bestellung",
    "gutschein",
    "lieferung",
    "ware",
    "fahrer",
    "kunde",
    "kundin",
    "erika",
    "linde",
    "tanne",
    "birke",
    "eiche",
    "ilse",
    "lotte",
    "sommer",
    "winter",
    "august",
    "april",
    "september",
    "marco",
    "julio",
    "love",
    "spring",
    "easter",
    "natal",
    "pascoa",
    "glaube",
    "domingo",
    "ella",
    "nada",
    "nice",
];

/// Words that open a closing remark: a capitalised name ends before them
/// ("-- Kristina Matthews Any update?", "Att, João Pedro Alguma novidade?").
const CLOSERS: &[&str] = &[
    "any", "please", "thanks", "thank", "regards", "cheers", "hi", "hello", "hey", "quedo",
    "alguma", "alguna", "aguardo", "obrigado", "obrigada", "gracias", "saludos", "vielen", "danke",
    "bitte", "hallo", "ola", "oi", "hola", "iban", "cpf", "cnpj", "ssn", "re",
];

/// Words that put a person's name right after them: relations, roles,
/// titles, and labels ("my mother, Jennifer Gay", "o atendente Lucas",
/// "der Techniker Siegmund Conradi", "Herr Wernecke", "Titular: Ana").
pub(super) const ROLE_WORDS: &[&str] = &[
    // English
    "mother",
    "mom",
    "mum",
    "father",
    "dad",
    "wife",
    "husband",
    "son",
    "daughter",
    "brother",
    "sister",
    "friend",
    "colleague",
    "coworker",
    "co-worker",
    "partner",
    "boss",
    "manager",
    "agent",
    "technician",
    "tech",
    "supervisor",
    "driver",
    "courier",
    "neighbor",
    "neighbour",
    "assistant",
    "rep",
    "representative",
    "attendant",
    "advisor",
    "adviser",
    "consultant",
    "employee",
    "mr",
    "mrs",
    "ms",
    "miss",
    "dr",
    "mister",
    "aunt",
    "uncle",
    "grandmother",
    "grandma",
    "grandfather",
    "grandpa",
    "cousin",
    "nephew",
    "niece",
    "fiance",
    "fiancee",
    "girlfriend",
    "boyfriend",
    "roommate",
    "tenant",
    "landlord",
    "lawyer",
    "accountant",
    "holder",
    "attn",
    "landlady",
    "janitor",
    "doorman",
    "plumber",
    "concierge",
    "brother-in-law",
    "sister-in-law",
    "mother-in-law",
    "father-in-law",
    "cunhada",
    "cunhado",
    "sogra",
    "sogro",
    "porteiro",
    "porteira",
    "zelador",
    "zeladora",
    "cunada",
    "cunado",
    "suegra",
    "suegro",
    "portero",
    "portera",
    "conserje",
    "namen",
    "hausmeister",
    "hausmeisterin",
    "schwager",
    "schwagerin",
    "schwiegermutter",
    "schwiegervater",
    "pfortner",
    "prof",
    "operator",
    "clerk",
    "cashier",
    "nurse",
    "doctor",
    "specialist",
    // Portuguese
    "mae",
    "pai",
    "esposa",
    "marido",
    "filho",
    "filha",
    "irmao",
    "irma",
    "amigo",
    "amiga",
    "colega",
    "socio",
    "socia",
    "chefe",
    "gerente",
    "atendente",
    "tecnico",
    "tecnica",
    "supervisor",
    "supervisora",
    "entregador",
    "entregadora",
    "motorista",
    "vizinho",
    "vizinha",
    "assistente",
    "consultor",
    "consultora",
    "funcionario",
    "funcionaria",
    "sr",
    "sra",
    "srta",
    "senhor",
    "senhora",
    "dona",
    "dra",
    "tia",
    "tio",
    "avo",
    "prima",
    "primo",
    "sobrinho",
    "sobrinha",
    "namorado",
    "namorada",
    "noivo",
    "noiva",
    "advogado",
    "advogada",
    "contador",
    "contadora",
    "vendedor",
    "vendedora",
    "titular",
    "operadora",
    "analista",
    // Spanish
    "madre",
    "padre",
    "hijo",
    "hija",
    "hermano",
    "hermana",
    "companero",
    "companera",
    "jefe",
    "jefa",
    "agente",
    "repartidor",
    "repartidora",
    "conductor",
    "conductora",
    "vecino",
    "vecina",
    "asesor",
    "asesora",
    "empleado",
    "empleada",
    "senor",
    "senora",
    "don",
    "abuela",
    "abuelo",
    "novio",
    "novia",
    "abogado",
    "abogada",
    "compañero",
    // German
    "mutter",
    "vater",
    "frau",
    "mann",
    "ehefrau",
    "ehemann",
    "sohn",
    "tochter",
    "bruder",
    "schwester",
    "freund",
    "freundin",
    "kollege",
    "kollegin",
    "partnerin",
    "chef",
    "chefin",
    "mitarbeiter",
    "mitarbeiterin",
    "techniker",
    "technikerin",
    "fahrer",
    "fahrerin",
    "bote",
    "botin",
    "nachbar",
    "nachbarin",
    "assistent",
    "assistentin",
    "berater",
    "beraterin",
    "herr",
    "herrn",
    "tante",
    "onkel",
    "oma",
    "opa",
    "cousine",
    "verlobter",
    "verlobte",
    "anwalt",
    "anwaltin",
    "kontoinhaber",
    "kontoinhaberin",
    "inhaber",
    "inhaberin",
    "sachbearbeiter",
    "sachbearbeiterin",
    "monteur",
    "zusteller",
    "zustellerin",
];

/// Titles written with a dot ("Dr.", "Sr.", "Sra."): the dot ends no sentence.
const TITLES: &[&str] = &[
    "dr", "dra", "mr", "mrs", "ms", "sr", "sra", "srta", "prof", "profa", "hr", "fr", "hd",
];

/// What stands right before a word on its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Before {
    /// Start of text, line or sentence; or a comma after an ordinary word.
    Start,
    /// A role, relation or title word ("mother,", "atendente", "Herr", "Dr.").
    Role,
    /// A capitalised word right before ("São Paulo", "Magazine Luiza"): the
    /// word continues a proper noun that is not a person's name.
    Capitalised,
    /// The capitalised word right before opens the sentence ("Kann Peggy
    /// …", "¿Puede Morena Alberola …"): a verb or a pronoun, mid-sentence
    /// for the word after it.
    AfterOpening,
    /// Any other word, with only a space between: mid-sentence.
    Word,
}

/// Whether `text` reads as German: more of its common function words than
/// English, Portuguese or Spanish ones, counted without allocating (the
/// full language detector costs twenty times as much, and this question is
/// asked on the hot path).
fn looks_german(text: &str) -> bool {
    const DE: &[&str] = &[
        "der", "die", "das", "und", "ich", "nicht", "ist", "mit", "ein", "eine", "mein", "meine",
        "bitte", "sie", "wir", "auf", "von", "hat", "habe", "wurde", "kann", "wegen", "danke",
        "hallo", "ihre", "ihr", "dem", "den", "zu", "im", "vom", "bei", "noch", "auch", "wie",
    ];
    const OTHER: &[&str] = &[
        "the", "and", "is", "my", "you", "to", "of", "for", "with", "please", "it", "que", "de",
        "o", "a", "e", "meu", "minha", "com", "para", "el", "la", "los", "mi", "por", "y", "es",
        "em", "no", "na", "con",
    ];
    let (mut de, mut other) = (0u32, 0u32);
    for w in text.split(|c: char| !c.is_alphabetic()) {
        if w.is_empty() || w.len() > 6 {
            continue;
        }
        let is = |list: &[&str]| list.iter().any(|x| x.eq_ignore_ascii_case(w));
        if is(DE) {
            de += 1;
        } else if is(OTHER) {
            other += 1;
        }
    }
    de >= 2 && de > other
}

/// Whether the last word of a name is a listed surname.
fn surname_last(parts: &[&str]) -> bool {
    let mut buf = [0u8; 48];
    parts
        .last()
        .and_then(|w| fold::fold_small(w, &mut buf))
        .is_some_and(|f| flags(f) & SURNAME != 0)
}

fn before_word(text: &str, at: usize) -> Before {
    let head = text[..at].trim_end_matches(' ');
    let spaces = at - head.len();
    let (head, punct) = match head.chars().next_back() {
        Some(c @ (',' | ':' | '.')) => (&head[..head.len() - 1], Some(c)),
        _ => (head, None),
    };
    if spaces == 0 && punct.is_none() {
        return Before::Start;
    }
    let word_start = head
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_alphabetic() || c == '-')
        .last()
        .map_or(head.len(), |(i, _)| i);
    let word = &head[word_start..];
    if word.is_empty() {
        return Before::Start;
    }
    let mut buf = [0u8; 48];
    let Some(f) = fold::fold_small(word, &mut buf) else {
        return Before::Start;
    };
    let role = flags(f) & ROLE != 0;
    match punct {
        Some('.') if TITLES.contains(&f) => Before::Role,
        Some(',' | ':') if role => Before::Role,
        Some(':') if matches!(f, "name" | "nome" | "nombre") => Before::Role,
        Some(_) => Before::Start,
        None if role => Before::Role,
        // "New York", "San Diego", "El Corte Inglés": a place or shop.
        None if is_capitalised(word) && flags(f) & NEVER != 0 => Before::Capitalised,
        None if is_capitalised(word) && !not_a_name(f) => {
            if flags(f) & NEVER == 0 && opens_sentence(text, word_start) {
                Before::AfterOpening
            } else {
                Before::Capitalised
            }
        }
        None => Before::Word,
    }
}

/// Whether the word at `at` opens a sentence: nothing but spaces and
/// opening marks since the start of the text, a line break or `.`/`!`/`?`.
fn opens_sentence(text: &str, at: usize) -> bool {
    let head = text[..at].trim_end_matches([' ', '¿', '¡', '"', '(', '-', '–', '—']);
    head.is_empty() || head.ends_with(['\n', '\r', '.', '!', '?', ':', ','])
}

/// Whether the name ending at `end` is followed by a lowercase word, as a
/// subject is by its verb ("Robert called me", "Tilo hat mich angerufen").
fn verb_after(text: &str, end: usize) -> bool {
    text[end..]
        .strip_prefix(' ')
        .and_then(|r| r.chars().next())
        .is_some_and(char::is_lowercase)
}

/// Names anywhere in a sentence, not only after an introduction: a
/// capitalised first name of the lists with capitalised words after it
/// ("transfira a conta para Lavínia Alves"), a first name alone in the
/// middle of a sentence ("falei com Lucas ontem"), and capitalised words
/// after a role word even when the first name is not listed ("der
/// Techniker Siegmund Conradi", "Herr Wernecke"). Words that are first
/// names and everyday words ("Will", "Rosa", "São") need the role word.
fn anywhere(text: &str, out: &mut Vec<PiiSpan>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut german: Option<bool> = None;
    while i < bytes.len() {
        // Word starts only; the first character must be uppercase, which
        // rules out most bytes without decoding them.
        let b = bytes[i];
        let c = if b < 0x80 {
            if !b.is_ascii_uppercase() {
                i += 1;
                continue;
            }
            char::from(b)
        } else {
            match text[i..].chars().next() {
                Some(c) => c,
                None => break,
            }
        };
        let glued = |p: char| {
            p.is_alphanumeric() || p == '\'' || p == '-' || p == '_' || p == '@' || p == '.'
        };
        let starts_word = c.is_uppercase()
            && match i.checked_sub(1).map(|j| bytes[j]) {
                None => true,
                Some(p) if p < 0x80 => !glued(char::from(p)),
                Some(_) => text[..i].chars().next_back().is_none_or(|p| !glued(p)),
            };
        let Some(word) = starts_word.then(|| word_at(text, i)).flatten() else {
            i += c.len_utf8();
            continue;
        };
        if !is_capitalised(word) || word.chars().all(char::is_uppercase) {
            i += word.len();
            continue;
        }
        let mut buf = [0u8; 48];
        let folded = fold::fold_small(word, &mut buf).unwrap_or("");
        let listed = is_first_name(folded);
        let mut before = before_word(text, i);
        // An unlisted word needs a role word, a word before it, or a line
        // of its own to be a name at all: most capitalised words stop here.
        if !listed
            && before != Before::Role
            && before != Before::Word
            && before != Before::AfterOpening
            && !(before == Before::Start && text[..i].ends_with('\n'))
        {
            i += word.len();
            continue;
        }
        // German capitalises every noun: "auf den Namen Thorsten", "unser
        // Hausmeister Felix Kaul". A capitalised word before says nothing
        // there.
        if before == Before::Capitalised && listed {
            let de = *german.get_or_insert_with(|| looks_german(text));
            if de {
                before = Before::Word;
            }
        }
        if before == Before::Capitalised
            || not_a_name(folded)
            // "Herrn Wernecke": the role word introduces the name.
            || flags(folded) & ROLE != 0
        {
            i += word.len();
            continue;
        }
        let ambiguous = flags(folded) & AMBIGUOUS != 0;
        let never_head = flags(folded) & NEVER != 0;
        let Some((s, e, _)) = read_name(text, i, false) else {
            i += word.len();
            continue;
        };
        // German articles are no particles: "Kann Enrico Linke das Paket …"
        // (but "Ana Liz das Neves", "Erdmute van der Dussen").
        let articles = if text[s..e].contains(" d") {
            [" das ", " der ", " den ", " dem "]
                .iter()
                .filter_map(|a| text[s..e].find(a))
                .min()
        } else {
            None
        };
        let e = match articles {
            Some(cut)
                if !text[s..s + cut].ends_with(" van")
                    && !text[s..s + cut].ends_with(" von")
                    && *german.get_or_insert_with(|| looks_german(text)) =>
            {
                s + cut
            }
            _ => e,
        };
        let parts: Vec<&str> = text[s..e].split(' ').collect();
        let words = parts.len();
        let common = parts.iter().any(|w| {
            let mut buf = [0u8; 48];
            fold::fold_small(w, &mut buf).is_none_or(|f| not_a_name(f) && !PARTICLES.contains(&f))
        });
        // A first name alone on the last line, under a closing remark
        // ("Thanks for your help!\nGustavo").
        let signature = before == Before::Start && text[..s].ends_with('\n') && ends_text(text, e);
        // "Hunter8415!": a word run on into digits is a token, not a name.
        let glued = text[e..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let accept = match before {
            _ if glued => false,
            Before::Role => true,
            _ if never_head || common => false,
            _ if signature => listed || words >= 2,
            // "Crystal Martinez", "Aurora Moraes": a name with its surname.
            // (Not "Dia das Mães", "Rosa dos Ventos": no particle after one.)
            _ if ambiguous => {
                words >= 2
                    && matches!(before, Before::Word | Before::AfterOpening)
                    && !parts.iter().any(|w| {
                        let mut buf = [0u8; 48];
                        fold::fold_small(w, &mut buf).is_some_and(|f| PARTICLES.contains(&f))
                    })
            }
            Before::Word | Before::AfterOpening if listed => true,
            // A sentence opened by a first name and its verb ("Robert
            // called me yesterday").
            Before::Start if listed && words == 1 => opens_sentence(text, s) && verb_after(text, e),
            Before::AfterOpening => words >= 2 && surname_last(&parts),
            // An unlisted first name with a listed surname; not in German,
            // where two capitalised nouns in a row are everyday text ("im
            // Namen von Blumenhaus Schäfer").
            Before::Word => {
                words >= 2
                    && surname_last(&parts)
                    && !*german.get_or_insert_with(|| looks_german(text))
            }
            _ => listed && words >= 2,
        };
        if accept {
            out.push(PiiSpan::new(PiiType::Name, s, e, 0.75));
            i = e;
        } else {
            i += word.len();
        }
    }
}

fn crm(folded: &Folded<'_>, known: &KnownEntities, out: &mut Vec<PiiSpan>) {
    let f = folded.as_str();
    for needle in &known.needles {
        let len = needle.finder.needle().len();
        for at in needle.finder.find_iter(f.as_bytes()) {
            if f.is_char_boundary(at)
                && f.is_char_boundary(at + len)
                && fold::boundary_before(f, at)
                && fold::boundary_after(f, at + len)
            {
                let (s, e) = folded.original_range(at, at + len);
                out.push(PiiSpan::new(needle.kind, s, e, needle.score));
            }
        }
    }
}

/// A folded value typed with `ae`/`oe`/`ue` for an umlaut ("mueller"),
/// reduced to the folded umlaut ("muller"), word by word. Words that would
/// shrink below four letters keep their spelling: "Joe" must not become the
/// everyday "jo". Other words gain a variant that is rarely a word at all
/// ("Manuel" → "manul"), so the extra needle costs no precision.
fn umlauts_restored(folded: &str) -> String {
    folded
        .split(' ')
        .map(|w| {
            let r = fold::umlaut_insensitive(w);
            if r.len() < w.len() && r.chars().count() >= 4 {
                r
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Introduction phrases; `true` marks the unambiguous ones after which even a
/// lowercase word is taken as a name.
pub(super) const INTRODUCTIONS: &[(&str, bool)] = &[
    ("my name is", true),
    ("my name's", true),
    ("my full name is", true),
    ("the name is", true),
    ("call me", true),
    ("you can call me", true),
    ("i am", false),
    ("i'm", false),
    ("this is", false),
    ("it's", false),
    ("here is", false),
    ("meu nome e", true),
    ("meu nome completo e", true),
    ("me chamo", true),
    ("eu me chamo", true),
    ("pode me chamar de", true),
    ("sou o", false),
    ("sou a", false),
    ("eu sou o", false),
    ("eu sou a", false),
    ("eu sou", false),
    ("sou", false),
    ("aqui e o", false),
    ("aqui e a", false),
    ("aqui e", false),
    ("quem fala e", false),
    ("fala o", false),
    ("fala a", false),
    ("me llamo", true),
    ("yo me llamo", true),
    ("mi nombre es", true),
    ("mi nombre completo es", true),
    ("soy", false),
    ("yo soy", false),
    ("soy el", false),
    ("soy la", false),
    ("le habla", false),
    ("te habla", false),
    ("les habla", false),
    ("ich heisse", true),
    ("mein name ist", true),
    ("mein name lautet", true),
    ("mein vollstandiger name ist", true),
    ("ich bin", false),
    ("ich bin der", false),
    ("ich bin die", false),
    ("hier ist", false),
    ("hier spricht", false),
    ("hier schreibt", false),
];

/// Sign-off words after which a name on its own (to the end of the line) is
/// taken as the writer's.
pub(super) const SIGN_OFFS: &[&str] = &[
    "thanks",
    "thank you",
    "many thanks",
    "thanks a lot",
    "thx",
    "regards",
    "best regards",
    "kind regards",
    "warm regards",
    "best",
    "cheers",
    "sincerely",
    "yours",
    "yours truly",
    "all the best",
    "br",
    "obrigado",
    "obrigada",
    "muito obrigado",
    "muito obrigada",
    "grato",
    "grata",
    "abracos",
    "abraco",
    "um abraco",
    "att",
    "att.",
    "atenciosamente",
    "cordialmente",
    "saudacoes",
    "valeu",
    "beijos",
    "bjs",
    "gracias",
    "muchas gracias",
    "saludos",
    "un saludo",
    "saludos cordiales",
    "atentamente",
    "un abrazo",
    "besos",
    "danke",
    "vielen dank",
    "danke schon",
    "gruss",
    "grusse",
    "viele grusse",
    "liebe grusse",
    "beste grusse",
    "herzliche grusse",
    "schone grusse",
    "freundliche grusse",
    "mit freundlichen grussen",
    "mit besten grussen",
    "lg",
    "vg",
    "mfg",
];

/// Words that follow "I am", "ich bin", "soy"… capitalised without being a
/// name: nationalities, roles, states, and German nouns.
const NOT_NAMES: &[&str] = &[
    // Words that start a closing remark or a polite line, and pronouns
    // written capitalised mid-sentence ("Können Sie …").
    "any",
    "this",
    "that",
    "these",
    "those",
    "vielen",
    "dank",
    "danke",
    "aguardo",
    "retorno",
    "quedo",
    "alguma",
    "alguna",
    "sie",
    "ihr",
    "ihre",
    "ihnen",
    "ihrem",
    "ihren",
    "ihrer",
    "du",
    "usted",
    "ustedes",
    "voce",
    "voces",
    // English
    "i",
    "a",
    "an",
    "the",
    "not",
    "very",
    "so",
    "really",
    "just",
    "still",
    "also",
    "here",
    "there",
    "on",
    "in",
    "at",
    "from",
    "with",
    "your",
    "my",
    "our",
    "writing",
    "trying",
    "calling",
    "contacting",
    "reaching",
    "looking",
    "sorry",
    "happy",
    "sad",
    "angry",
    "upset",
    "frustrated",
    "disappointed",
    "interested",
    "unable",
    "able",
    "going",
    "having",
    "getting",
    "waiting",
    "done",
    "fine",
    "ok",
    "okay",
    "good",
    "glad",
    "sure",
    "afraid",
    "customer",
    "client",
    "member",
    "owner",
    "user",
    "admin",
    "manager",
    "new",
    "old",
    "urgent",
    "important",
    "again",
    "back",
    "now",
    "today",
    "tomorrow",
    "yesterday",
    "please",
    "hello",
    "hi",
    "hey",
    "dear",
    "thanks",
    "thank",
    "regarding",
    "about",
    "re",
    "fw",
    "fwd",
    "english",
    "american",
    "british",
    "brazilian",
    "german",
    "spanish",
    "portuguese",
    "french",
    "italian",
    "canadian",
    "mexican",
    "argentinian",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "order",
    "support",
    "team",
    "ceo",
    "cto",
    "it",
    "is",
    "was",
    "who",
    "what",
    "why",
    "how",
    // Portuguese
    "eu",
    "o",
    "um",
    "uma",
    "cliente",
    "nao",
    "muito",
    "bem",
    "mal",
    "do",
    "da",
    "de",
    "dono",
    "dona",
    "responsavel",
    "gerente",
    "brasileiro",
    "brasileira",
    "portugues",
    "portuguesa",
    "novo",
    "nova",
    "assinante",
    "usuario",
    "usuaria",
    "obrigado",
    "obrigada",
    "ola",
    "oi",
    "bom",
    "boa",
    "segunda",
    "terca",
    "quarta",
    "quinta",
    "sexta",
    "sabado",
    "domingo",
    "pedido",
    "compra",
    "suporte",
    "equipe",
    "que",
    "quem",
    "como",
    "sim",
    "aqui",
    "estou",
    "esta",
    "isso",
    "isto",
    "meu",
    "minha",
    "seu",
    "sua",
    // Spanish
    "yo",
    "el",
    "la",
    "los",
    "las",
    "un",
    "una",
    "no",
    "muy",
    "socio",
    "socia",
    "espanol",
    "espanola",
    "mexicano",
    "mexicana",
    "argentino",
    "argentina",
    "nuevo",
    "nueva",
    "hola",
    "buenos",
    "buenas",
    "lunes",
    "martes",
    "miercoles",
    "jueves",
    "viernes",
    "domingo",
    "gracias",
    "usted",
    "aca",
    "alli",
    "pedido",
    "soporte",
    "equipo",
    "mi",
    "tu",
    "su",
    // German
    "ich",
    "der",
    "die",
    "das",
    "ein",
    "eine",
    "einer",
    "nicht",
    "sehr",
    "kunde",
    "kundin",
    "neukunde",
    "neukundin",
    "stammkunde",
    "stammkundin",
    "mitglied",
    "inhaber",
    "inhaberin",
    "besitzer",
    "besitzerin",
    "abonnent",
    "abonnentin",
    "student",
    "studentin",
    "rentner",
    "rentnerin",
    "deutscher",
    "deutsche",
    "sauer",
    "enttauscht",
    "verargert",
    "froh",
    "leider",
    "gerade",
    "jetzt",
    "heute",
    "morgen",
    "gestern",
    "hallo",
    "guten",
    "liebe",
    "lieber",
    "sehr",
    "meine",
    "mein",
    "ihre",
    "ihr",
    "unsere",
    "bestellung",
    "lieferung",
    "rechnung",
    "frage",
    "problem",
    "anfrage",
    "beschwerde",
    "montag",
    "dienstag",
    "mittwoch",
    "donnerstag",
    "freitag",
    "samstag",
    "sonntag",
    "schon",
    "noch",
    "immer",
    "wieder",
    "auch",
    "hier",
    "da",
    "dort",
    "im",
    "am",
    "zu",
    "mit",
    "seit",
    "fur",
    "uber",
    "und",
    "oder",
    "aber",
    "wer",
    "was",
    "wie",
    // Verbs and connectors that follow a lowercase name in chat.
    "and",
    "but",
    "or",
    "from",
    "need",
    "want",
    "have",
    "would",
    "like",
    "will",
    "can",
    "live",
    "bought",
    "ordered",
    "bye",
    "e",
    "ou",
    "mas",
    "preciso",
    "quero",
    "gostaria",
    "tenho",
    "sou",
    "moro",
    "comprei",
    "fiz",
    "tchau",
    "y",
    "pero",
    "necesito",
    "quiero",
    "tengo",
    "estoy",
    "compre",
    "adios",
    "brauche",
    "mochte",
    "habe",
    "wohne",
    "kaufte",
    "bestellt",
    "tschuss",
    "ciao",
];

/// Occupations and roles, folded, per language: "Ich bin Lehrer", "Soy
/// Profesora", "sou Engenheiro", "I'm Manager" introduce a job, not a name.
/// Checked after weak introductions only ("ich bin", "soy", "I'm"…): after
/// "my name is" a word is a name whatever else it means. Words that are
/// also common surnames (Baker, Taylor, Müller, Schneider, Fischer, Koch,
/// Weber, Bauer, Meyer, Pastor…) are left out: "Ich bin Schneider" is more
/// often Herr Schneider than a tailor.
const OCCUPATIONS: &[&str] = &[
    // English
    "teacher",
    "engineer",
    "developer",
    "programmer",
    "designer",
    "doctor",
    "nurse",
    "lawyer",
    "attorney",
    "accountant",
    "consultant",
    "director",
    "supervisor",
    "coordinator",
    "analyst",
    "architect",
    "technician",
    "electrician",
    "plumber",
    "mechanic",
    "driver",
    "pilot",
    "pharmacist",
    "dentist",
    "professor",
    "researcher",
    "scientist",
    "secretary",
    "assistant",
    "receptionist",
    "cashier",
    "salesman",
    "saleswoman",
    "seller",
    "buyer",
    "retailer",
    "reseller",
    "dealer",
    "distributor",
    "freelancer",
    "contractor",
    "entrepreneur",
    "founder",
    "cofounder",
    "president",
    "employee",
    "intern",
    "retired",
    "pensioner",
    "housewife",
    "unemployed",
    "self-employed",
    "journalist",
    "photographer",
    "writer",
    "artist",
    "musician",
    "chef",
    "waiter",
    "waitress",
    "nanny",
    "caregiver",
    "therapist",
    "psychologist",
    "veterinarian",
    "vet",
    "physician",
    "surgeon",
    "officer",
    "policeman",
    "firefighter",
    "soldier",
    "administrator",
    "representative",
    "agent",
    "partner",
    "vendor",
    "supplier",
    "reseller",
    "teenager",
    "parent",
    "mother",
    "father",
    "mom",
    "dad",
    "grandmother",
    "grandfather",
    "wife",
    "husband",
    "boyfriend",
    "girlfriend",
    "son",
    "daughter",
    // Portuguese
    "professor",
    "professora",
    "engenheiro",
    "engenheira",
    "medico",
    "medica",
    "advogado",
    "advogada",
    "enfermeiro",
    "enfermeira",
    "estudante",
    "aluno",
    "aluna",
    "vendedor",
    "vendedora",
    "contador",
    "contadora",
    "analista",
    "desenvolvedor",
    "desenvolvedora",
    "programador",
    "programadora",
    "arquiteto",
    "arquiteta",
    "tecnico",
    "tecnica",
    "eletricista",
    "encanador",
    "mecanico",
    "motorista",
    "piloto",
    "farmaceutico",
    "farmaceutica",
    "dentista",
    "pesquisador",
    "pesquisadora",
    "secretario",
    "secretaria",
    "assistente",
    "recepcionista",
    "caixa",
    "comprador",
    "compradora",
    "revendedor",
    "revendedora",
    "lojista",
    "comerciante",
    "empresario",
    "empresaria",
    "autonomo",
    "autonoma",
    "aposentado",
    "aposentada",
    "desempregado",
    "desempregada",
    "funcionario",
    "funcionaria",
    "estagiario",
    "estagiaria",
    "diretor",
    "diretora",
    "coordenador",
    "coordenadora",
    "supervisor",
    "supervisora",
    "consultor",
    "consultora",
    "jornalista",
    "fotografo",
    "fotografa",
    "cozinheiro",
    "cozinheira",
    "garcom",
    "garconete",
    "psicologo",
    "psicologa",
    "veterinario",
    "veterinaria",
    "policial",
    "representante",
    "fornecedor",
    "fornecedora",
    "parceiro",
    "parceira",
    "mae",
    "pai",
    "esposa",
    "marido",
    "filho",
    "filha",
    // Spanish
    "profesor",
    "profesora",
    "maestro",
    "maestra",
    "ingeniero",
    "ingeniera",
    "abogado",
    "abogada",
    "enfermero",
    "enfermera",
    "estudiante",
    "alumno",
    "alumna",
    "contable",
    "desarrollador",
    "desarrolladora",
    "arquitecto",
    "arquitecta",
    "electricista",
    "fontanero",
    "conductor",
    "conductora",
    "chofer",
    "farmaceutico",
    "investigador",
    "investigadora",
    "asistente",
    "cajero",
    "cajera",
    "revendedor",
    "distribuidor",
    "distribuidora",
    "proveedor",
    "proveedora",
    "autonoma",
    "jubilado",
    "jubilada",
    "parado",
    "parada",
    "empleado",
    "empleada",
    "becario",
    "becaria",
    "director",
    "directora",
    "coordinador",
    "coordinadora",
    "periodista",
    "fotografo",
    "cocinero",
    "cocinera",
    "camarero",
    "camarera",
    "psicologo",
    "veterinario",
    "policia",
    "socio",
    "socia",
    "madre",
    "padre",
    "esposo",
    "hijo",
    "hija",
    // German
    "lehrer",
    "lehrerin",
    "ingenieur",
    "ingenieurin",
    "entwickler",
    "entwicklerin",
    "programmierer",
    "programmiererin",
    "arzt",
    "arztin",
    "krankenschwester",
    "pfleger",
    "pflegerin",
    "anwalt",
    "anwaltin",
    "rechtsanwalt",
    "rechtsanwaltin",
    "steuerberater",
    "steuerberaterin",
    "berater",
    "beraterin",
    "manager",
    "managerin",
    "geschaftsfuhrer",
    "geschaftsfuhrerin",
    "leiter",
    "leiterin",
    "architekt",
    "architektin",
    "techniker",
    "technikerin",
    "elektriker",
    "elektrikerin",
    "installateur",
    "mechaniker",
    "mechanikerin",
    "fahrer",
    "fahrerin",
    "apotheker",
    "apothekerin",
    "zahnarzt",
    "zahnarztin",
    "professorin",
    "forscher",
    "forscherin",
    "sekretar",
    "sekretarin",
    "assistent",
    "assistentin",
    "kassierer",
    "kassiererin",
    "verkaufer",
    "verkauferin",
    "handler",
    "handlerin",
    "einkaufer",
    "einkauferin",
    "unternehmer",
    "unternehmerin",
    "grunder",
    "grunderin",
    "selbststandig",
    "selbstandig",
    "freiberufler",
    "freiberuflerin",
    "angestellter",
    "angestellte",
    "beamter",
    "beamtin",
    "praktikant",
    "praktikantin",
    "azubi",
    "auszubildender",
    "auszubildende",
    "arbeitslos",
    "hausfrau",
    "hausmann",
    "journalist",
    "journalistin",
    "fotograf",
    "fotografin",
    "kellner",
    "kellnerin",
    "psychologe",
    "psychologin",
    "tierarzt",
    "tierarztin",
    "polizist",
    "polizistin",
    "vertreter",
    "vertreterin",
    "lieferant",
    "partnerin",
    "mutter",
    "vater",
    "ehefrau",
    "ehemann",
];

/// Endings of German nouns that are never given names.
const NOUN_SUFFIXES: &[&str] = &[
    "ung", "heit", "keit", "schaft", "tion", "tat", "nis", "nummer", "kunde", "ment", "ismus",
];

fn is_capitalised(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(char::is_uppercase) && chars.clone().any(char::is_lowercase)
        || (word.chars().count() >= 2
            && word.chars().all(char::is_uppercase)
            && word.chars().count() <= 12)
}

/// Reads a word of letters (with inner `'`/`-`) starting at `at`.
fn word_at(text: &str, at: usize) -> Option<&str> {
    let rest = &text[at..];
    let mut end = 0;
    for (i, c) in rest.char_indices() {
        let inner = (c == '\'' || c == '-' || c == '’') && i > 0;
        if c.is_alphabetic() || inner {
            end = i + c.len_utf8();
        } else {
            break;
        }
    }
    let word = rest[..end].trim_end_matches(['\'', '-', '’']);
    (word.chars().filter(|c| c.is_alphabetic()).count() >= 2).then_some(word)
}

static OCCUPATIONS_SORTED: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| super::numeric::sorted(OCCUPATIONS));

fn not_a_name(folded: &str) -> bool {
    flags(folded) & NOT_NAME != 0
}

fn acceptable_first(word: &str, strong: bool) -> bool {
    let mut buf = [0u8; 48];
    let Some(f) = fold::fold_small(word, &mut buf) else {
        return false;
    };
    if not_a_name(f) || (!strong && super::numeric::contains(&OCCUPATIONS_SORTED, f)) {
        return false;
    }
    if is_capitalised(word) {
        return strong || !NOUN_SUFFIXES.iter().any(|s| f.ends_with(s));
    }
    strong
}

/// Reads a name (up to four words, particles allowed between name words)
/// starting at `at`; returns its byte range and whether its first word was
/// capitalised. A capitalised name continues with capitalised words; a
/// lowercase one (accepted only after an unambiguous introduction) with at
/// most two more lowercase words.
fn read_name(text: &str, at: usize, strong: bool) -> Option<(usize, usize, bool)> {
    let first = word_at(text, at)?;
    if !acceptable_first(first, strong) {
        return None;
    }
    let capitalised = is_capitalised(first);
    // Brazilian names run long: "Enzo Gabriel Henrique da Silva Souza".
    let max_words = if capitalised { 6 } else { 3 };
    // After a capitalised first name only a few words stop the name ("Paz
    // Will Souza" is one person); after a lowercase one, any common word does.
    let name_word = |w: &str| {
        let mut buf = [0u8; 48];
        let Some(f) = fold::fold_small(w, &mut buf) else {
            return false;
        };
        if PARTICLES.contains(&f) {
            return false;
        }
        if capitalised {
            is_capitalised(w)
                && !["i", "the", "and", "und", "y", "e", "ich", "eu", "yo"].contains(&f)
                // "-- Kristina Matthews Any update?": the name ends there.
                && !CLOSERS.contains(&f)
        } else {
            !not_a_name(f) && w.chars().all(char::is_lowercase)
        }
    };
    let is_particle = |w: &str| {
        let mut buf = [0u8; 48];
        fold::fold_small(w, &mut buf).is_some_and(|f| PARTICLES.contains(&f))
    };
    let mut end = at + first.len();
    let mut words = 1;
    while words < max_words {
        let Some(next_at) = text[end..].strip_prefix(' ').map(|_| end + 1) else {
            break;
        };
        let Some(w) = word_at(text, next_at) else {
            break;
        };
        if name_word(w) {
            end = next_at + w.len();
            words += 1;
        } else if is_particle(w) {
            // "Maria da Silva": a particle counts only before another name word.
            let after = next_at + w.len();
            match text[after..]
                .strip_prefix(' ')
                .and_then(|_| word_at(text, after + 1))
            {
                Some(w2) if name_word(w2) => {
                    end = after + 1 + w2.len();
                    words += 2;
                }
                _ => break,
            }
        } else {
            break;
        }
    }
    Some((at, end, capitalised))
}

fn introductions(text: &str, folded: &Folded<'_>, cues: &[CueMatch], out: &mut Vec<PiiSpan>) {
    for m in cues {
        let Cue::Intro { strong } = m.cue else {
            continue;
        };
        let (orig_start, orig_end) = folded.original_range(m.start, m.end);
        // "me llamó ayer" (called me yesterday) folds to "me llamo".
        let phrase = &text[orig_start..orig_end];
        if phrase.contains("lamó") || phrase.contains("LAMÓ") {
            continue;
        }
        let rest = &text[orig_end..];
        let skipped = rest.len() - rest.trim_start_matches([' ', ':', ',']).len();
        if skipped == 0 || skipped > 3 {
            continue;
        }
        if let Some((s, e, capitalised)) = read_name(text, orig_end + skipped, strong) {
            let score = match (strong, capitalised) {
                (true, true) => 0.9,
                (true, false) => 0.75,
                _ => 0.7,
            };
            out.push(PiiSpan::new(PiiType::Name, s, e, score));
        }
    }
}

/// Whether only closing punctuation and spaces remain before the end of the
/// line (or text) at `at`.
fn ends_line(text: &str, at: usize) -> bool {
    text[at..]
        .chars()
        .take_while(|&c| c != '\n' && c != '\r')
        .all(|c| c == ' ' || c == '.' || c == '!' || c == '\t')
}

/// Whether only closing punctuation and whitespace remain in the text.
fn ends_text(text: &str, at: usize) -> bool {
    text[at..]
        .chars()
        .all(|c| c.is_whitespace() || matches!(c, '.' | '!' | ':' | ')'))
}

fn sign_offs(text: &str, folded: &Folded<'_>, cues: &[CueMatch], out: &mut Vec<PiiSpan>) {
    for m in cues {
        if m.cue != Cue::SignOff {
            continue;
        }
        let (_, orig_end) = folded.original_range(m.start, m.end);
        let rest = &text[orig_end..];
        let after_punct = rest.trim_start_matches([',', '!', '.', ' ', ':']);
        let after_space = after_punct.trim_start_matches(|c: char| c.is_whitespace());
        // At most one line break between the sign-off and the name.
        let gap = &rest[..rest.len() - after_space.len()];
        if gap.is_empty() || gap.matches('\n').count() > 1 {
            continue;
        }
        let after_dash = after_space.trim_start_matches(['-', '–', '—', ' ']);
        let at = text.len() - after_dash.len();
        if let Some((s, e, true)) = read_name(text, at, false) {
            if ends_line(text, e) {
                out.push(PiiSpan::new(PiiType::Name, s, e, 0.8));
                continue;
            }
        }
        // A lowercase name counts only when it closes the whole message.
        if let Some((s, e, false)) = read_name(text, at, true) {
            if ends_text(text, e) {
                out.push(PiiSpan::new(PiiType::Name, s, e, 0.6));
            }
        }
    }
}

/// "…thanks for your help!\n— Maria Souza": a last line made only of a name,
/// under a line that closes with a comma or a sign-off word.
fn closing_line(text: &str, out: &mut Vec<PiiSpan>) {
    let trimmed = text.trim_end();
    let Some(nl) = trimmed.rfind('\n') else {
        return;
    };
    let last = &trimmed[nl + 1..];
    let prev = trimmed[..nl].trim_end();
    let prev_folded = fold::fold_str(prev.rsplit('\n').next().unwrap_or(prev));
    let closes = prev.ends_with(',')
        || SIGN_OFFS
            .iter()
            .any(|s| prev_folded.trim_end_matches(['!', '.']).ends_with(s));
    if !closes {
        return;
    }
    let lead = last.len() - last.trim_start_matches(['-', '–', '—', ' ']).len();
    let at = nl + 1 + lead;
    if let Some((s, e, true)) = read_name(text, at, false) {
        if ends_line(text, e) {
            out.push(PiiSpan::new(PiiType::Name, s, e, 0.7));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(text: &'a str, known: &KnownEntities) -> Vec<&'a str> {
        let mut out = Vec::new();
        let folded = Folded::new(text);
        detect(
            text,
            &folded,
            &crate::guardrails::pii::cue_matches(&folded),
            known,
            &mut out,
        );
        crate::guardrails::pii::resolve_overlaps(out)
            .iter()
            .map(|s| &text[s.start..s.end])
            .collect()
    }

    #[test]
    fn introductions_in_four_languages_find_the_name() {
        let none = KnownEntities::default();
        assert_eq!(
            names("Hi, my name is John Smith and I need help", &none),
            vec!["John Smith"]
        );
        assert_eq!(
            names("Olá, meu nome é Ana Paula da Silva.", &none),
            vec!["Ana Paula da Silva"]
        );
        assert_eq!(names("Hola, me llamo Lucía", &none), vec!["Lucía"]);
        assert_eq!(
            names("Hallo, ich heiße Jürgen Müller", &none),
            vec!["Jürgen Müller"]
        );
    }

    #[test]
    fn capitalised_nouns_are_not_names() {
        let none = KnownEntities::default();
        assert!(names("Meine Bestellung ist nicht angekommen", &none).is_empty());
        assert!(names("Ich bin Kunde seit 2019", &none).is_empty());
        assert!(names("I am Brazilian and I am Not happy", &none).is_empty());
    }

    #[test]
    fn crm_names_match_without_case_or_accents() {
        let known = KnownEntities::new().with_name("João Araújo");
        assert_eq!(
            names("falei com JOAO ontem, o joão araujo disse", &known),
            vec!["JOAO", "joão araujo"]
        );
    }

    #[test]
    fn sign_offs_take_the_name_at_the_end_of_the_line() {
        let none = KnownEntities::default();
        assert_eq!(
            names("Help please.\nObrigado,\nMarcos", &none),
            vec!["Marcos"]
        );
        assert_eq!(names("Danke, das hilft", &none), Vec::<&str>::new());
    }
}
