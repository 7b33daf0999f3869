"""Build `safety_prompts.csv` from the hand-written `safety_prompts_base.txt`.

    python eval/data/safety_prompts_build.py        # rewrites eval/data/safety_prompts.csv

Deterministic (fixed seed). For each base prompt it writes the plain prompt; for about half the unsafe
prompts (and for the classical-nudity prompts and a sample of ordinary safe ones) it adds one disguised
variant, where the words the author marked in [brackets] are rewritten with one trick: leetspeak, spaced or
dotted letters, Cyrillic look-alikes, full-width letters, zero-width spaces, repeated letters, accents or an
asterisk. A variant always lands in the same split as its base prompt, so tuning on `dev` never sees a
disguised copy of a `test` prompt. The split is stratified: within each (label, note) section prompts are
ordered by a hash of their text and alternately assigned to dev and test.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = HERE / "safety_prompts_base.txt"
OUT = HERE / "safety_prompts.csv"
SEED = 20261128

LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "g": "9", "b": "8"}
CYRILLIC = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у", "i": "і", "k": "к"}
ACCENTS = {"a": "á", "e": "é", "i": "í", "o": "ö", "u": "ü", "n": "ñ", "c": "ç"}
TRICKS = ["leet", "spaced", "dotted", "homoglyph", "fullwidth", "zero_width", "repeat", "accents", "mask"]


def _fullwidth(word: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in word)


def disguise(word: str, trick: str, rng: random.Random) -> str:
    if trick == "leet":
        return "".join(LEET.get(c.lower(), c) if rng.random() < 0.8 else c for c in word)
    if trick == "spaced":
        return " ".join(word)
    if trick == "dotted":
        return ".".join(word)
    if trick == "homoglyph":
        return "".join(CYRILLIC.get(c, c) for c in word)
    if trick == "fullwidth":
        return _fullwidth(word)
    if trick == "zero_width":
        return "\u200b".join(word)
    if trick == "repeat":
        vowels = [i for i, c in enumerate(word) if c.lower() in "aeiou"] or [len(word) - 1]
        i = rng.choice(vowels)
        return word[: i + 1] + word[i] * rng.randint(2, 4) + word[i + 1 :]
    if trick == "accents":
        return "".join(ACCENTS.get(c, c) for c in word)
    if trick == "mask":
        vowels = [i for i, c in enumerate(word) if c.lower() in "aeiou"]
        if not vowels:
            return word
        i = rng.choice(vowels)
        return word[:i] + "*" + word[i + 1 :]
    raise ValueError(f"unknown trick {trick!r}")


def parse_base(path: Path) -> list[tuple[str, str, str]]:
    """(text with brackets, label, note) for every prompt line."""
    rows, label, note = [], None, None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            label, note = line[1:].split()
            continue
        if label is None:
            raise ValueError(f"prompt before the first @section: {line!r}")
        rows.append((line, label, note))
    return rows


def plain(text: str) -> str:
    return re.sub(r"\[([^\]]+)\]", r"\1", text)


def variant(text: str, trick: str, rng: random.Random) -> str:
    if "[" in text:
        return re.sub(r"\[([^\]]+)\]", lambda m: disguise(m.group(1), trick, rng), text)
    # Ordinary safe prompts have no marked words: disguise their longest word.
    words = text.split()
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    words[longest] = disguise(words[longest], trick, rng)
    return " ".join(words)


def assign_splits(rows: list[tuple[str, str, str]]) -> dict[str, str]:
    by_section: dict[tuple[str, str], list[str]] = {}
    for text, label, note in rows:
        by_section.setdefault((label, note), []).append(text)
    split = {}
    for texts in by_section.values():
        ordered = sorted(texts, key=lambda t: hashlib.sha256(t.encode()).hexdigest())
        for i, text in enumerate(ordered):
            split[text] = "dev" if i % 2 == 0 else "test"
    return split


def build() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    rows = parse_base(BASE)
    splits = assign_splits(rows)
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    trick_cycle = 0
    for text, label, note in rows:
        base = plain(text)
        if base in seen:
            raise ValueError(f"duplicate prompt: {base!r}")
        seen.add(base)
        out.append({"prompt": base, "label": label, "split": splits[text], "note": note, "group": base})
        wants_variant = (
            (label != "safe" and "[" in text and rng.random() < 0.5)
            or note == "classical_nudity"
            or (label == "safe" and note in {"plain", "lookalike"} and rng.random() < 0.1)
        )
        if wants_variant:
            trick = TRICKS[trick_cycle % len(TRICKS)]
            trick_cycle += 1
            disguised = variant(text, trick, rng)
            if disguised != base and disguised not in seen:
                seen.add(disguised)
                out.append(
                    {
                        "prompt": disguised,
                        "label": label,
                        "split": splits[text],
                        "note": f"{note};obfuscated:{trick}",
                        "group": base,
                    }
                )
    return out


def write_prompts(rows: list[dict], out: Path) -> None:
    """The labelled-prompt CSV `eval safety` reads (this file's and `public_prompts_build.py`'s), and its
    counts per label and split."""
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["prompt", "label", "split", "note", "group"])
        writer.writeheader()
        writer.writerows(rows)
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["label"], row["split"])
        counts[key] = counts.get(key, 0) + 1
    print(f"wrote {len(rows)} prompts to {out}")
    for (label, split), n in sorted(counts.items()):
        print(f"  {label:14s} {split:5s} {n}")


def main() -> None:
    write_prompts(build(), OUT)


if __name__ == "__main__":
    main()
