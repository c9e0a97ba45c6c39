"""thrifty.data: datasets that ship with the dependencies or the interpreter, so nothing is downloaded."""

from thrifty.data.digits import load_digits_split
from thrifty.data.stdlib_text import StdlibCorpus, load_stdlib_corpus

__all__ = ["StdlibCorpus", "load_digits_split", "load_stdlib_corpus"]
