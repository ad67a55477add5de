"""Reusable layers (not models themselves)."""
