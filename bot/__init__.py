"""Sami: a GitHub-driven deployment bot."""

__version__ = "0.1.0"
