"""The eight BioNER corpora of the study (plus the BC5CDR single-type views).

Adding a corpus = adding one `Corpus` entry here. Files live as
`<data_dir>/<folder>/<split>.tsv`; checksums are SHA-256 of the files this project was
validated on, so a download that differs (corrupted, truncated, changed upstream) is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from biogner.corpora.iob import ReadStats, read_iob2
from biogner.types import Sentence

SPLITS = ("train", "dev", "test")
MTL_BASE = "https://raw.githubusercontent.com/cambridgeltl/MTL-Bioinformatics-2016/master/data"
DATA_DIR_ENV = "BIOGNER_DATA_DIR"


@dataclass(frozen=True)
class Corpus:
    name: str
    entity_types: tuple[str, ...]
    description: str
    license: str
    # split name -> (canonical public URL, SHA-256 or None when no reference copy is known)
    sources: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return self.name

    def url(self, split: str) -> str:
        return self.sources[split][0]

    def sha256(self, split: str) -> str | None:
        return self.sources[split][1]


def _mtl(folder: str, sums: tuple[str | None, str | None, str | None]) -> dict:
    """MTL-Bioinformatics-2016 layout: `<X>-IOB/{train,devel,test}.tsv`."""
    names = {"train": "train", "dev": "devel", "test": "test"}
    return {
        split: (f"{MTL_BASE}/{folder}-IOB/{names[split]}.tsv", digest)
        for split, digest in zip(SPLITS, sums, strict=True)
    }


_CC = "CC BY 4.0 (MTL-Bioinformatics-2016 conversion)"

CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        Corpus(
            "AnatEM",
            ("Anatomy",),
            "Anatomical entities in PubMed abstracts and PMC full texts",
            _CC,
            _mtl(
                "AnatEM",
                (
                    "bd4235e9673f7c67667c1eb321903a51544a94cf481ba265b527b3104d6ba806",
                    "0758bb2f26ec12fc717c1054b64ea00a40c7aae26b21a7541b86fbfba66119ec",
                    "a3d6555f6f5b7809fc014bee975be0db93c012d770ab60c190cf37d589e97fc9",
                ),
            ),
        ),
        Corpus(
            "BC2GM",
            ("GENE",),
            "BioCreative II gene mentions",
            "research use (redistribution terms unclear)",
            _mtl(
                "BC2GM",
                (
                    "46e17f4e1509483b82c03f27d6f0214020f738fb71704356fb3445eb824ab38d",
                    "33a94577aa22f1e70ec9e02781a05baa4e1390e866d28bf2b344888e4e3d4103",
                    "30d7a4f571ca8ed22a044528063ba5d0388d666d8b8b329733d6927e5fb30764",
                ),
            ),
        ),
        Corpus(
            "BC4CHEMD",
            ("Chemical",),
            "BioCreative IV chemical compounds and drugs (large: not in the shared data)",
            _CC,
            _mtl("BC4CHEMD", (None, None, None)),
        ),
        Corpus(
            "BC5CDR",
            ("Chemical", "Disease"),
            "BioCreative V chemical-disease relation corpus, both entity types",
            _CC,
            _mtl(
                "BC5CDR",
                (
                    "b731361c0ed73afd04cc5fdad39afcdfd8f325d6e46c282339185a91d1af4c14",
                    "b909de65c4f7e3c23bb09ad52d654cdc92e96db941abe1a5dcf6f6010c03cff5",
                    "e41a2843a5fff0cd8d1a88cb147968d61ae29336ca70cddc3d7fb8ff21dfa1e8",
                ),
            ),
        ),
        Corpus(
            "BC5CDR-chem",
            ("Chemical",),
            "BC5CDR, chemicals only",
            _CC,
            _mtl(
                "BC5CDR-chem",
                (
                    "165c4cd2efadd0caf1bb8f3c6bcd3acca199446bb3d55eb06d9137114c9a0b2d",
                    "3f1df5cfcff95735663ffc37121fd3687e82b1e9a019bec0480491502652721b",
                    "6fce42139a9d819151eff3ab8cb0eda6fbf861fd17d4cfe6be2123f010a3b6c5",
                ),
            ),
        ),
        Corpus(
            "BC5CDR-disease",
            ("Disease",),
            "BC5CDR, diseases only",
            _CC,
            _mtl(
                "BC5CDR-disease",
                (
                    "d630dafe7dd67e21350cc3278dbdcfadcccbb2b63d0fda83b2427853988e5ad9",
                    "8c3af95475029c2100c2b7c0108b2715bc700ac198c7a21d587f11f1d06b17bd",
                    "a530bf9e17a4122b101b09cedd5f3cf8e6307d6a0093146c33b8de2e69ec0fa3",
                ),
            ),
        ),
        Corpus(
            "JNLPBA",
            ("protein", "DNA", "RNA", "cell_type", "cell_line"),
            "JNLPBA 2004 bio-entity recognition (GENIA); train rebuilt from IOBES",
            "GENIA licence",
            _mtl(
                "JNLPBA",
                (
                    "d2e96f1f0474801d98c55320b3ebdd11bdf6b0c710d2c01e6246537124571369",
                    "462b09bc79a4dd69cec2e70b6041f54383b4b94892d2ee971a587fdc74caae80",
                    "87c9b8f1f7fcf94add38c16088203d4ddf35c2f61eb2c7e61240c738d8dd9d35",
                ),
            ),
        ),
        Corpus(
            "NCBI-disease",
            ("Disease",),
            "NCBI disease corpus: disease mentions in PubMed abstracts",
            _CC,
            _mtl(
                "NCBI-disease",
                (
                    "58379baf4614b8d757d93dd7a21b202849ca99f9b9d71b49185523ff5443300c",
                    "b4e1e7efcc2a35047bf2f3d281648357470e674f555d4a26a0049ac37d59cc61",
                    "8f088ce45dc4746592188f9e69de3d89d87f3bb8f0ed8c4a287d018123fa148d",
                ),
            ),
        ),
        Corpus(
            "linnaeus",
            ("Species",),
            "LINNAEUS species mentions in PMC full texts",
            _CC,
            _mtl(
                "linnaeus",
                (
                    "74c8612944a4de87665680989a3d589c843562d3ec175e3b512295691b221d9a",
                    "042b5676d4f541995d617f43e2926afdf6653ed60ad9010c2f45b78ae869f2b6",
                    "1792b82f7cf9159fd71de38b139a457dbc5ca126c13ac9e355a5fad3e65930ad",
                ),
            ),
        ),
        Corpus(
            "s800",
            ("Species",),
            "S800 species mentions (converted from S800 1.0 standoff)",
            "CC BY-SA",
            _mtl(
                "s800",
                (
                    "d8e109ed4289567c8fd544f781c4b37cb472737f08cb42af91bfc1e7c503fa7e",
                    "617b1cd596bb664a00325697d3d8a7e0c9fb1d9f08004e1e24aa5aa3099f551d",
                    "decd7a0af93c059c36eda7bbaa8c43c9fd106ce667d4ca38a79f6941c335a54c",
                ),
            ),
        ),
    ]
}

_LOWER = {name.lower(): name for name in CORPORA}


def get_corpus(name: str) -> Corpus:
    """Registry entry by name (case-insensitive); the error lists the known names."""
    key = _LOWER.get(name.lower())
    if key is None:
        raise KeyError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    return CORPORA[key]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $BIOGNER_DATA_DIR, else ../shared/data/bioner if it exists, else
    .biogner/data (where `biogner data download` puts files)."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parents[3]
    for candidate in (
        Path.cwd() / ".." / "shared" / "data" / "bioner",
        repo_root.parent / "shared" / "data" / "bioner",
    ):
        if candidate.is_dir():
            return candidate.resolve()
    return Path(".biogner") / "data"


def corpus_path(
    corpus: str | Corpus, split: str, data_dir: str | os.PathLike | None = None
) -> Path:
    entry = corpus if isinstance(corpus, Corpus) else get_corpus(corpus)
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return resolve_data_dir(data_dir) / entry.folder / f"{split}.tsv"


def load_split(
    corpus: str | Corpus,
    split: str,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    stats: ReadStats | None = None,
) -> list[Sentence]:
    """Sentences of one corpus split (first `limit` when given); ids are `<corpus>-<split>-<n>`."""
    entry = corpus if isinstance(corpus, Corpus) else get_corpus(corpus)
    path = corpus_path(entry, split, data_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: set --data-dir / ${DATA_DIR_ENV}, or run "
            f"`biogner data download {entry.name} --to DIR`"
        )
    out: list[Sentence] = []
    for sent in read_iob2(path, id_prefix=f"{entry.name}-{split}", stats=stats):
        out.append(sent)
        if limit is not None and len(out) >= limit:
            break
    return out
