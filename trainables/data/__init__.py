"""Data: load + normalise (formats), choose a subset (selection), order it (curriculum), tokenize."""
