#!/usr/bin/env python3
"""Independent PII evaluation set for the guardrail engine (issue 18, item 2).

Values come from Faker's locale providers (en_US, pt_BR, de_DE, es_ES), not
from the crate's own generator (src/guardrails/corpus.rs), and are written
into support-message templates in the style customers use: values anywhere
in the sentence, with and without a keyword, with distractors (order
numbers, dates, amounts, tracking codes, timestamps) and plain proper nouns
(cities, brands, weekdays) around them.

Output: JSON lines
  {"id": n, "locale": "pt_BR", "text": "...",
   "spans": [{"type": "CPF", "start": 10, "end": 24}, ...]}
with UTF-8 *byte* offsets. PII types use the engine's labels (NAME, PHONE,
CARD, IBAN, SSN, CPF, CNPJ, EMAIL); distractors are lowercase (order, date,
amount, tracking, time) and must not be masked.

Usage:
  python3 scripts/pii_eval/generate.py --seed 18 --per-locale 2500 > eval.jsonl

Deterministic for a given seed and the pinned Faker/phonenumbers versions
(requirements.txt).

Rules kept while writing it (so it stays honest):
* the templates were written before the detectors were changed, and are not
  edited to suit them;
* every value is Faker's own, as Faker writes it (cards, CPF, CNPJ, IBAN and
  SSN are checksum/structure-valid by Faker's construction; phones are kept
  when libphonenumber's `is_possible_number` accepts them for the locale,
  which drops Faker's de_DE shapes no country uses, like "(00118) 97367");
* the only rewriting is grouping (cards, IBANs, SSN, CPF, CNPJ in the ways
  people type them) and, for a few messages, lowercasing the whole text.
"""

import argparse
import datetime
import json
import random
import re
import sys

import phonenumbers
from faker import Faker

LOCALES = ["en_US", "pt_BR", "de_DE", "es_ES"]

# Fixed bounds: Faker's relative ones ("-2y", "now") would make the set
# depend on the day it is generated.
FIRST_DAY = datetime.date(2024, 12, 1)
LAST_DAY = datetime.date(2026, 12, 31)
FIRST_TIME = datetime.datetime(2025, 12, 1)
LAST_TIME = datetime.datetime(2026, 12, 1)
REGION = {"en_US": "US", "pt_BR": "BR", "de_DE": "DE", "es_ES": "ES"}

# ----------------------------------------------------------------- templates
# {v} is the value; {order} {date} {amount} {tracking} {time} are distractors.

T = {
    "en_US": {
        "NAME": [
            "Hi, I'm writing on behalf of my mother, {v}, who can't use email.",
            "I spoke to {v} yesterday and she said the refund was approved.",
            "Please transfer the account to {v}, effective {date}.",
            "The package for order {order} was signed for by {v}, but that's not me!",
            "hi there, my colleague {v} placed order {order} and it still hasn't shipped",
            "Can you add {v} as an authorized user? They're my business partner.",
            "Your agent {v} promised a callback before {time} but nobody called.",
            "The invoice should be addressed to {v}, not to me.",
            "Hello, this is {v}. I ordered a Samsung Galaxy on {date} and it arrived broken.",
            "my husband {v} paid {amount} twice, can you check?",
            "Who is {v}? Someone with that name logged into my account from Chicago.",
            "Please send the replacement to my daughter {v} instead.",
            "The technician, {v}, never showed up on Monday.",
            "Thanks for your help!\n{v}",
            "I was told by your supervisor {v} that the fee would be waived.",
            "Account holder: {v}. Order {order}, total {amount}.",
        ],
        "PHONE": [
            "You can reach me at {v} after 5pm.",
            "my cell is {v}, text me when the order ships",
            "Please call {v} regarding order {order}.",
            "Phone: {v}\nOrder: {order}",
            "I tried calling from {v} but the line dropped at {time}.",
            "Update my number to {v} please. The old one is disconnected.",
            "Can someone call me back? {v} - thanks",
            "The delivery driver should call {v} when he arrives.",
        ],
        "CARD": [
            "My credit card number is {v} and it was charged {amount} twice.",
            "I paid with card {v} on {date}, order {order}.",
            "please remove {v} from my account, I lost that card",
            "The charge of {amount} on {v} is not mine.",
            "Visa ending... actually here is the full number: {v}",
            "Card: {v} exp 09/27",
            "Can you refund to {v}? It's the same card I used.",
        ],
        "IBAN": [
            "Please send the refund to IBAN {v}.",
            "My bank account is {v} (Barclays).",
            "refund to {v} please, order {order}",
            "Account for the transfer: {v}",
        ],
        "SSN": [
            "My SSN is {v}.",
            "For the tax form, my social security number is {v}",
            "You can verify me with {v}",
            "The form had {v} on it, but that is my old number.",
            "ssn {v} - please update the W-9",
            "Verification: {v}, date of birth {date}",
            "I entered {v} in the tax form and it was rejected on {date}.",
            "Here is the number you asked for: {v}",
        ],
        "EMAIL": [
            "Please write to {v} instead.",
            "my email changed to {v}",
            "Send the invoice for order {order} to {v}, thanks.",
        ],
    },
    "pt_BR": {
        "NAME": [
            "Oi, estou escrevendo em nome da minha mãe, {v}, que não usa e-mail.",
            "Falei com {v} ontem e ela disse que o reembolso estava aprovado.",
            "Transfira a conta para {v}, por favor.",
            "O pedido {order} foi recebido por {v}, mas eu não conheço essa pessoa.",
            "falei com o atendente {v} e ele não resolveu nada",
            "Pode incluir {v} como usuário da conta? É meu sócio.",
            "A nota fiscal deve sair no nome de {v}.",
            "Olá, aqui quem fala é {v}, comprei um iPhone no dia {date} e veio com defeito.",
            "meu marido {v} pagou {amount} duas vezes, podem verificar?",
            "Quem é {v}? Alguém com esse nome entrou na minha conta de Curitiba.",
            "Mandem a troca para minha filha {v}, por favor.",
            "O técnico {v} não apareceu na segunda-feira.",
            "Obrigado pela ajuda!\n{v}",
            "A supervisora {v} me garantiu que não haveria multa.",
            "Titular: {v}. Pedido {order}, valor {amount}.",
        ],
        "PHONE": [
            "Pode me ligar no {v} depois das 18h.",
            "meu whats é {v}, me avisa quando enviar",
            "Liguem para {v} sobre o pedido {order}.",
            "Telefone: {v}\nPedido: {order}",
            "Tentei ligar do {v} mas caiu às {time}.",
            "Atualizem meu número para {v} por favor.",
            "Me retornem no {v}, obrigado",
            "O entregador pode ligar no {v} quando chegar.",
        ],
        "CARD": [
            "O número do meu cartão é {v} e cobraram {amount} duas vezes.",
            "Paguei com o cartão {v} no dia {date}, pedido {order}.",
            "removam o {v} da minha conta, perdi esse cartão",
            "A cobrança de {amount} no {v} não é minha.",
            "Cartão: {v} validade 09/27",
            "Podem estornar no {v}? É o mesmo cartão.",
        ],
        "IBAN": [
            "Meu IBAN é {v}.",
            "Façam o reembolso para a conta {v}.",
            "reembolso para {v} por favor, pedido {order}",
        ],
        "CPF": [
            "Meu CPF é {v}.",
            "Quero a nota no {v}, por favor.",
            "nota para {v}",
            "Emitam a nota fiscal com o {v} e não com o CNPJ.",
            "O cadastro está com {v}, mas o pedido {order} saiu em outro nome.",
            "cpf {v} pedido {order}",
            "Segue o documento: {v}",
            "Pode colocar {v} na nota do pedido {order}?",
        ],
        "CNPJ": [
            "O CNPJ da empresa é {v}.",
            "Quero a nota no {v}, é da minha empresa.",
            "nota para {v}, pedido {order}",
            "Faturar para {v} por favor.",
            "Nossa empresa ({v}) comprou {amount} em {date}.",
            "Segue o documento da loja: {v}",
        ],
        "EMAIL": [
            "Podem escrever para {v}?",
            "meu email mudou para {v}",
            "Mandem a nota do pedido {order} para {v}, obrigado.",
        ],
    },
    "de_DE": {
        "NAME": [
            "Hallo, ich schreibe im Auftrag meiner Mutter, {v}, die kein E-Mail hat.",
            "Ich habe gestern mit {v} gesprochen, sie sagte, die Erstattung sei genehmigt.",
            "Bitte übertragen Sie das Konto auf {v}.",
            "Das Paket wurde von {v} angenommen, aber die Person kenne ich nicht.",
            "ihr mitarbeiter {v} hat mir einen rückruf versprochen, kam aber nichts",
            "Können Sie {v} als weiteren Nutzer hinzufügen? Das ist mein Geschäftspartner.",
            "Die Rechnung soll bitte auf {v} ausgestellt werden.",
            "Guten Tag, hier ist {v}. Ich habe am {date} eine Waschmaschine bei Ihnen bestellt.",
            "mein Mann {v} hat {amount} doppelt bezahlt, können Sie das prüfen?",
            "Wer ist {v}? Jemand mit diesem Namen hat sich aus Hamburg in mein Konto eingeloggt.",
            "Bitte schicken Sie den Ersatz an meine Tochter {v}.",
            "Der Techniker {v} ist am Montag nicht gekommen.",
            "Danke für die Hilfe!\n{v}",
            "Ihre Kollegin {v} hat mir zugesagt, dass keine Gebühr anfällt.",
            "Kontoinhaber: {v}. Bestellung {order}, Betrag {amount}.",
        ],
        "PHONE": [
            "Sie erreichen mich unter {v} ab 17 Uhr.",
            "meine handynummer ist {v}, bitte sms wenn es verschickt wird",
            "Bitte rufen Sie {v} wegen der Bestellung {order} an.",
            "Telefon: {v}\nBestellung: {order}",
            "Ich habe von {v} aus angerufen, aber um {time} war die Leitung tot.",
            "Bitte ändern Sie meine Nummer auf {v}.",
            "Rückruf bitte unter {v}, danke",
            "Der Fahrer soll bei Ankunft {v} anrufen.",
        ],
        "CARD": [
            "Meine Kreditkartennummer ist {v}, es wurden {amount} doppelt abgebucht.",
            "Ich habe mit der Karte {v} am {date} bezahlt, Bestellung {order}.",
            "bitte entfernen sie {v} aus meinem konto, karte verloren",
            "Die Abbuchung von {amount} auf {v} ist nicht von mir.",
            "Karte: {v} gültig bis 09/27",
            "Können Sie auf {v} erstatten? Das ist dieselbe Karte.",
        ],
        "IBAN": [
            "Bitte überweisen Sie die Erstattung auf IBAN {v}.",
            "Meine Bankverbindung: {v} (Sparkasse).",
            "erstattung bitte auf {v}, bestellung {order}",
            "Konto für die Rückzahlung: {v}",
        ],
        "EMAIL": [
            "Bitte schreiben Sie an {v}.",
            "meine email ist jetzt {v}",
            "Die Rechnung zur Bestellung {order} bitte an {v}, danke.",
        ],
    },
    "es_ES": {
        "NAME": [
            "Hola, escribo en nombre de mi madre, {v}, que no usa el correo.",
            "Hablé ayer con {v} y me dijo que el reembolso estaba aprobado.",
            "Por favor, transfieran la cuenta a {v}.",
            "El paquete del pedido {order} lo recogió {v}, pero no conozco a esa persona.",
            "hablé con el agente {v} y no me solucionó nada",
            "¿Pueden añadir a {v} como usuario? Es mi socio.",
            "La factura debe ir a nombre de {v}.",
            "Buenas, soy {v}. Compré un portátil Lenovo el {date} y llegó roto.",
            "mi marido {v} pagó {amount} dos veces, ¿lo pueden revisar?",
            "¿Quién es {v}? Alguien con ese nombre entró en mi cuenta desde Sevilla.",
            "Envíen el cambio a mi hija {v}, por favor.",
            "El técnico {v} no vino el lunes.",
            "¡Gracias por la ayuda!\n{v}",
            "Su compañera {v} me aseguró que no habría comisión.",
            "Titular: {v}. Pedido {order}, importe {amount}.",
        ],
        "PHONE": [
            "Pueden llamarme al {v} a partir de las 17h.",
            "mi móvil es {v}, avisadme cuando salga el pedido",
            "Llamen al {v} por el pedido {order}.",
            "Teléfono: {v}\nPedido: {order}",
            "Intenté llamar desde el {v} pero se cortó a las {time}.",
            "Cambien mi número a {v}, por favor.",
            "Devuélvanme la llamada al {v}, gracias",
            "El repartidor puede llamar al {v} cuando llegue.",
        ],
        "CARD": [
            "El número de mi tarjeta es {v} y me cobraron {amount} dos veces.",
            "Pagué con la tarjeta {v} el {date}, pedido {order}.",
            "quiten la {v} de mi cuenta, la perdí",
            "El cargo de {amount} en la {v} no es mío.",
            "Tarjeta: {v} caduca 09/27",
            "¿Pueden devolverlo a la {v}? Es la misma tarjeta.",
        ],
        "IBAN": [
            "Hagan la devolución al IBAN {v}.",
            "Mi cuenta bancaria es {v} (Santander).",
            "devolución a {v} por favor, pedido {order}",
            "Cuenta para el reembolso: {v}",
        ],
        "EMAIL": [
            "Escríbanme a {v}, por favor.",
            "mi correo ahora es {v}",
            "La factura del pedido {order} a {v}, gracias.",
        ],
    },
}

# A second, held-out set of templates (`--templates heldout`), written after
# the detectors were changed and measured once, to see how much the figures
# owe to the wording of the first set.
HELDOUT = {
    "en_US": {
        "NAME": [
            "{v} called me yesterday about the same problem.",
            "cc {v} - she handles our billing now",
            "I got an email from {v} saying my order {order} was cancelled??",
            "The account is in the name of {v} (my late father).",
            "my landlord {v} needs a copy of the invoice",
            "Attn: {v}\nRe: order {order}",
            "Can {v} pick up the parcel for me on {date}?",
            "we already talked to {v} from your billing department",
            "-- {v}",
            "Please ask for {v} when you call back.",
        ],
        "PHONE": [
            "best number to reach me: {v}",
            "{v} is my work line, call after 3",
            "wrong number on file, it should be {v}",
            "Text {v} if the courier is late",
        ],
        "CARD": [
            "why was {v} charged {amount}??",
            "I want to use {v} for the next payment",
            "the last card I used was {v}",
        ],
        "SSN": [
            "SSN: {v}",
            "the IRS letter lists {v} as my number",
            "my social is {v}",
        ],
        "IBAN": ["wire it to {v}", "IBAN for the refund: {v}"],
    },
    "pt_BR": {
        "NAME": [
            "{v} me ligou ontem sobre o mesmo problema.",
            "Quem fez a compra foi {v}, minha cunhada.",
            "recebi um email de {v} dizendo que o pedido {order} foi cancelado",
            "A conta está no nome de {v} (meu falecido pai).",
            "o porteiro {v} recebeu a caixa e sumiu",
            "Aos cuidados de {v}\nPedido {order}",
            "O {v} pode retirar a encomenda pra mim no dia {date}?",
            "já conversamos com {v} do financeiro de vocês",
            "Att, {v}",
            "Peçam para falar com {v} quando retornarem.",
        ],
        "PHONE": [
            "melhor número pra falar comigo: {v}",
            "{v} é o fixo do escritório",
            "o número cadastrado está errado, o certo é {v}",
            "Mandem mensagem pro {v} se atrasar",
        ],
        "CARD": [
            "por que o {v} foi cobrado {amount}??",
            "quero usar o {v} na próxima parcela",
            "o último cartão que usei foi {v}",
        ],
        "CPF": [
            "CPF do titular: {v}",
            "o documento que passei foi {v}",
            "confere se está certo: {v}",
        ],
        "CNPJ": [
            "a loja é {v}",
            "faturamento em nome de {v}",
            "CNPJ: {v}",
        ],
        "IBAN": ["transfiram para {v}", "IBAN pro estorno: {v}"],
    },
    "de_DE": {
        "NAME": [
            "{v} hat mich gestern wegen desselben Problems angerufen.",
            "Die Bestellung hat {v} aufgegeben, meine Schwägerin.",
            "ich habe eine Mail von {v} bekommen, dass Bestellung {order} storniert wurde",
            "Das Konto läuft auf den Namen {v} (mein verstorbener Vater).",
            "unser Hausmeister {v} hat das Paket angenommen und nicht weitergegeben",
            "z. Hd. {v}\nBestellung {order}",
            "Kann {v} das Paket am {date} für mich abholen?",
            "wir haben schon mit {v} aus Ihrer Buchhaltung gesprochen",
            "Gruß {v}",
            "Bitte fragen Sie nach {v}, wenn Sie zurückrufen.",
        ],
        "PHONE": [
            "am besten erreichbar: {v}",
            "{v} ist meine Büronummer",
            "die hinterlegte Nummer ist falsch, richtig ist {v}",
            "Schreiben Sie an {v}, falls der Fahrer später kommt",
        ],
        "CARD": [
            "warum wurde {v} mit {amount} belastet?",
            "für die nächste Zahlung bitte {v} verwenden",
            "zuletzt habe ich {v} benutzt",
        ],
        "IBAN": ["bitte auf {v} überweisen", "IBAN für die Gutschrift: {v}"],
    },
    "es_ES": {
        "NAME": [
            "{v} me llamó ayer por el mismo problema.",
            "La compra la hizo {v}, mi cuñada.",
            "me llegó un correo de {v} diciendo que el pedido {order} se canceló",
            "La cuenta está a nombre de {v} (mi difunto padre).",
            "el portero {v} recogió la caja y no me la dio",
            "A la atención de {v}\nPedido {order}",
            "¿Puede {v} recoger el paquete por mí el {date}?",
            "ya hablamos con {v} de vuestro departamento de facturación",
            "Un saludo, {v}",
            "Pregunten por {v} cuando devuelvan la llamada.",
        ],
        "PHONE": [
            "el mejor número para contactarme: {v}",
            "{v} es el fijo de la oficina",
            "el número que tienen está mal, el bueno es {v}",
            "Escriban al {v} si el repartidor se retrasa",
        ],
        "CARD": [
            "¿por qué se cobraron {amount} en {v}?",
            "quiero usar la {v} para el próximo pago",
            "la última tarjeta que usé fue la {v}",
        ],
        "IBAN": ["transfiéranlo a {v}", "IBAN para el reembolso: {v}"],
    },
}

# Sentences with distractors and ordinary proper nouns only: no PII at all.
FILLER = {
    "en_US": [
        "Order {order} was supposed to arrive on {date}.",
        "I was charged {amount} for nothing.",
        "Tracking says {tracking} but UPS has no record.",
        "The app crashed at {time} on Friday.",
        "I live in Denver and shop at Target every week.",
        "This is the third time I write about order {order}.",
        "Black Friday deals were great, but the Amazon Echo never came.",
        "My order {order} of {date} shows {amount}.",
        "Last update: {time}.",
    ],
    "pt_BR": [
        "O pedido {order} deveria chegar em {date}.",
        "Fui cobrado {amount} sem motivo.",
        "O rastreio {tracking} não atualiza desde segunda.",
        "O app travou às {time} de ontem.",
        "Moro em São Paulo e compro na Magazine Luiza sempre.",
        "É a terceira vez que escrevo sobre o pedido {order}.",
        "A Black Friday foi ótima, mas a Alexa nunca chegou.",
        "Meu pedido {order} de {date} mostra {amount}.",
        "Última atualização: {time}.",
    ],
    "de_DE": [
        "Die Bestellung {order} sollte am {date} ankommen.",
        "Mir wurden {amount} ohne Grund abgebucht.",
        "Die Sendungsverfolgung {tracking} zeigt nichts an.",
        "Die App ist um {time} abgestürzt.",
        "Ich wohne in Köln und bestelle oft bei Zalando.",
        "Das ist das dritte Mal, dass ich wegen Bestellung {order} schreibe.",
        "Am Black Friday war alles billig, aber der Thermomix kam nie.",
        "Meine Bestellung {order} vom {date} zeigt {amount}.",
        "Letzte Aktualisierung: {time}.",
    ],
    "es_ES": [
        "El pedido {order} tenía que llegar el {date}.",
        "Me cobraron {amount} sin motivo.",
        "El seguimiento {tracking} no se actualiza desde el lunes.",
        "La app se cerró a las {time} de ayer.",
        "Vivo en Valencia y compro en El Corte Inglés.",
        "Es la tercera vez que escribo por el pedido {order}.",
        "En el Black Friday todo bien, pero el Kindle nunca llegó.",
        "Mi pedido {order} del {date} muestra {amount}.",
        "Última actualización: {time}.",
    ],
}

GREETINGS = {
    "en_US": ["Hi,", "Hello,", "Hey", "Good morning,", ""],
    "pt_BR": ["Oi,", "Olá,", "Bom dia,", "Boa tarde!", ""],
    "de_DE": ["Hallo,", "Guten Tag,", "Moin,", "Sehr geehrte Damen und Herren,", ""],
    "es_ES": ["Hola,", "Buenas,", "Buenos días,", ""],
}

CLOSINGS = {
    "en_US": ["Thanks.", "Please help!", "Any update?", "", ""],
    "pt_BR": ["Obrigado.", "Aguardo retorno.", "Alguma novidade?", "", ""],
    "de_DE": ["Danke.", "Bitte um Rückmeldung.", "Vielen Dank!", "", ""],
    "es_ES": ["Gracias.", "Quedo a la espera.", "¿Alguna novedad?", "", ""],
}

# Share of each PII type per locale.
WEIGHTS = {
    "en_US": {"NAME": 30, "PHONE": 20, "CARD": 15, "IBAN": 5, "SSN": 20, "EMAIL": 10},
    "pt_BR": {"NAME": 30, "PHONE": 20, "CARD": 10, "IBAN": 5, "CPF": 15, "CNPJ": 12, "EMAIL": 8},
    "de_DE": {"NAME": 35, "PHONE": 25, "CARD": 15, "IBAN": 15, "EMAIL": 10},
    "es_ES": {"NAME": 35, "PHONE": 25, "CARD": 15, "IBAN": 15, "EMAIL": 10},
}

CARD_TYPES = ["visa16", "visa13", "visa19", "mastercard", "amex", "discover",
              "diners", "jcb15", "jcb16", "maestro"]


# ------------------------------------------------------------------- values

def group(s, sizes, sep):
    out, at = [], 0
    for n in sizes:
        if at >= len(s):
            break
        out.append(s[at:at + n])
        at += n
    if at < len(s):
        out.append(s[at:])
    return sep.join(out)


def card(fake, rng):
    kind = rng.choice(CARD_TYPES)
    digits = fake.credit_card_number(card_type=kind)
    style = rng.random()
    if style < 0.35:
        return digits
    sep = " " if style < 0.75 else "-"
    if len(digits) == 15 and digits[:2] in ("34", "37"):
        return group(digits, [4, 6, 5], sep)
    return group(digits, [4] * 5, sep)


def iban(fake, rng):
    value = fake.iban()
    return group(value, [4] * 9, " ") if rng.random() < 0.5 else value


def ssn(fake, rng):
    value = fake.ssn()  # "123-45-6789", SSA rules already applied by Faker
    d = value.replace("-", "")
    r = rng.random()
    if r < 0.4:
        return value
    if r < 0.75:
        return d
    return f"{d[:3]} {d[3:5]} {d[5:]}"


def cpf(fake, rng):
    value = fake.cpf()  # "123.456.789-09"
    d = re.sub(r"\D", "", value)
    r = rng.random()
    if r < 0.4:
        return value
    if r < 0.85:
        return d
    return f"{d[:9]}-{d[9:]}"


def cnpj(fake, rng):
    value = fake.cnpj()  # "12.345.678/0001-90"
    return value if rng.random() < 0.5 else re.sub(r"\D", "", value)


def phone(fake, rng, locale):
    region = REGION[locale]
    for _ in range(50):
        if locale == "pt_BR" and rng.random() < 0.3:
            value = fake.cellphone_number()
        else:
            value = fake.phone_number()
        try:
            parsed = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(parsed):
            return value
    raise RuntimeError(f"no possible phone for {locale}")


def name(fake, rng, locale):
    r = rng.random()
    first = fake.first_name()
    if r < 0.15:
        value = first  # a first name alone
    elif r < 0.30:
        value = f"{first} {fake.first_name()} {fake.last_name()}"  # middle name
    else:
        value = f"{first} {fake.last_name()}"
    return value


def email(fake, rng):
    return fake.email() if rng.random() < 0.5 else fake.free_email()


# -------------------------------------------------------------- distractors

def order(fake, rng, locale):
    r = rng.random()
    if r < 0.3:
        return "#" + str(rng.randint(100000, 99999999))
    if r < 0.6:
        return str(rng.randint(10**7, 10**10))
    if r < 0.8:
        return f"{rng.choice(['A', 'BR', 'DE', 'ES', 'US'])}-{rng.randint(100000, 9999999)}"
    return str(rng.randint(10**9, 10**12 - 1))


def date(fake, rng, locale):
    d = fake.date_between(start_date=FIRST_DAY, end_date=LAST_DAY)
    if locale == "en_US":
        return rng.choice([d.strftime("%m/%d/%Y"), d.strftime("%B %d, %Y"), d.isoformat()])
    if locale == "de_DE":
        return rng.choice([d.strftime("%d.%m.%Y"), d.strftime("%d.%m."), d.isoformat()])
    return rng.choice([d.strftime("%d/%m/%Y"), d.strftime("%d/%m"), d.isoformat()])


def amount(fake, rng, locale):
    v = rng.randint(1, 500000) / 100
    if locale == "en_US":
        return f"${v:,.2f}"
    euro = f"{v:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")
    if locale == "pt_BR":
        return f"R$ {euro}"
    return rng.choice([f"{euro} €", f"{euro} EUR", f"€{euro}"])


def tracking(fake, rng, locale):
    r = rng.random()
    if r < 0.25:
        return "1Z" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(16))
    if r < 0.5:
        return f"{rng.choice(['BR', 'LB', 'NL', 'QB'])}{rng.randint(10**8, 10**9 - 1)}{rng.choice(['BR', 'CN', 'DE'])}"
    if r < 0.75:
        return str(rng.randint(10**11, 10**12 - 1))  # FedEx-style 12 digits
    return "00" + str(rng.randint(10**17, 10**18 - 1))  # DHL/SSCC-style 20 digits


def time_(fake, rng, locale):
    dt = fake.date_time_between(start_date=FIRST_TIME, end_date=LAST_TIME)
    r = rng.random()
    if r < 0.4:
        return dt.strftime("%H:%M")
    if r < 0.7:
        return dt.strftime("%Y-%m-%d %H:%M:%S")
    if r < 0.85:
        return dt.strftime("%d/%m/%Y %H:%M")
    return str(int(dt.timestamp()))  # a Unix timestamp, as apps print them


DISTRACTORS = {"order": order, "date": date, "amount": amount,
               "tracking": tracking, "time": time_}


# ------------------------------------------------------------------ builder

class Message:
    def __init__(self):
        self.parts = []   # list of str
        self.spans = []   # (type, byte_start, byte_end)
        self.len = 0

    def push(self, s, kind=None):
        b = s.encode("utf-8")
        if kind:
            self.spans.append((kind, self.len, self.len + len(b)))
        self.parts.append(s)
        self.len += len(b)

    def fill(self, template, fake, rng, locale, kind=None, value=None):
        for piece in re.split(r"(\{[a-z]+\})", template):
            m = re.fullmatch(r"\{([a-z]+)\}", piece)
            if not m:
                self.push(piece)
            elif m.group(1) == "v":
                self.push(value, kind)
            else:
                self.push(DISTRACTORS[m.group(1)](fake, rng, locale), m.group(1))

    def text(self):
        return "".join(self.parts)


def value_for(kind, fake, rng, locale):
    if kind == "NAME":
        return name(fake, rng, locale)
    if kind == "PHONE":
        return phone(fake, rng, locale)
    if kind == "CARD":
        return card(fake, rng)
    if kind == "IBAN":
        return iban(fake, rng)
    if kind == "SSN":
        return ssn(fake, rng)
    if kind == "CPF":
        return cpf(fake, rng)
    if kind == "CNPJ":
        return cnpj(fake, rng)
    return email(fake, rng)


SIGN_OFF_TEMPLATES = ("Thanks for your help!", "Obrigado pela", "Danke für die", "¡Gracias por")


def message(fake, rng, locale):
    m = Message()
    greeting = rng.choice(GREETINGS[locale])
    if greeting:
        m.push(greeting + rng.choice([" ", "\n"]))
    # One message in ten carries no PII at all: only filler and distractors.
    if rng.random() < 0.1:
        m.fill(rng.choice(FILLER[locale]), fake, rng, locale)
        m.push(" ")
        m.fill(rng.choice(FILLER[locale]), fake, rng, locale)
    else:
        kinds = list(WEIGHTS[locale])
        weights = [WEIGHTS[locale][k] for k in kinds]
        kind = rng.choices(kinds, weights)[0]
        sentences = [(kind, rng.choice(T[locale][kind]))]
        if rng.random() < 0.5:
            sentences.append((None, rng.choice(FILLER[locale])))
        if rng.random() < 0.2:
            k2 = rng.choices(kinds, weights)[0]
            sentences.append((k2, rng.choice(T[locale][k2])))
        # The sign-off name template must stay last.
        rng.shuffle(sentences)
        sentences.sort(key=lambda s: s[1].startswith(SIGN_OFF_TEMPLATES))
        signed = sentences[-1][1].startswith(SIGN_OFF_TEMPLATES)
        for i, (k, tpl) in enumerate(sentences):
            if i:
                m.push(rng.choice([" ", " ", "\n"]))
            v = value_for(k, fake, rng, locale) if k else None
            m.fill(tpl, fake, rng, locale, k, v)
        closing = "" if signed else rng.choice(CLOSINGS[locale])
        if closing:
            m.push(" " + closing)
    text = m.text()
    # Some customers type everything in lowercase.
    if rng.random() < 0.04:
        lowered = text.lower()
        if len(lowered.encode()) == len(text.encode()):
            text = lowered
    return text, m.spans


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--per-locale", type=int, default=2500)
    ap.add_argument("--templates", choices=["main", "heldout"], default="main")
    args = ap.parse_args()
    if args.templates == "heldout":
        T.clear()
        T.update(HELDOUT)
        for locale in WEIGHTS:
            WEIGHTS[locale] = {k: v for k, v in WEIGHTS[locale].items() if k in T[locale]}
    n = 0
    for li, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(args.seed * 100 + li)
        rng = random.Random(args.seed * 1000 + li)
        for _ in range(args.per_locale):
            text, spans = message(fake, rng, locale)
            line = {
                "id": n,
                "locale": locale,
                "text": text,
                "spans": [{"type": k, "start": s, "end": e} for k, s, e in spans],
            }
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1


if __name__ == "__main__":
    main()
