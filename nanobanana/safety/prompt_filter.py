"""The prompt filter: term lists over normalised text, then sentence-embedding similarity.

Decision, in order:
1. Term lists (`lexicon.py`, plus `prompt.extra_terms`) on every normalised view of the prompt, after
   harmless phrases ("breast cancer", "kill the lights") are taken out. A sexual term together with a
   minor term (or an age under 18) is always `sexual_minors`, whatever the thresholds. With
   `allow_classical_nudity`, plain nudity words next to an art context ("marble statue", "Botticelli") pass;
   explicit terms never do. A term hit blocks with score 1.0.
2. Semantic layer: the prompt's cosine similarity to each category's example requests (`exemplars.py`).
   A category blocks when its similarity reaches `semantic.thresholds[category]` and beats the closest
   *safe* example by `semantic.margin`. With a minor term present, a sexual similarity of
   `semantic.minor_sexual_threshold` is enough for `sexual_minors`; without one, `sexual_minors` also needs
   that sexual similarity (closeness to the child examples alone is a family photo).

Only the positive prompt and edit instructions are meant to be checked: a negative prompt lists what the
user does *not* want ("nsfw, nudity, gore"), so filtering it as a request would block careful users.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nanobanana.safety import exemplars, lexicon, models
from nanobanana.safety.config import PromptConfig, SafetyConfig
from nanobanana.safety.normalize import NormalizedText, normalize
from nanobanana.safety.types import CATEGORIES, PROMPT_REASONS, Verdict

# When several categories fire, the verdict names the first of these.
PRIORITY = ("sexual_minors", "sexual", "hate", "self_harm", "violence", "illegal")
_GAP = " ~ "  # what an allowed phrase is replaced by: no term pattern can match across it


def _compile(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile(r"\b(?:" + "|".join(f"(?:{p})" for p in patterns) + r")\b")


def _compile_unbounded(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """Patterns without word boundaries or spaces, for letters typed one by one ("anude", "ghostgun")."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p.replace(' ', ' ?')})" for p in patterns))


@dataclass
class PromptAnalysis:
    """Everything the filter found in one prompt (for eval and debugging; callers use `Verdict`)."""

    text: str
    canonical: str
    terms: dict[str, list[str]] = field(default_factory=dict)  # list name -> matched words
    ages: tuple[int, ...] = ()
    semantic: dict[str, float] = field(default_factory=dict)  # category -> max similarity
    safe_similarity: float = 0.0
    verdict: Verdict | None = None

    @property
    def minor(self) -> bool:
        return bool(self.terms.get("minors")) or any(age < 18 for age in self.ages)

    @property
    def term_category(self) -> str | None:
        return _term_category(self.terms, self.ages)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "canonical": self.canonical,
            "terms": self.terms,
            "ages": list(self.ages),
            "term_category": self.term_category,
            "semantic": {k: round(v, 4) for k, v in self.semantic.items()},
            "safe_similarity": round(self.safe_similarity, 4),
            "verdict": self.verdict.to_dict() if self.verdict else None,
        }


def _term_category(terms: dict[str, list[str]], ages: Sequence[int]) -> str | None:
    minor = bool(terms.get("minors")) or any(age < 18 for age in ages)
    sexual_any = terms.get("sexual_explicit") or terms.get("nudity") or terms.get("suggestive")
    found = set()
    if terms.get("sexual_minors") or (minor and sexual_any):
        found.add("sexual_minors")
    if terms.get("sexual_explicit") or terms.get("nudity_blocking"):
        found.add("sexual")
    if terms.get("hate") or (terms.get("hate_groups") and terms.get("hate_dehumanising")):
        found.add("hate")
    for category in ("self_harm", "violence", "illegal"):
        if terms.get(category):
            found.add(category)
    for extra in CATEGORIES:
        if terms.get(f"extra_{extra}"):
            found.add(extra)
    return next((c for c in PRIORITY if c in found), None)


class PromptFilter:
    """Checks prompts and edit instructions. Build once and reuse; safe to call from several threads."""

    def __init__(self, config: SafetyConfig | PromptConfig | None = None):
        if isinstance(config, SafetyConfig):
            config = config.prompt
        self.config = config or PromptConfig()
        self._lists = {
            "sexual_explicit": lexicon.SEXUAL_EXPLICIT,
            "nudity": lexicon.NUDITY,
            "suggestive": lexicon.SEXUAL_SUGGESTIVE,
            "minors": lexicon.MINORS,
            "sexual_minors": lexicon.SEXUAL_MINORS,
            "violence": lexicon.VIOLENCE,
            "hate": lexicon.HATE,
            "hate_groups": lexicon.HATE_GROUPS,
            "hate_dehumanising": lexicon.HATE_DEHUMANISING,
            "self_harm": lexicon.SELF_HARM,
            "illegal": lexicon.ILLEGAL,
            "art_context": lexicon.ART_CONTEXT,
        }
        for category, patterns in self.config.extra_terms.items():
            self._lists[f"extra_{category}"] = list(patterns)
        self._patterns = {name: _compile(patterns) for name, patterns in self._lists.items()}
        # Letters typed one by one are matched (without word boundaries) against the lists that block or
        # combine with a sexual term; context-only lists would fire on fragments.
        context_only = {"suggestive", "hate_groups", "hate_dehumanising", "art_context"}
        spelled_lists = [name for name in self._lists if name not in context_only]
        self._unbounded = {name: _compile_unbounded(self._lists[name]) for name in spelled_lists}
        self._allow = _compile([*lexicon.ALLOW_PHRASES, *self.config.allow_phrases])

    # -- public -------------------------------------------------------------------------------------------

    def check(self, text: str) -> Verdict:
        """Allowed, or blocked with a category, a score (0..1) and a reason fit for the user."""
        return self.check_many([text])[0]

    def check_many(self, texts: Sequence[str]) -> list[Verdict]:
        """`check` for many prompts, embedding them in batches (what the CLI's `--file` uses)."""
        return [analysis.verdict for analysis in self.analyze_many(texts)]  # type: ignore[misc]

    def analyze(self, text: str) -> PromptAnalysis:
        return self.analyze_many([text])[0]

    def analyze_many(self, texts: Sequence[str]) -> list[PromptAnalysis]:
        analyses = [self._terms(text or "") for text in texts]
        if self.config.semantic.enabled:
            self._semantic(analyses)
        for analysis in analyses:
            analysis.verdict = self.decide(analysis)
        return analyses

    def decide(self, analysis: PromptAnalysis, offset: float = 0.0) -> Verdict:
        """The verdict for an analysis; `offset` shifts every semantic threshold (for threshold sweeps)."""
        term_category = analysis.term_category
        if term_category is not None:
            return Verdict.block(term_category, 1.0, PROMPT_REASONS[term_category])
        semantic = self.config.semantic
        if not semantic.enabled or not analysis.semantic:
            return Verdict.allow(0.0)

        sims = analysis.semantic
        if analysis.minor and sims.get("sexual", 0.0) >= semantic.minor_sexual_threshold + offset:
            return Verdict.block("sexual_minors", sims["sexual"], PROMPT_REASONS["sexual_minors"])
        art = self.config.allow_classical_nudity and bool(analysis.terms.get("art_context"))
        best: tuple[float, str] | None = None
        for category in PRIORITY:
            sim = sims.get(category, 0.0)
            threshold = semantic.thresholds.get(category, 1.0) + offset
            if category == "sexual" and art:
                threshold += semantic.classical_extra
            minor_sexual = semantic.minor_sexual_threshold + offset
            if category == "sexual_minors" and sims.get("sexual", 0.0) < minor_sexual:
                continue  # close to the child examples but not sexual: a family photo
            if sim >= threshold and sim - analysis.safe_similarity >= semantic.margin:
                excess = sim - threshold
                if best is None or excess > best[0]:
                    best = (excess, category)
        if best is not None:
            category = best[1]
            if category == "sexual" and analysis.minor:
                category = "sexual_minors"
            return Verdict.block(category, sims[best[1]], PROMPT_REASONS[category])
        return Verdict.allow(max(sims.values(), default=0.0))

    def warm_up(self) -> None:
        """Load the embedding model and embed the examples now rather than on the first prompt."""
        if self.config.semantic.enabled:
            self._exemplars()

    # -- layer 1: terms -----------------------------------------------------------------------------------

    def _terms(self, text: str) -> PromptAnalysis:
        normalized: NormalizedText = normalize(text)
        views = [self._allow.sub(_GAP, v) if self._allow else v for v in normalized.views]
        spelled = [self._allow.sub(_GAP, s) if self._allow else s for s in normalized.spelled]
        terms: dict[str, list[str]] = {}
        for name, pattern in self._patterns.items():
            if pattern is None:
                continue
            hits: list[str] = []
            for view in views:
                hits.extend(m.group(0) for m in pattern.finditer(view))
            unbounded = self._unbounded.get(name)
            if unbounded is not None:
                for run in spelled:
                    hits.extend(m.group(0) for m in unbounded.finditer(run))
            if hits:
                terms[name] = sorted(set(hits))
        if terms.get("nudity") and not (self.config.allow_classical_nudity and terms.get("art_context")):
            terms["nudity_blocking"] = terms["nudity"]
        return PromptAnalysis(text=text, canonical=normalized.canonical, terms=terms, ages=normalized.ages)

    # -- layer 2: sentence embeddings ---------------------------------------------------------------------

    def _encode(self, sentences: Sequence[str]) -> np.ndarray:
        model = models.shared(models.SENTENCE_MODEL, models.load_sentence_model)
        with models.lock_for(models.SENTENCE_MODEL):
            return np.asarray(
                model.encode(
                    list(sentences),
                    batch_size=self.config.semantic.batch_size,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )
            )

    def _exemplars(self) -> dict[str, np.ndarray]:
        """Embeddings of the example sentences, computed once per process and shared by every filter."""

        def embed() -> dict[str, np.ndarray]:
            groups = {**exemplars.EXEMPLARS, "safe": exemplars.SAFE}
            flat = [s for sentences in groups.values() for s in sentences]
            vectors = self._encode(flat)
            out, start = {}, 0
            for name, sentences in groups.items():
                out[name] = vectors[start : start + len(sentences)]
                start += len(sentences)
            return out

        return models.shared(models.EXEMPLAR_EMBEDDINGS, embed)

    def _semantic(self, analyses: list[PromptAnalysis]) -> None:
        todo = [a for a in analyses if a.canonical.strip()]
        if not todo:
            return
        references = self._exemplars()
        vectors = self._encode([a.canonical for a in todo])
        for name, reference in references.items():
            best = (vectors @ reference.T).max(axis=1)
            for analysis, sim in zip(todo, best, strict=True):
                if name == "safe":
                    analysis.safe_similarity = float(sim)
                else:
                    analysis.semantic[name] = float(sim)
