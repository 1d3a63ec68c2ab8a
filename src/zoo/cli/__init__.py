"""Thin command-line entry points; the only code that reads Hydra configs."""
