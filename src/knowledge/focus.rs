//! What to search the knowledge base for: the customer's question, not the pleasantries and
//! personal details around it. "Hi, I'm Maria Souza, my email is maria@example.com. How long do
//! I have to return an item?" is a question about returns; searched whole, the greeting, the
//! name and the address (or their placeholders, `[PERSON_1]`) dilute it until nothing matches
//! well enough, and the customer waits for a person to answer what the help center already
//! says.
//!
//! The text is cut into clauses (at sentence ends, commas and semicolons). A clause that is
//! only a greeting, a thanks, an introduction ("I'm …", "my name is …") or contact details
//! ("my e-mail is …", a bare address, number or placeholder) is left out; the rest, context
//! and question alike ("My order arrived damaged. What can I do?"), is searched. A message with
//! nothing else left is searched as it is. English, Portuguese, Spanish and German, the languages the runtime answers in.

/// Greetings, thanks and courtesy words: a clause made only of these says nothing to search for.
const COURTESY: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "hiya",
    "dear",
    "good",
    "morning",
    "afternoon",
    "evening",
    "day",
    "thanks",
    "thank",
    "you",
    "so",
    "much",
    "very",
    "in",
    "advance",
    "please",
    "team",
    "there",
    "all",
    "everyone",
    "support",
    "cheers",
    "regards",
    "best",
    "kind",
    "greetings",
    "olá",
    "ola",
    "oi",
    "bom",
    "boa",
    "dia",
    "tarde",
    "noite",
    "obrigado",
    "obrigada",
    "muito",
    "desde",
    "já",
    "pessoal",
    "tudo",
    "bem",
    "prezados",
    "prezado",
    "prezada",
    "att",
    "atenciosamente",
    "hola",
    "buenos",
    "buenas",
    "días",
    "dias",
    "noches",
    "gracias",
    "muchas",
    "saludos",
    "estimado",
    "estimados",
    "hallo",
    "guten",
    "tag",
    "morgen",
    "abend",
    "moin",
    "servus",
    "danke",
    "vielen",
    "dank",
    "schön",
    "schon",
    "grüße",
    "grüezi",
    "liebe",
    "lieber",
    "sehr",
    "geehrte",
    "geehrter",
    "damen",
    "und",
    "herren",
    "and",
    "e",
    "y",
    "a",
    "o",
    "the",
    "to",
    "for",
    "by",
    "de",
    "da",
    "do",
    "im",
    "voraus",
];

/// How a clause that introduces the writer begins; it is an introduction when a name follows
/// ("I'm Maria Souza"), not when something else does ("I'm unable to log in").
const NAME_INTROS: &[&str] = &[
    "i'm ",
    "i am ",
    "im ",
    "my name is ",
    "my name's ",
    "this is ",
    "aqui é ",
    "aqui e ",
    "sou ",
    "sou o ",
    "sou a ",
    "eu sou ",
    "eu sou o ",
    "eu sou a ",
    "meu nome é ",
    "meu nome e ",
    "me chamo ",
    "soy ",
    "me llamo ",
    "mi nombre es ",
    "ich bin ",
    "mein name ist ",
    "hier ist ",
    "hier spricht ",
];

/// How a clause that gives the writer's details begins: whatever follows is a value.
const CONTACT_INTROS: &[&str] = &[
    "my email is ",
    "my e-mail is ",
    "my email address is ",
    "my e-mail address is ",
    "my phone is ",
    "my phone number is ",
    "my number is ",
    "my mobile is ",
    "my cell is ",
    "you can reach me at ",
    "reach me at ",
    "call me at ",
    "email me at ",
    "meu email é ",
    "meu e-mail é ",
    "meu email e ",
    "meu e-mail e ",
    "meu telefone é ",
    "meu celular é ",
    "meu número é ",
    "meu whatsapp é ",
    "mi correo es ",
    "mi email es ",
    "mi e-mail es ",
    "mi teléfono es ",
    "mi número es ",
    "mi celular es ",
    "meine e-mail ist ",
    "meine email ist ",
    "meine e-mail-adresse ist ",
    "meine telefonnummer ist ",
    "meine nummer ist ",
    "meine handynummer ist ",
];

/// The part of `text` to search the knowledge base for.
pub fn question(text: &str) -> String {
    let sentences = sentences(text);
    let kept: Vec<String> = sentences
        .iter()
        .filter_map(|sentence| {
            let clauses: Vec<&str> = sentence
                .split([',', ';'])
                .map(str::trim)
                .filter(|c| !c.is_empty() && !is_noise(c))
                .collect();
            (!clauses.is_empty()).then(|| clauses.join(", "))
        })
        .collect();
    let focus = kept.join(" ");
    if focus.trim().is_empty() {
        text.to_string()
    } else {
        focus
    }
}

/// The sentences of `text`, without their closing marks.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let end = match c {
            '?' | '!' | '\n' => true,
            // A full stop ends a sentence only before a space or the end: not in an address
            // (`maria@example.com`), a number (`1.5`) or an abbreviation glued to a word.
            '.' => chars.peek().is_none_or(|n| n.is_whitespace()),
            _ => false,
        };
        if c != '\n' {
            current.push(c);
        }
        if end {
            let sentence = current
                .trim()
                .trim_end_matches(['.', '!', '?'])
                .trim()
                .to_string();
            if !sentence.is_empty() {
                out.push(sentence);
            }
            current.clear();
        }
    }
    let rest = current.trim().to_string();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// A clause with nothing to search for: courtesy words, an introduction by name or contact
/// details, or values (an address, a number, a placeholder) alone.
fn is_noise(clause: &str) -> bool {
    let clause = clause.trim_start_matches(['¿', '¡', '-', '–', '—', ' ']);
    let lower = clause.to_lowercase();
    if CONTACT_INTROS.iter().any(|p| lower.starts_with(p)) {
        return true;
    }
    // The longest introduction that fits ("eu sou o " before "eu sou "), then a name.
    let intro = NAME_INTROS
        .iter()
        .filter(|p| lower.starts_with(*p))
        .map(|p| p.chars().count())
        .max();
    if let Some(len) = intro {
        let rest: String = clause.chars().skip(len).collect();
        if is_name(&rest) {
            return true;
        }
    }
    lower
        .split(|c: char| c.is_whitespace() || matches!(c, '!' | ':' | '(' | ')' | '"'))
        .filter(|w| !w.is_empty())
        .all(|w| is_courtesy(w) || is_value(w))
}

/// One to five capitalised words ("Maria Souza", "Lavínia de Alves"), or a placeholder.
fn is_name(text: &str) -> bool {
    let capital = |w: &&str| w.chars().next().is_some_and(char::is_uppercase) || is_value(w);
    let words: Vec<&str> = text.split_whitespace().collect();
    (1..=5).contains(&words.len())
        && words.iter().any(capital)
        && words.iter().all(|w| {
            capital(w)
                || [
                    "da", "de", "do", "dos", "das", "van", "von", "der", "del", "la", "e", "y",
                ]
                .contains(w)
        })
}

fn is_courtesy(word: &str) -> bool {
    COURTESY.contains(&word.trim_matches(|c: char| !c.is_alphanumeric() && c != '\''))
}

/// A value rather than a word: an e-mail address, something with digits (a phone number, an
/// order number), or a placeholder such as `[EMAIL_1]`.
fn is_value(word: &str) -> bool {
    let w = word.trim_matches(|c: char| matches!(c, '.' | ','));
    (w.starts_with('[') && w.ends_with(']'))
        || w.contains('@')
        || (w.chars().any(|c| c.is_ascii_digit())
            && w.chars().all(|c| c.is_ascii_digit() || "+-./".contains(c)))
}

#[cfg(test)]
mod tests {
    use super::question;

    #[test]
    fn the_question_is_searched_without_the_greeting_the_name_and_the_address() {
        assert_eq!(
            question("Hi, I'm Maria Souza, my email is maria@example.com. How long do I have to return an item?"),
            "How long do I have to return an item"
        );
        assert_eq!(
            question(
                "Hi, I'm [PERSON_1], my email is [EMAIL_1]. How long do I have to return an item?"
            ),
            "How long do I have to return an item"
        );
        assert_eq!(
            question("Olá, bom dia! Meu nome é Lavínia Alves. Qual é o prazo para devolução?"),
            "Qual é o prazo para devolução"
        );
        assert_eq!(
            question(
                "Hallo, ich bin Annelene Wernecke. Wie lange dauert der Versand nach Österreich?"
            ),
            "Wie lange dauert der Versand nach Österreich"
        );
    }

    #[test]
    fn the_context_around_a_question_is_kept() {
        assert_eq!(
            question("Hello there, my parcel arrived broken. What can I do? Thanks!"),
            "my parcel arrived broken What can I do"
        );
        assert_eq!(
            question("Hola, mi pedido 48213 no ha llegado"),
            "mi pedido 48213 no ha llegado"
        );
    }

    #[test]
    fn a_message_of_pleasantries_alone_is_searched_as_it_is() {
        assert_eq!(question("Hi, thanks!"), "Hi, thanks!");
        assert_eq!(question("   "), "   ");
        assert_eq!(question(""), "");
    }

    #[test]
    fn an_introduction_that_asks_is_kept() {
        assert_eq!(
            question("I'm wondering whether you ship to Portugal"),
            "I'm wondering whether you ship to Portugal"
        );
        assert_eq!(
            question("Hi, I am unable to log in, this is urgent"),
            "I am unable to log in, this is urgent"
        );
        assert_eq!(
            question("Good morning. The invoice says 1.5 kg, is that right?"),
            "The invoice says 1.5 kg, is that right"
        );
    }
}
