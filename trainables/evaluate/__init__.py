"""End-of-trial evaluations (perplexity, multiple choice, generation, LLM judge): a registry by name."""
