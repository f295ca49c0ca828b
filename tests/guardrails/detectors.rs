//! Detector behaviour per type, in the four languages, with the distractors
//! that must stay untouched.

use custodian::guardrails::{
    detect_all, evaluate, Context, FindingKind, KnownEntities, PiiType, Policy, Stage,
};

fn found(text: &str) -> Vec<(PiiType, String)> {
    detect_all(text)
        .into_iter()
        .map(|s| (s.kind, text[s.start..s.end].to_string()))
        .collect()
}

fn assert_finds(kind: PiiType, cases: &[(&str, &str)]) {
    for (text, value) in cases {
        assert_eq!(found(text), vec![(kind, value.to_string())], "in {text:?}");
    }
}

fn assert_clean(cases: &[&str]) {
    for text in cases {
        assert_eq!(found(text), vec![], "in {text:?}");
    }
}

#[test]
fn emails_are_found_in_running_text() {
    assert_finds(
        PiiType::Email,
        &[
            (
                "write to ana.souza+loja@empresa.com.br.",
                "ana.souza+loja@empresa.com.br",
            ),
            ("Meine E-Mail: JUERGEN@WEB.DE", "JUERGEN@WEB.DE"),
            ("correo: lucía@correo.es, gracias", "lucía@correo.es"),
        ],
    );
    assert_clean(&["@home later", "user@localhost", "a@b.c"]);
}

#[test]
fn phones_of_our_eight_countries_and_e164_are_found() {
    assert_finds(
        PiiType::Phone,
        &[
            ("meu whatsapp é (11) 98765-4321", "(11) 98765-4321"),
            ("liga 11 9 8765-4321", "11 9 8765-4321"),
            ("call +1 (415) 555-2671 now", "+1 (415) 555-2671"),
            ("or 415.555.2671", "415.555.2671"),
            ("Handy 0151 23456789", "0151 23456789"),
            ("Tel. +49 (0)30 1234567", "+49 (0)30 1234567"),
            ("appelez le 06 12 34 56 78", "06 12 34 56 78"),
            ("llámame al 612 34 56 78", "612 34 56 78"),
            ("ligue 912 345 678", "912 345 678"),
            ("chiama il 347 123 4567", "347 123 4567"),
            ("ring 07911 123456", "07911 123456"),
            ("ring +44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
            ("E.164 +819012345678 ok", "+819012345678"),
        ],
    );
}

#[test]
fn short_landlines_need_a_phone_word_or_their_area_code_apart() {
    assert_finds(
        PiiType::Phone,
        &[
            ("Tel. 089 12345", "089 12345"),
            ("erreichbar unter 089/123456", "089/123456"),
            ("ruf an: (030) 123456", "(030) 123456"),
            ("Festnetz 0221-12345", "0221-12345"),
            ("Telefon 03012345", "03012345"),
            ("chiamami allo 0521 12345", "0521 12345"),
            ("telefono 06 123456", "06 123456"),
        ],
    );
    assert_clean(&[
        // No phone word and no trunk zero written apart.
        "bitte 8912345 prüfen",
        "Kundennummer 089 12345",
        "Bestellung 089-12345",
        "CEP 01310-100",
        "zip 01234-5678",
        "PLZ 01067 Dresden",
        "am 01.03.2024",
        "um 08 15 Uhr",
        "0,99 € pro Stück",
        "Artikel 03012345",
        "Raum 12 345",
    ]);
}

#[test]
fn numbers_that_only_look_like_phones_stay_untouched() {
    assert_clean(&[
        "order #4155552671",
        "pedido 11987654321 atrasado",
        "Bestellnummer 0301234567",
        "Sendungsnummer 015123456789",
        "tracking 1Z999AA10123456784",
        "rastreio BR123456789BR",
        "on 12/03/2024 at 14:30",
        "am 12.03.2024",
        "R$ 1.234.567,89",
        "$1,234,567.89",
        "1.234,56 €",
        "CEP 01310-100",
        "PLZ 10115",
        "version 1.2.3",
        "3x 250ml",
    ]);
}

#[test]
fn references_phrased_otherwise_or_far_from_their_keyword_stay_untouched() {
    assert_clean(&[
        "the order I placed on Monday has the number 8140502178",
        "my order from last week, number 91184401772",
        "meine Bestellung vom Montag hat die Nummer 3828435655",
        "o pedido que fiz ontem tem o número 38977540679",
        "el pedido que hice ayer tiene el número 2420198973",
        "invoice INV-3585045589",
        "Rechnung RE-2023-123456",
        "factura FAC-5476550539",
        "protocolo de atendimento 5130565256",
        "case ID 6945861636",
        "nº de incidencia 15707185304",
        "Aktenzeichen 5440059938",
        "Protokoll 2822322369",
        "RMA 2125550132",
    ]);
    // A possessive, a contact word or a sentence break keeps a phone a phone.
    assert_finds(
        PiiType::Phone,
        &[
            ("my order is late, my number is 11987654321", "11987654321"),
            (
                "Pedido atrasado, me liga no número 11987654321",
                "11987654321",
            ),
            (
                "Order 4711 is late. The number 2125550132 is mine",
                "2125550132",
            ),
            (
                "Meine Bestellung ist weg, erreichbar unter der Nummer 015123456789",
                "015123456789",
            ),
            ("the order I placed, phone number 2125550132", "2125550132"),
            ("Tel-0301234567", "0301234567"),
        ],
    );
}

#[test]
fn cards_of_every_brand_pass_luhn_in_any_grouping() {
    assert_finds(
        PiiType::Card,
        &[
            ("visa 4111 1111 1111 1111", "4111 1111 1111 1111"),
            ("mc 5500-0000-0000-0004", "5500-0000-0000-0004"),
            ("mc2 2223003122003222", "2223003122003222"),
            ("amex 3782 822463 10005", "3782 822463 10005"),
            ("elo 6362 9700 0045 7013", "6362 9700 0045 7013"),
            ("discover 6011111111111117", "6011111111111117"),
            ("jcb 3530 1113 3330 0000", "3530 1113 3330 0000"),
            ("mir 2200 1022 4807 8782", "2200 1022 4807 8782"),
            ("mir 2204053735906751", "2204053735906751"),
            ("mir 2201529361517015483", "2201529361517015483"),
            ("rupay 6521 2169 1660 3748", "6521 2169 1660 3748"),
            ("rupay 8112-0823-5501-3844", "8112-0823-5501-3844"),
            ("rupay 8216290508011152", "8216290508011152"),
            ("rupay 5081 4681 3124 8270", "5081 4681 3124 8270"),
            ("rupay 3561974792972458", "3561974792972458"),
            ("troy 9792 4372 8754 4966", "9792 4372 8754 4966"),
        ],
    );
    // A Luhn failure or a non-card prefix is no card.
    assert_clean(&[
        "card 4111 1111 1111 1112",
        "id 9111 1111 1111 1116",
        // Luhn-valid, but outside Mir (2200-2204) and Troy (9792).
        "id 2205 1540 9494 1006",
        "id 9793 3783 7109 4881",
    ]);
}

#[test]
fn ibans_need_their_country_length_and_mod_97() {
    assert_finds(
        PiiType::Iban,
        &[
            (
                "IBAN DE89 3704 0044 0532 0130 00.",
                "DE89 3704 0044 0532 0130 00",
            ),
            ("iban GB82WEST12345698765432", "GB82WEST12345698765432"),
            (
                "conta PT50000201231234567890154",
                "PT50000201231234567890154",
            ),
        ],
    );
    assert_clean(&[
        "DE89 3704 0044 0532 0130 01",
        "DE89 3704 0044 0532 0130 0012",
        "XDE89370400440532013000",
        "DE8937040044053201300",
    ]);
}

#[test]
fn ssns_with_invalid_area_group_or_serial_are_refused() {
    assert_finds(
        PiiType::Ssn,
        &[
            ("SSN 123-45-6789", "123-45-6789"),
            ("my SSN is 123456789", "123456789"),
        ],
    );
    assert_clean(&[
        "SSN 000-12-3456",
        "SSN 666-12-3456",
        "SSN 901-12-3456",
        "SSN 123-00-4567",
        "SSN 123-45-0000",
    ]);
}

#[test]
fn cpf_and_cnpj_need_their_check_digits_including_the_alphanumeric_cnpj() {
    assert_finds(
        PiiType::Cpf,
        &[
            ("CPF 529.982.247-25", "529.982.247-25"),
            ("cpf 52998224725", "52998224725"),
        ],
    );
    assert_finds(
        PiiType::Cnpj,
        &[
            ("CNPJ 11.222.333/0001-81", "11.222.333/0001-81"),
            ("cnpj 11222333000181", "11222333000181"),
            ("novo CNPJ 12.ABC.345/01DE-35", "12.ABC.345/01DE-35"),
            ("compacto 12ABC34501DE35", "12ABC34501DE35"),
        ],
    );
    assert_clean(&[
        "CPF 529.982.247-24",
        "CPF 111.111.111-11",
        "CNPJ 12.ABC.345/01DE-36",
    ]);
}

#[test]
fn ip_addresses_v4_and_v6_are_found() {
    assert_finds(
        PiiType::Ip,
        &[
            ("server 192.168.0.12 down", "192.168.0.12"),
            ("from 2001:db8::8a2e:370:7334.", "2001:db8::8a2e:370:7334"),
            (
                "link-local fe80::1ff:fe23:4567:890a",
                "fe80::1ff:fe23:4567:890a",
            ),
        ],
    );
    assert_clean(&[
        "at 10:30:15",
        "version 1.2.3.4.5",
        "256.1.1.1",
        "std::io::Result",
    ]);
}

#[test]
fn ipv6_glued_to_a_label_is_found_and_times_stay_text() {
    assert_finds(
        PiiType::Ip,
        &[
            ("IP:2001:db8::1", "2001:db8::1"),
            ("ipv6:fe80::1 geht nicht", "fe80::1"),
            (
                "my IPv6:2001:db8:85a3::8a2e:370:7334.",
                "2001:db8:85a3::8a2e:370:7334",
            ),
            ("IPv6-Adresse:2001:db8::42", "2001:db8::42"),
            ("IP :2001:db8::1", "2001:db8::1"),
            ("addr=fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"),
        ],
    );
    assert_clean(&[
        "um 10:30",
        "at 10:30:15",
        "Zeit:10:30",
        "Uhrzeit:10:30:15 bitte",
        "ratio ab:cd",
        "ab:cd:ef",
        "label:ab:cd",
        "std::io::Result",
        "Foo::bar::baz",
    ]);
}

#[test]
fn secrets_are_found_by_prefix_keyword_and_entropy() {
    assert_finds(
        PiiType::Secret,
        &[
            (
                "key sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            ),
            (
                "token ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5",
                "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5",
            ),
            ("AKIAIOSFODNN7EXAMPLE leaked", "AKIAIOSFODNN7EXAMPLE"),
            ("minha senha: batata123", "batata123"),
            ("mein Passwort ist Sommer2024!", "Sommer2024!"),
            (
                "here: 9fKx2LmQ8vRt4ZpW7sYb3NcH6dJe1Ga",
                "9fKx2LmQ8vRt4ZpW7sYb3NcH6dJe1Ga",
            ),
        ],
    );
    assert_clean(&[
        "my password is wrong",
        "the token expired",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "Donaudampfschifffahrtsgesellschaftskapitän",
    ]);
}

/// A bare 32-, 40- or 64-character hex string is taken as a key even with
/// no word around it: masking a harmless hash costs little, letting a key
/// through does not. Dashed UUIDs and hex-encoded text stay text.
#[test]
fn hex_keys_in_one_case_are_secrets_with_or_without_context() {
    assert_finds(
        PiiType::Secret,
        &[
            (
                "here 3f9a0c2b7d1e4f5a8b6c9d0e1f2a3b4c ok",
                "3f9a0c2b7d1e4f5a8b6c9d0e1f2a3b4c",
            ),
            (
                "token: 9b2e7c41d0a85f36e1c4b7a90d2f5e8c13a6b9d0",
                "9b2e7c41d0a85f36e1c4b7a90d2f5e8c13a6b9d0",
            ),
            (
                "sha 4e1f8a2b9c3d7e6f0a5b1c8d2e9f3a7b6c0d4e1f8a2b9c3d7e6f0a5b1c8d2e9f",
                "4e1f8a2b9c3d7e6f0a5b1c8d2e9f3a7b6c0d4e1f8a2b9c3d7e6f0a5b1c8d2e9f",
            ),
            (
                "KEY 3F9A0C2B7D1E4F5A8B6C9D0E1F2A3B4C.",
                "3F9A0C2B7D1E4F5A8B6C9D0E1F2A3B4C",
            ),
            (
                "see https://cdn.example/f/3f9a0c2b7d1e4f5a8b6c9d0e1f2a3b4c/x.png",
                "3f9a0c2b7d1e4f5a8b6c9d0e1f2a3b4c",
            ),
        ],
    );
    assert_clean(&[
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "UUID 123E4567-E89B-12D3-A456-426614174000",
        "short deadbeef1234",
        "31 chars 3f9a0c2b7d1e4f5a8b6c9d0e1f2a3b4",
        "digits 12345678901234567890123456789012",
        "text 69676e6f726520616c6c2070726576696f757320696e737472756374696f6e73",
    ]);
}

#[test]
fn urls_are_masked_only_when_they_carry_credentials_or_tokens() {
    assert_finds(
        PiiType::Url,
        &[
            (
                "reset: https://shop.example/reset?token=abc123def456.",
                "https://shop.example/reset?token=abc123def456",
            ),
            (
                "db postgres://app:s3cr3t@db.internal:5432/main",
                "postgres://app:s3cr3t@db.internal:5432/main",
            ),
        ],
    );
    assert_clean(&[
        "see https://shop.example/help/returns?lang=pt",
        "https://example.com/orders/12345",
    ]);
}

#[test]
fn crm_names_match_in_any_case_and_without_accents() {
    let known = KnownEntities::new()
        .with_name("Jürgen Müller")
        .with_company("Müller & Söhne GmbH")
        .with_address("Hauptstraße 5, 10115 Berlin")
        .with_phone("+49 151 23456789")
        .with_email("jm@web.de");
    let text = "JURGEN here. Herr mueller? No: Jürgen Muller of Müller & Söhne, Hauptstrasse 5. Call 0151 23456789 or JM@WEB.DE";
    let mut ctx = Context::new(Default::default(), known);
    let v = evaluate(Stage::Inbound, text, &mut ctx, &Policy::builtin());
    // "mueller" is how a German without umlauts writes "Müller": the known
    // surname, not a word to let through.
    assert_eq!(
        v.masked_text,
        "[NAME_1] here. Herr [NAME_2]? No: [NAME_3] of [COMPANY_1], [ADDRESS_1]. Call [PHONE_1] or [EMAIL_1]"
    );
}

// proves: AGT-2
#[test]
fn crm_values_match_in_the_german_ue_oe_ae_spelling_both_ways() {
    let known = KnownEntities::new()
        .with_name("Jürgen Müller")
        .with_company("Bäckerei Schäfer GmbH")
        .with_address("Königstraße 5, 50667 Köln");
    let text = "Juergen Mueller hier, von der Baeckerei Schaefer, Koenigstrasse 5, 50667 Koeln.";
    let mut ctx = Context::new(Default::default(), known);
    let v = evaluate(Stage::Inbound, text, &mut ctx, &Policy::builtin());
    assert_eq!(
        v.masked_text,
        "[NAME_1] hier, von der [COMPANY_1], [ADDRESS_1]."
    );
    // A CRM value typed without umlauts still catches the umlaut spelling.
    let known = KnownEntities::new().with_name("Juergen Mueller");
    let mut ctx = Context::new(Default::default(), known);
    let v = evaluate(
        Stage::Inbound,
        "Hallo, hier ist Jürgen. Herr Müller bittet um Rückruf.",
        &mut ctx,
        &Policy::builtin(),
    );
    assert_eq!(
        v.masked_text,
        "Hallo, hier ist [NAME_1]. Herr [NAME_2] bittet um Rückruf."
    );
}

#[test]
fn self_introductions_in_four_languages_are_names() {
    assert_finds(
        PiiType::Name,
        &[
            (
                "Hi, my name is Sarah Connor and my order is late",
                "Sarah Connor",
            ),
            ("hello, my name is sarah connor, order late", "sarah connor"),
            ("I'm Tom from the bakery", "Tom"),
            (
                "Olá, meu nome é Ana Paula dos Santos.",
                "Ana Paula dos Santos",
            ),
            ("me chamo joão", "joão"),
            ("Hola, me llamo José Luis", "José Luis"),
            ("mi nombre es María", "María"),
            ("Guten Tag, ich heiße Jürgen.", "Jürgen"),
            ("Mein Name ist Anna-Lena Groß", "Anna-Lena Groß"),
            ("Hier ist Klaus", "Klaus"),
        ],
    );
}

#[test]
fn sign_offs_in_four_languages_are_names() {
    assert_finds(
        PiiType::Name,
        &[
            ("Where is it?\nThanks,\nEmily", "Emily"),
            ("Cadê?\nObrigado,\nMarcos Vinícius", "Marcos Vinícius"),
            ("¿Dónde está?\nSaludos,\nLucía", "Lucía"),
            ("Wo bleibt es?\nViele Grüße\nHans Müller", "Hans Müller"),
            ("Wo bleibt es?\nMit freundlichen Grüßen,\nHans", "Hans"),
            ("help pls\nthanks\nmaria", "maria"),
        ],
    );
}

#[test]
fn capitalised_ordinary_words_are_not_names() {
    assert_clean(&[
        "Meine Bestellung ist nicht angekommen.",
        "Ich bin Kunde seit 2019 und Ich bin Enttäuscht.",
        "Hier ist Bestellung 4711",
        "This is Urgent!",
        "I am Brazilian.",
        "Thanks, that helped a lot!",
        "Obrigado, Atendimento Excelente pela Ajuda",
        "Danke, die Lieferung kam",
    ]);
}

#[test]
fn occupations_after_a_weak_introduction_are_not_names() {
    assert_clean(&[
        "Ich bin Lehrer und brauche eine Rechnung.",
        "Ich bin Lehrerin an einer Grundschule.",
        "Hallo, ich bin Ingenieur bei einem Zulieferer.",
        "Soy Profesor y necesito la factura.",
        "Soy Abogada, escribo por un pedido.",
        "Oi, sou Engenheiro e preciso da nota.",
        "Eu sou Professora na escola.",
        "I'm Manager of a small shop.",
        "I am Teacher at the local school",
    ]);
    // The name after the role, or after an unambiguous introduction, still counts.
    assert_finds(
        PiiType::Name,
        &[
            ("Ich bin Lehrer, mein Name ist Jonas Weber", "Jonas Weber"),
            ("Soy profesora, me llamo Lucía", "Lucía"),
        ],
    );
    // "Schneider" after "Ich bin" is a surname here; the full name after it
    // is found on its own as a listed first name with a surname.
    assert_eq!(
        found("Ich bin Schneider, Klaus Schneider"),
        vec![
            (PiiType::Name, "Schneider".to_string()),
            (PiiType::Name, "Klaus Schneider".to_string())
        ]
    );
}

#[test]
fn every_finding_reports_the_pii_type_in_json_as_its_label() {
    let v = evaluate(
        Stage::Inbound,
        "a@b.io",
        &mut Context::default(),
        &Policy::builtin(),
    );
    assert_eq!(v.findings[0].kind, FindingKind::Pii(PiiType::Email));
    assert_eq!(
        serde_json::to_value(&v.findings[0]).unwrap()["type"],
        "EMAIL"
    );
}

#[test]
fn phone_numbers_of_the_generated_corpus_are_valid_for_libphonenumber_itself() {
    // The corpus draws phones through libphonenumber's full validator; this
    // checks our fast validator agrees on every one of them.
    let samples = crate::corpus::generate(7, 4000);
    let mut checked = 0;
    for s in &samples {
        for span in s
            .spans
            .iter()
            .filter(|l| l.category == crate::corpus::Category::Phone)
        {
            let value = &s.text[span.start..span.end];
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            let ours = if value.starts_with('+') {
                custodian::guardrails::pii::phone_is_valid(&digits, true)
            } else if let Some(rest) = digits.strip_prefix("00") {
                custodian::guardrails::pii::phone_is_valid(rest, true)
            } else {
                custodian::guardrails::pii::phone_is_valid(&digits, false)
            };
            assert!(ours, "libphonenumber accepts {value:?}, we do not");
            checked += 1;
        }
    }
    assert!(checked > 500);
}

// Issue 18: the classes of misses found on messages written elsewhere.

#[test]
fn cards_of_every_issuer_range_are_found_in_any_grouping_with_or_without_a_card_word() {
    assert_finds(
        PiiType::Card,
        &[
            (
                "my credit card number is 3589 1234 5678 9018",
                "3589 1234 5678 9018",
            ),
            ("jcb 3530111333300000 pls", "3530111333300000"),
            // JCB's original 15-digit ranges.
            ("card 180001234567899 ok", "180001234567899"),
            ("charged on 2131-0000-0000-001", "2131-0000-0000-001"),
            // 12-digit Maestro: grouped, or compact with a card word around.
            ("the charge on 6763 7881 5093 is not mine", "6763 7881 5093"),
            (
                "Can you refund to 676319646029? It's the same card I used.",
                "676319646029",
            ),
        ],
    );
    assert_clean(&[
        // Luhn-valid 12 digits with nothing card-like about them.
        "Tracking says 378779407451 but UPS has no record.",
        "order 676319646029",
    ]);
}

#[test]
fn checksum_valid_cpf_and_cnpj_after_a_fiscal_document_word_are_still_found() {
    assert_finds(
        PiiType::Cpf,
        &[
            ("Quero a nota no 52998224725, por favor.", "52998224725"),
            ("nota para 52998224725", "52998224725"),
            ("Emitam a nota fiscal com o 52998224725", "52998224725"),
            ("O cadastro está com 529982247-25", "529982247-25"),
        ],
    );
    assert_finds(
        PiiType::Cnpj,
        &[("nota para 11222333000181, obrigado", "11222333000181")],
    );
    // An order word still wins over a checksum it happens to pass.
    assert_clean(&["pedido 52998224725 atrasado"]);
}

#[test]
fn ssns_compact_or_spaced_are_found_by_their_structure_and_the_words_around() {
    assert_finds(
        PiiType::Ssn,
        &[
            ("You can verify me with 123456789", "123456789"),
            ("The form had 219099999 on it", "219099999"),
            ("I entered 123 45 6789 in the tax form", "123 45 6789"),
            ("ssn 123 45 6789", "123 45 6789"),
        ],
    );
    assert_clean(&[
        // Invalid area, group or serial.
        "verify me with 666123456",
        "the tax form had 900 12 3456",
        "verify me with 123 00 6789",
    ]);
}

#[test]
fn phones_are_found_as_people_and_fake_data_libraries_write_them() {
    assert_finds(
        PiiType::Phone,
        &[
            ("call 206.269.0743x9150 today", "206.269.0743x9150"),
            ("call +1-780-563-6083 x 7783.", "+1-780-563-6083 x 7783"),
            ("tel 415-555-2671 ext. 12, thanks", "415-555-2671 ext. 12"),
            (
                "liga no (11) 3456-7890 ramal 123",
                "(11) 3456-7890 ramal 123",
            ),
            ("or 001-248-323-5762x20519", "001-248-323-5762x20519"),
            ("ruf an: 00 49 151 23456789", "00 49 151 23456789"),
            ("+1-992-378-4364 is mine", "+1-992-378-4364"),
            ("whats 77 9056-6615", "77 9056-6615"),
            ("me liga (11) 91234-5678", "(11) 91234-5678"),
            ("mobil +49 1512 3456789", "+49 1512 3456789"),
            ("Telefon +49(0) 901915084", "+49(0) 901915084"),
            ("ich habe von (03449) 78690 aus angerufen", "(03449) 78690"),
            ("my cell is 9688546251, text me", "9688546251"),
            ("Update my number to 7983370366 please", "7983370366"),
            ("Bitte rufen Sie 04694191339 an", "04694191339"),
        ],
    );
}

#[test]
fn clock_times_and_timestamps_next_to_dates_are_not_phones() {
    assert_clean(&[
        "the line dropped at 2026-04-26 05:08:31",
        "crashed at 06/09/2026 18:39 again",
        "Last update: 1779835556.",
        "O app travou às 1773576252 de ontem.",
        "Order 4711: 3x at 14:30",
    ]);
}

#[test]
fn names_are_found_anywhere_in_a_sentence_not_only_after_an_introduction() {
    assert_finds(
        PiiType::Name,
        &[
            (
                "I'm writing on behalf of my mother, Jennifer Gay, who can't",
                "Jennifer Gay",
            ),
            ("transfira a conta para Lavínia Alves", "Lavínia Alves"),
            ("falei com o atendente Lucas e nada", "Lucas"),
            (
                "das Paket wurde von Annelene Ester Wernecke angenommen",
                "Annelene Ester Wernecke",
            ),
            // An unlisted first name with a listed surname.
            ("Hablé ayer con Perlita Escobar y nada", "Perlita Escobar"),
            (
                "Der Techniker Siegmund Conradi kam nicht",
                "Siegmund Conradi",
            ),
            ("Bitte an Herrn Wernecke weiterleiten", "Wernecke"),
            ("Thanks for your help!\nGustavo", "Gustavo"),
            ("Who is Crystal Martinez? Not me.", "Crystal Martinez"),
        ],
    );
}

#[test]
fn places_brands_nouns_and_first_names_that_are_words_stay_text() {
    assert_clean(&[
        "Moro em São Paulo e compro na Magazine Luiza sempre.",
        "Vivo en Valencia y compro en El Corte Inglés.",
        "Black Friday deals were great, but the Amazon Echo never came.",
        "I paid with Apple Pay and Will was not there.",
        "Hope this helps. May I ask again?",
        "ich schreibe im Namen von Blumenhaus Schäfer",
        "Die Rechnung zur Bestellung bitte an die Buchhaltung, danke. Vielen Dank!",
        "Am Black Friday war alles billig, aber der Thermomix kam nie.",
    ]);
    // A word run on into digits is a token (here a password), not a name.
    let text = "das Token Hunter8415! funktioniert nicht mehr";
    assert!(!found(text).iter().any(|(k, _)| *k == PiiType::Name));
}

#[test]
fn names_opening_a_sentence_or_after_a_german_noun_or_a_sign_off_dash_are_found() {
    assert_finds(
        PiiType::Name,
        &[
            ("Robert called me yesterday.", "Robert"),
            (
                "Hallo, Kann Enrico Linke das Paket abholen?",
                "Enrico Linke",
            ),
            ("Das Konto läuft auf den Namen Thorsten.", "Thorsten"),
            ("unser Hausmeister Felix Kaul hat es", "Felix Kaul"),
            ("-- Kristina Matthews Any update?", "Kristina Matthews"),
            ("Attn: Lauren\nRe: order 4711", "Lauren"),
            (
                "O técnico Enzo Gabriel Henrique da Silva Souza não veio",
                "Enzo Gabriel Henrique da Silva Souza",
            ),
        ],
    );
    // "me llamó ayer" (called me yesterday) is no introduction.
    let text = "Claudia me llamó ayer por el mismo problema.";
    assert!(!found(text).iter().any(|(_, v)| v.contains("ayer")));
}

#[test]
fn a_phone_right_after_another_value_in_the_same_run_of_digits_is_found() {
    assert_finds(
        PiiType::Phone,
        &[("the IBAN ends 5031 51 684.774.3092 call me", "684.774.3092")],
    );
    let text = "SSN: 597-96-2314 (960)675-4211 is my work line";
    assert_eq!(
        found(text),
        vec![
            (PiiType::Ssn, "597-96-2314".to_string()),
            (PiiType::Phone, "(960)675-4211".to_string())
        ]
    );
}

/// Capitalised words that are no one's name, in the four languages:
/// products, shops, banks, places, holidays and German nouns.
#[test]
fn products_shops_places_holidays_and_nouns_are_not_names() {
    let texts = [
        "My new iPhone and the Apple Watch both stopped syncing with Google Pay.",
        "I cancelled Netflix and Spotify Premium but Amazon Prime still charges me.",
        "The PlayStation arrived, the Nintendo Switch did not. Shipped from New York.",
        "We moved from Los Angeles to San Diego in March.",
        "Paguei pelo Mercado Pago e o Banco do Brasil recusou.",
        "Moro em Belo Horizonte, mas a entrega foi para Porto Alegre.",
        "Comprei na Black Friday e no Dia das Mães, chegou em São José dos Campos.",
        "A Caixa Econômica bloqueou o pix ontem.",
        "Die Deutsche Post hat das Paket nach Frankfurt am Main geschickt.",
        "Ich habe bei der Deutschen Bank angerufen, aber niemand ging ran.",
        "Zu Ostern und Weihnachten bestelle ich immer bei Otto.",
        "Meine Frau und ich wohnen in Bad Homburg.",
        "Der Kundenservice hat mir eine Gutschrift versprochen.",
        "Vivo en Santiago de Compostela y el pedido fue a Las Palmas.",
        "Pagué con PayPal en El Corte Inglés durante la Semana Santa.",
        "Correos Express dice que lo entregó en San Sebastián.",
    ];
    for text in texts {
        let names: Vec<_> = found(text)
            .into_iter()
            .filter(|(k, _)| *k == PiiType::Name)
            .collect();
        assert!(names.is_empty(), "{text:?}: {names:?}");
    }
}

#[test]
fn a_sentence_ending_in_n_dot_is_no_number_abbreviation() {
    // "ankommen." ends with "n." like the abbreviation "n. 123" does.
    assert_finds(
        PiiType::Phone,
        &[(
            "Es sollte ankommen. 08718598895 ist meine Büronummer",
            "08718598895",
        )],
    );
    assert_clean(&["factura n. 3331715182", "pedido no. 11987654321"]);
}

#[test]
fn words_of_another_sentence_do_not_decide_a_number() {
    // The SSN word belongs to the sentence before; the phone word to the
    // sentence after.
    let text = "405-84-5807 is my SSN. 217 705 980. ok";
    assert!(!found(text)
        .iter()
        .any(|(k, v)| *k == PiiType::Ssn && v == "217 705 980"));
    let text = "Moin, 52998224725. rufen Sie mich unter +44 7911 879284 an.";
    assert!(found(text).contains(&(PiiType::Cpf, "52998224725".to_string())));
}

#[test]
fn with_a_phone_word_in_the_sentence_any_phone_shaped_number_is_a_phone() {
    assert_finds(
        PiiType::Phone,
        &[
            ("Ich habe von (00247) 89787 aus angerufen", "(00247) 89787"),
            (
                "meine handynummer ist 00497782673, bitte sms",
                "00497782673",
            ),
        ],
    );
    // Without one, a 00-prefixed number is no phone ("00" CPFs exist).
    assert_clean(&["Bestellung 00171 51879 vom Montag"]);
}

#[test]
fn a_lowercase_first_name_after_a_role_word_is_a_name_but_everyday_words_are_not() {
    assert_finds(
        PiiType::Name,
        &[
            ("falei com o atendente lucas e nada", "lucas"),
            ("ihr mitarbeiter alexei hat angerufen", "alexei"),
        ],
    );
    assert_clean(&[
        "my husband will call you",
        "o técnico não apareceu",
        "the agent said it was fine",
    ]);
}
