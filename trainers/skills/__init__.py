"""Synthetic vision skills for the tiny experts (skilled init)."""
