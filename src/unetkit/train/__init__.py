"""Training: ``fit(config) -> run folder``."""

from .fit import fit, load_run_config

__all__ = ["fit", "load_run_config"]
