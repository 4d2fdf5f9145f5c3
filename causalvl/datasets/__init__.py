"""Datasets: real image sources, bias constructions, a word tokenizer, public-benchmark loaders."""
