"""Training: ``fit(config) -> run folder``."""

from .cli_config import load_run_config
from .fit import fit

__all__ = ["fit", "load_run_config"]
