"""thrifty: efficient deep-learning methods from recent papers, each tested and with a runnable claim."""

__version__ = "0.1.0"
