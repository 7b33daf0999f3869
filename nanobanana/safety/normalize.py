"""Undo the usual tricks for slipping words past a term list.

`normalize(text)` folds Unicode (NFKC, look-alike letters, accents, zero-width characters, case) and returns
several *views* of the prompt for the term lists to be matched against: the plain words, the words with
leetspeak undone ("p0rn" -> "porn"), with stretched letters squeezed ("nuuude" -> "nude"), with punctuation
inside words dropped ("nu.de" -> "nude"), and with a masked letter filled in ("p*rn" -> "porn"). Letters
written one by one ("n u d e", "n.u.d.e", "n-u-d-e") are joined back into words. Matching every view costs
little and keeps each view simple.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

# Latin look-alikes from Cyrillic and Greek (the ones that survive NFKC).
_CONFUSABLES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "ո": "n",
        "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t",
        "Х": "x", "І": "i", "Ј": "j", "Ѕ": "s",
        "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
        "χ": "x", "Α": "a", "Β": "b", "Ε": "e", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n", "Ο": "o", "Ρ": "p",
        "Τ": "t", "Υ": "y", "Χ": "x", "Ζ": "z",
        "’": "'", "‘": "'", "`": "'", "´": "'",
        "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ı": "i",
    }
)  # fmt: skip

_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "5": "s", "$": "s",
                       "7": "t", "+": "t", "9": "g", "8": "b", "|": "l"})  # fmt: skip
_TOKEN = re.compile(r"[a-z0-9@$*'+!|]+")
# Numbers, and numbers with a unit or ordinal ("12yo", "4k", "3d", "21st"), are not leetspeak.
_NUMBER = re.compile(r"^\d+(?:yo|yrs?|y|d|k|p|s|st|nd|rd|th|m|cm|mm|px|am|pm|x|fps|mp)?$")
_STRETCH = re.compile(r"([a-z])\1{2,}")
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}  # fmt: skip
_AGE_NUMBER = r"(\d{1,2}|" + "|".join(_NUMBER_WORDS) + r")"
_AGE_PATTERNS = [
    re.compile(r"\b" + _AGE_NUMBER + r" ?(?:years?|yrs?|yo|y o)\b"),
    re.compile(r"\b(?:age|aged|ages) " + _AGE_NUMBER + r"\b"),
    re.compile(r"\b" + _AGE_NUMBER + r" (?:years? )?of age\b"),
    re.compile(r"\b(?:she|he|they|i|who)(?:'s|'re|'m| is| are| am| was| were) " + _AGE_NUMBER + r"\b"),
]


@dataclass(frozen=True)
class NormalizedText:
    """The prompt as the filters see it."""

    views: tuple[str, ...]  # whole-word matching is run on each
    spelled: tuple[str, ...]  # letters typed one by one, joined ("a n u d e" -> "anude")
    canonical: str  # the single best reading, given to the sentence-embedding model
    ages: tuple[int, ...]  # ages mentioned ("12 year old", "aged 9", "10yo")


def fold(text: str) -> str:
    """NFKC, look-alike letters to Latin, accents and invisible characters removed, lower case."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")  # zero-width, soft hyphen, ...
    text = text.translate(_CONFUSABLES)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text.casefold().translate(_CONFUSABLES)


def _deleet(token: str, keep_units: bool = False) -> str:
    """Leetspeak undone. Plain numbers stay; with `keep_units`, so do "12yo" and "4k" (for the embedding
    model), while the term views read "53x" as "sex" too."""
    if token.isdigit() or not any(c.isalpha() for c in token):
        return token
    if keep_units and _NUMBER.match(token):
        return token
    return token.translate(_LEET)


def _squeeze(token: str, keep: int) -> str:
    return _STRETCH.sub(lambda m: m.group(1) * keep, token)


def _tokens(text: str) -> list[str]:
    tokens = []
    for raw in _TOKEN.findall(text):
        token = raw.strip("'*!|+")
        if token:
            tokens.append(token)
    return tokens


_RUN = re.compile(r"(?<![a-z0-9@$'])[a-z0-9@$](?:[\s._\-*/,~+]{1,4}[a-z0-9@$](?![a-z0-9@$])){2,}")


def _spelled_runs(folded: str) -> list[tuple[str, str, str, str]]:
    """Letters written one at a time, as (text, words, words with a leading article split off, joined).

    "c h i l d   p o r n" -> ("c h i l d   p o r n", "child porn", "child porn", "childporn"). Inside a run
    one separator sits between letters; a longer gap (two spaces, ". .") or a change of separator ("a f.a.k.e")
    is a word break. "a n u d e" is ambiguous, so it is also read as "a nude". At least three letters.
    """
    runs = []
    for match in _RUN.finditer(folded):
        chunk = match.group(0)
        pieces = re.findall(r"([a-z0-9@$])([\s._\-*/,~+]*)", chunk)
        separators = [sep for _, sep in pieces[:-1]]
        usual = Counter(separators).most_common(1)[0][0]
        words, current = [], ""
        for letter, sep in pieces:
            current += letter
            if sep and (len(sep) >= 2 or sep != usual):
                words.append(current)
                current = ""
        words.append(current)
        words = [_deleet(w) for w in words if w]
        split = list(words)
        if len(split[0]) >= 4 and split[0][0] in "ai":
            split[0:1] = [split[0][0], split[0][1:]]
        runs.append((chunk, " ".join(words), " ".join(split), "".join(words)))
    return runs


def _ages(view: str) -> list[int]:
    ages = []
    for pattern in _AGE_PATTERNS:
        for match in pattern.finditer(view):
            number = match.group(1)
            ages.append(int(number) if number.isdigit() else _NUMBER_WORDS[number])
    return ages


def normalize(text: str) -> NormalizedText:
    folded = fold(text)
    # "!" and "|" between letters are leetspeak for i and l, elsewhere punctuation.
    folded_leet = re.sub(r"(?<=[a-z0-9])[!|](?=[a-z0-9])", lambda m: "il"[m.group(0) == "|"], folded)

    # Letters typed one by one are joined back into words first: every view sees "willow", not "w i l l o w".
    runs = _spelled_runs(folded_leet)
    article_split = folded_leet
    for chunk, words, split, _ in runs:
        folded_leet = folded_leet.replace(chunk, words, 1)
        article_split = article_split.replace(chunk, split, 1)
    spelled = tuple(joined_run for *_, joined_run in runs)

    tokens = _tokens(folded_leet)
    plain = " ".join(tokens)
    deleeted = [_deleet(t) for t in tokens]
    views = [plain, " ".join(deleeted)]
    views += [" ".join(_squeeze(t, keep) for t in deleeted) for keep in (1, 2)]

    # Punctuation inside a word dropped rather than turned into a space: "nu.de", "p-o-r-n".
    joined = re.sub(r"[^a-z0-9@$\s]", "", folded_leet)
    views.append(" ".join(_deleet(t) for t in joined.split()))

    if article_split != folded_leet:
        views.append(" ".join(_deleet(t) for t in _tokens(article_split)))

    # A masked letter: try each vowel ("p*rn" -> "porn").
    if any("*" in t.strip("*") for t in deleeted):
        for vowel in "aeiouy":
            views.append(" ".join(t.replace("*", vowel) for t in deleeted))

    canonical = " ".join(_squeeze(_deleet(t, keep_units=True), 2) for t in tokens)
    ages = tuple(_ages(plain))
    return NormalizedText(
        views=tuple(dict.fromkeys(v for v in views if v)),
        spelled=spelled,
        canonical=canonical,
        ages=ages,
    )
