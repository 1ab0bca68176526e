"""Evaluation support for benchmarks and tests: segmentation scores (`metrics`) and simulated
user strokes (`strokes`). Not part of the shipped engine; imported from the repository root."""

__all__ = ["metrics", "strokes"]
