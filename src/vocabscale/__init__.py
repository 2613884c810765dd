"""vocabscale: which vocabulary size should an LLM have for its size and compute budget?"""

__version__ = "0.1.0"
