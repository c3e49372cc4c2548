"""Reusable view pieces: formatting, figures, grid column definitions."""
