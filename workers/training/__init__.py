"""Builders of the small self-made demo models (no hub downloads needed)."""
