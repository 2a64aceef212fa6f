"""Negatives that look like ice but are not."""
