"""The documentation agrees with the code: every command line shown in README.md and docs/*.md
parses, the cheap ones run on tiny data, and ``unetkit --version`` is the package's version.

What each kind of line gets:

* ``unetkit ...`` and ``torchrun ... -m unetkit ...`` in ``bash`` blocks: parsed by the command
  they name, as the CLI parses them (unknown options, missing or extra arguments, values of
  the wrong type or outside a choice fail). Those in ``RUN`` also run, in that order, in a
  folder holding the paths the docs use: a tiny labelme folder (``my_labelme/``), a tiny
  checkpoint (``runs/exp1/best.pt``) and tiny images (``new_images/``). The rest are
  parse-only: training (``train``, ``demo``: minutes), ``torchrun`` (several processes),
  and lines that need data the docs only name (slides, ISBI 2012, your own folders).
* ``python bench/NAME.py ...``: the script exists and defines every ``--flag`` used.
* ``python`` blocks: compile.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import shutil
from pathlib import Path

import click
import pytest
import tomllib
import typer.main

from unetkit.cli import app, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>\w*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)

# Run for real (in this order) on tiny data, not only parsed; each must still be in the docs.
RUN = [
    "unetkit prepare my_labelme/ data/ --labels labels.txt --val-fraction 0.2",
    "unetkit verify data/",
    "unetkit models --size 572",
    "unetkit info runs/exp1/best.pt",
    "unetkit predict runs/exp1/best.pt new_images/ -o predictions/ --labelme",
    "unetkit predict runs/exp1/best.pt new_images/ -o predictions/",
    "unetkit evaluate runs/exp1/best.pt data/ -o report/",
    "unetkit export runs/exp1/best.pt --format onnx -o model.onnx",
    "unetkit predict model.onnx new_images/ -o predictions_onnx/",
    "unetkit export runs/exp1/best.pt --format torchscript -o model.ts",
]


def _blocks(lang: str) -> list[tuple[Path, str]]:
    found = []
    for page in PAGES:
        for m in FENCE.finditer(page.read_text()):
            if m["lang"] == lang:
                body = "\n".join(line[len(m["indent"]) :] for line in m["body"].splitlines())
                found.append((page, body))
    return found


def _command_lines() -> list[tuple[str, list[str]]]:
    """(where, tokens) of every shell command line in the docs' bash blocks, comments and
    line continuations resolved."""
    lines = []
    for page, body in _blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                lines.append((f"{page.relative_to(ROOT)}: {line.strip()}", tokens))
    return lines


def _unetkit_args(tokens: list[str]) -> list[str] | None:
    """The arguments after ``unetkit`` (or ``torchrun ... -m unetkit``), else None."""
    if tokens[0] == "unetkit":
        return tokens[1:]
    if tokens[0] == "torchrun" and "unetkit" in tokens:
        i = tokens.index("unetkit")
        return tokens[i + 1 :] if tokens[i - 1] == "-m" else None
    return None


UNETKIT = [(w, a) for w, t in _command_lines() if (a := _unetkit_args(t)) is not None]
BENCH = [
    (w, t[1:])
    for w, t in _command_lines()
    if t[0] in ("python", "python3") and len(t) > 1 and t[1].startswith("bench/")
]


def parse(args: list[str]) -> click.Context:
    """Parse ``unetkit ARGS`` as the CLI does, without running the command."""
    group = typer.main.get_command(app)
    args = [a for a in args if a != "--debug"]  # main() takes it out before click sees it
    root = click.Context(group, info_name="unetkit")
    while args and args[0].startswith("-"):  # the root's own options (-v, --version)
        args = args[1:]
    assert args, "no command"
    command = group.get_command(root, args[0])  # type: ignore[attr-defined]
    assert command is not None, f"no command {args[0]!r}"
    return command.make_context(args[0], args[1:], parent=root)


def test_the_docs_show_commands():
    assert len(UNETKIT) > 40 and len(BENCH) > 10  # the extraction finds what the pages show
    shown = {" ".join(a) for _, a in UNETKIT}
    missing = [c for c in RUN if c.removeprefix("unetkit ") not in shown]
    assert not missing, f"RUN lists commands the docs no longer show: {missing}"


@pytest.mark.parametrize(("where", "args"), UNETKIT, ids=[w for w, _ in UNETKIT])
def test_command_parses(where, args):
    try:
        parse(args)
    except click.ClickException as exc:
        pytest.fail(f"{where}\n  -> {exc.format_message()}")


@pytest.mark.parametrize(("where", "args"), BENCH, ids=[w for w, _ in BENCH])
def test_bench_command_names_its_flags(where, args):
    script = ROOT / args[0]
    assert script.is_file(), where
    source = script.read_text()
    flags = [a.split("=")[0] for a in args[1:] if re.fullmatch(r"--[\w-]+(=.*)?", a)]
    for flag in flags:  # "--instance-args '--patch-size 192'": a value, not the script's
        assert f'"{flag}"' in source, f"{where}: {script.name} has no {flag}"


def test_python_blocks_compile():
    blocks = _blocks("python")
    assert blocks
    for page, body in blocks:
        compile(body, str(page), "exec")


def test_cheap_commands_run(tmp_path, monkeypatch, labelme_folder, tiny_checkpoint):
    """The ``RUN`` lines, as the docs show them, in a folder of tiny stand-ins."""
    from PIL import Image

    from unetkit import save_checkpoint

    shutil.copytree(labelme_folder, tmp_path / "my_labelme")
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\ncell\nnucleus\n")
    save_checkpoint(tiny_checkpoint(), tmp_path / "runs" / "exp1" / "best.pt")
    (tmp_path / "new_images").mkdir()
    for name in ("a.png", "b.png"):
        Image.open(next((tmp_path / "my_labelme").glob("*.png"))).save(
            tmp_path / "new_images" / name
        )
    monkeypatch.chdir(tmp_path)
    for line in RUN:
        assert main(shlex.split(line)[1:]) == 0, line
    assert (tmp_path / "data" / "dataset.json").is_file()
    assert (tmp_path / "predictions" / "a.json").is_file()  # --labelme
    assert (tmp_path / "report" / "metrics.json").is_file()
    assert (tmp_path / "predictions_onnx" / "b.png").is_file()


def test_version(capsys):
    """``unetkit --version``: the installed metadata's version, which is pyproject's."""
    assert main(["--version"]) == 0
    version = importlib.metadata.version("unetkit")
    assert capsys.readouterr().out.strip() == f"unetkit {version}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version == project["version"]


def test_changelog_has_released_versions():
    """Newest first: an Unreleased section, then versions; the package's version is one."""
    heads = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert heads[0] == "Unreleased"
    assert importlib.metadata.version("unetkit") in heads[1:]


def test_readme_links_resolve():
    """README is not part of the site, so mkdocs --strict does not see its links."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local and all((ROOT / t).exists() for t in local), local


def test_readme_is_for_users():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220
    assert "../shared" not in text  # paths of the development set-up only
    assert "make test" in text and "make demo" in text  # .ci/run runs README's test command


def test_every_test_file_the_docs_name_exists():
    """``pytest tests/...`` in the docs, CONTRIBUTING and the reliability table: the files are
    where the docs say (the tests mirror the package; a moved file must move in the docs)."""
    named = {
        path
        for page in [*PAGES, ROOT / "CONTRIBUTING.md"]
        for path in re.findall(r"\btests/[\w/]+\.py\b", page.read_text())
    }
    assert len(named) >= 10
    assert sorted(p for p in named if not (ROOT / p).is_file()) == []
