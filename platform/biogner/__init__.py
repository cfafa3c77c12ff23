"""biogner: generative biomedical NER with lightweight causal LMs on Ray."""

from biogner.types import Sentence, Span

__all__ = ["Sentence", "Span"]
__version__ = "0.1.0"
