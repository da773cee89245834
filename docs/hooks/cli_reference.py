"""MkDocs hook: the CLI reference page is the commands' own ``--help``, rendered at build time.

A page holding ``<!-- cli-reference -->`` ... ``<!-- /cli-reference -->`` gets, in place of
the markers and what lies between them (a note for readers of the raw file), ``unetkit
--help`` and then one section per command with that command's ``--help``, exactly as a
user's terminal shows it (click's plain layout, 80 columns). The commands are those the root
help lists, so a new command, option, default or help text appears without anyone copying
it, and a command whose help fails to render fails the build.

The help is produced in a child process by the entry point ``unetkit.cli.main`` of the tree
being built (``src/`` first on the path), with ``TYPER_USE_RICH=0`` for plain text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

START, END = "<!-- cli-reference -->", "<!-- /cli-reference -->"
ROOT = Path(__file__).resolve().parents[2]

# Runs in the child: {"": root help, "NAME": help of NAME, ...} as JSON on stdout.
_CHILD = r"""
import contextlib, io, json, sys
from unetkit.cli import main

def help_of(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*args, "--help"])
    if code != 0:
        raise SystemExit(f"unetkit {' '.join(args)} --help exited with {code}")
    return out.getvalue()

root = help_of()
lines = root.splitlines()
start = lines.index("Commands:") + 1
names = [line.split()[0] for line in lines[start:] if line.startswith("  ") and line.strip()]
pages = {"": root}
pages.update({name: help_of(name) for name in names})
json.dump(pages, sys.stdout)
"""

_cache: dict[str, str] = {}


def cli_help() -> dict[str, str]:
    """``{"": root help, command: help}`` in the order ``unetkit --help`` lists them."""
    if not _cache:
        env = dict(os.environ, TYPER_USE_RICH="0", NO_COLOR="1", COLUMNS="80")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, cwd=ROOT
        )
        if proc.returncode != 0:
            raise RuntimeError(f"rendering the CLI help failed:\n{proc.stderr}")
        _cache.update(json.loads(proc.stdout))
    return _cache


def render(pages: dict[str, str]) -> str:
    """Markdown: an index table of the commands, then each command's help as a text block."""
    names = [n for n in pages if n]
    out = ["| command | what it does |", "|---|---|"]
    for name in names:
        out.append(f"| [`{name}`](#unetkit-{name}) | {_summary(pages[name])} |")
    out += ["", "## unetkit", "", "```text", pages[""].rstrip(), "```", ""]
    for name in names:
        out += [f"## unetkit {name}", "", "```text", pages[name].rstrip(), "```", ""]
    return "\n".join(out)


def _summary(text: str) -> str:
    """The first paragraph after the usage line, on one line."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    first = paragraphs[1] if len(paragraphs) > 1 else ""
    return " ".join(first.split()).replace("|", "\\|")


def on_page_markdown(markdown: str, page, config, files) -> str:
    if START not in markdown:
        return markdown
    head, rest = markdown.split(START, 1)
    if END not in rest:
        raise ValueError(f"{page.file.src_path}: {START} without {END}")
    return head + render(cli_help()) + rest.split(END, 1)[1]
