"""What checking a dataset folder finds: one :class:`Finding` per problem, and the report
around them (:func:`~unetkit.data.verify.check_dataset`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

MAX_LISTED = 5  # files or object ids named in one line; the rest are counted


def listed(items: list[str]) -> str:
    """The first ``MAX_LISTED`` items joined by commas, and how many more there are."""
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


@dataclass(frozen=True)
class Finding:
    """One problem: ``level`` is ``error`` or ``warning``; ``files`` are the files concerned."""

    level: str
    files: list[str]
    message: str


@dataclass
class VerifyReport:
    """What :func:`~unetkit.data.verify.check_dataset` found.

    Attributes:
        findings: problems, errors first (:func:`~unetkit.data.verify.verify`'s list).
        n_pairs: image / mask pairs (image / instance pairs without ``masks/``).
        n_instance_images: readable instance images checked.
        n_objects: objects in them (distinct ids other than 0, summed over the images).
    """

    findings: list[Finding]
    n_pairs: int = 0
    n_instance_images: int = 0
    n_objects: int = 0

    def summary(self) -> str:
        """``"N object(s) in M instance image(s)"``, or ``""`` without instance images."""
        if not self.n_instance_images:
            return ""
        return f"{self.n_objects} object(s) in {self.n_instance_images} instance image(s)"


def merge_findings(findings: list[Finding]) -> list[Finding]:
    """One finding per (level, message) with all its files; errors first."""
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in findings:
        grouped[(f.level, f.message)].extend(f.files)
    merged = [Finding(level, files, msg) for (level, msg), files in grouped.items()]
    return sorted(merged, key=lambda f: (f.level != "error",))
