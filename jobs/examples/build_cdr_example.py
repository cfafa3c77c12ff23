"""Build the worked example corpus `jobs/examples/cdr-example/` (brat and PubTator).

Provenance: the first 400 sentences of the BC5CDR test split as converted by
cambridgeltl/MTL-Bioinformatics-2016 (data under CC BY 4.0; the BioCreative V CDR corpus,
Li et al. 2016, Database, doi:10.1093/database/baw068). The IOB2 tokens are joined back into
running text (no space before `, . ; : ) ]` or around `- / '`, none after `( [`, `2 . 5` as
2.5), every 8 consecutive sentences make one document, its first sentence the title. Run from the
repository root: `python jobs/examples/build_cdr_example.py` (reads $BIOGNER_DATA_DIR).
"""

from __future__ import annotations

import sys
from pathlib import Path

from biogner.corpora import load_split
from biogner.corpora.export import ExportDocument, write_brat, write_pubtator
from biogner.types import Sentence

SENTENCES = 400
PER_DOCUMENT = 8
OUT = Path(__file__).parent / "cdr-example"
NO_SPACE_BEFORE = set(",.;:)]}%")
GLUE = set("-/'")
NO_SPACE_AFTER = set("([{")


def running_text(sentence: Sentence) -> tuple[str, list[tuple[int, int, str]]]:
    """The sentence as running text, with its spans' offsets in it."""
    text = ""
    starts: list[int] = []
    prev = ""
    for tok in sentence.tokens:
        glued = not text or tok in NO_SPACE_BEFORE or tok in GLUE or prev in GLUE
        glued = glued or prev in NO_SPACE_AFTER
        decimal = prev == "." and tok[:1].isdigit() and len(text) > 1 and text[-2].isdigit()
        glued = glued or decimal  # `2 . 5` was 2.5
        text += "" if glued else " "
        starts.append(len(text))
        text += tok
        prev = tok
    joined = sentence.token_offsets()
    spans = []
    for span in sentence.spans:
        first = next(i for i, (s, _) in enumerate(joined) if s == span.start)
        last = next(i for i, (_, e) in enumerate(joined) if e == span.end)
        spans.append((starts[first], starts[last] + len(sentence.tokens[last]), span.label))
    return text, spans


def main() -> int:
    sentences = load_split("BC5CDR", "test", limit=SENTENCES)
    docs = []
    for n in range(0, len(sentences), PER_DOCUMENT):
        group = [running_text(s) for s in sentences[n : n + PER_DOCUMENT]]
        title, title_spans = group[0]
        body = ""
        spans = list(title_spans)
        for text, sent_spans in group[1:]:
            if body:
                body += " "
            base = len(title) + 1 + len(body)
            spans += [(s + base, e + base, label) for s, e, label in sent_spans]
            body += text
        docs.append(ExportDocument(f"cdr{n // PER_DOCUMENT:03d}", title, body, tuple(spans)))
    write_brat(docs, OUT / "brat")
    write_pubtator(docs, OUT / "cdr-example.pubtator")
    print(f"{len(docs)} documents, {len(sentences)} sentences -> {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
