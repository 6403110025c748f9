"""Readers, datasets and transforms."""
