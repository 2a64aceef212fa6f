"""Families of ice patches, each drawn its own way from the physical description."""
