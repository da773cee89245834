"""CLI basics: the models table, info, and error handling (one line, exit code 2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import unetkit
from unetkit import DataConfig, TrainConfig
from unetkit.checkpoint import save_checkpoint
from unetkit.cli import main
from unetkit.errors import UnetkitError


def test_models_table(capsys):
    assert main(["models", "--size", "572"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert lines["paper"][1:4] == ["31,030,658", "1->2", "388x388"]
    assert lines["milesial"][1] == "31,037,698"
    assert lines["reflect"][3] == "illegal"
    assert lines["reflect"][5] == "560/576"
    assert float(lines["paper"][4]) > 100  # GFLOPs of the paper's network on a 572 tile


def test_info(tmp_path, capsys, tiny_model, tiny_checkpoint):
    model = tiny_model("paper")
    ckpt = tiny_checkpoint(
        model,
        classes=["background", "membrane"],
        palette=[[0, 0, 0], [255, 0, 0]],
        preprocessing=DataConfig(),
        preset="paper",
        train_state={"epoch": 7, "step": 70},
    )
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0:background, 1:membrane" in out
    assert '"epoch": 7' in out
    assert f"{model.num_parameters():,}" in out


def test_bad_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"x": 1}, bad)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: ") and "bad.pt" in err


def test_console_script_runs_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "unetkit", "info", str(tmp_path / "missing.pt")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "missing.pt: no such checkpoint file" in proc.stderr


def test_import_has_no_side_effects():
    code = (
        "import sys, logging; import unetkit; "
        "assert not logging.getLogger().handlers; "
        "assert 'matplotlib' not in sys.modules; assert 'cv2' not in sys.modules; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr


def _one_error_line(err: str) -> str:
    """The single stderr line of a user error (no traceback, no exception class name)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Error:" not in lines[0], err
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--preset", "paper", "--patch-size", "256"], ["--patch-size 256", "252 or 268"]),
        (["--patch-size", "64x"], ["--patch-size", "N or HxW", "'64x'"]),
        (["--lr", "-1"], ["--lr", "lr must be > 0; got -1.0"]),
        (["--momentum", "2"], ["--momentum", "momentum must be in [0, 1); got 2.0"]),
        (["--time-budget", "-5"], ["--time-budget", ">= 0"]),
        (["--clip-grad", "-1"], ["--clip-grad", ">= 0"]),
        (["--optimizer", "adamx"], ["--optimizer", "adam, adamw, sgd, rmsprop"]),
        (["--schedule", "step"], ["--schedule", "constant, cosine, poly, plateau"]),
        (["--precision", "fp8"], ["--precision", "auto, fp32, bf16, fp16"]),
        (["--resize", "crop"], ["--resize", "letterbox"]),
        (["--epochs", "0"], ["--epochs", ">= 1"]),
        (["--depth", "-1"], ["--depth", "depth must be positive"]),
        # an option whose name is not its config key's (objects.head)
        (["--instance-head", "stars"], ["--instance-head: ", "boundary, distance, rays"]),
        (["--n-rays", "6"], ["--n-rays: ", "multiple of 4"]),
    ],
)
def test_bad_train_flags_are_one_line_naming_the_flag_exit_2(
    prepared_dataset, tmp_path, capsys, flags, expected
):
    run = tmp_path / "run"
    assert main(["train", str(prepared_dataset), "-o", str(run), *flags]) == 2
    line = _one_error_line(capsys.readouterr().err)
    for text in expected:
        assert text in line
    assert not run.exists()  # refused before anything was written


def test_illegal_default_size_names_patch_size(prepared_dataset, tmp_path, capsys):
    assert (
        main(["train", str(prepared_dataset), "-o", str(tmp_path / "r"), "--preset", "paper",
              "--patch-size", "256"]) == 2
    )  # fmt: skip
    line = _one_error_line(capsys.readouterr().err)
    assert "--patch-size 256" in line and "252 or 268" in line


def test_images_of_an_illegal_size_are_a_user_error(prepared_dataset, tmp_path, capsys):
    """--resize none trains on the images as they are: 64x80 is too small for this U-Net."""
    flags = ["--preset", "paper", "--depth", "3", "--base-width", "4", "--patch-size", "92"]
    argv = ["train", str(prepared_dataset), "-o", str(tmp_path / "r"), "--resize", "none"]
    assert main([*argv, *flags, "--epochs", "1", "--steps-per-epoch", "1"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "input height 64 is not legal for this U-Net" in line and "92" in line


def test_debug_works_before_and_after_the_subcommand(prepared_dataset, tmp_path, capsys):
    args = ["train", str(prepared_dataset), "-o", str(tmp_path / "r"), "--lr", "-1"]
    for argv in (["--debug", *args], [args[0], "--debug", *args[1:]], [*args, "--debug"]):
        with pytest.raises(UnetkitError, match="lr must be > 0"):
            main(argv)
    assert main(args) == 2
    assert "No such option" not in capsys.readouterr().err


@pytest.mark.parametrize("exc", [KeyError(101), ValueError("bad slice"), ZeroDivisionError("x")])
def test_a_genuine_bug_is_one_line_saying_so_exit_1(monkeypatch, capsys, exc):
    from unetkit import summary

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(summary, "preset_table", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    line = err.strip()
    assert line.startswith(f"internal error: {type(exc).__name__}: ")
    assert line.endswith("(run with --debug for a traceback; please report)")
    with pytest.raises(type(exc)):
        main(["models", "--debug"])


def test_usage_errors_are_one_line_exit_2(capsys):
    assert main(["models", "--size", "abc"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--size" in line and "(see 'unetkit models --help')" in line
    assert main(["train", "--no-such-flag"]) == 2
    assert "--no-such-flag" in _one_error_line(capsys.readouterr().err)


def test_console_script_user_error_and_debug_traceback(prepared_dataset, tmp_path):
    args = [sys.executable, "-m", "unetkit", "train", str(prepared_dataset)]
    args += ["-o", str(tmp_path / "r"), "--preset", "paper", "--patch-size", "256"]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "--patch-size 256" in line and "252 or 268" in line
    proc = subprocess.run([*args[:4], "--debug", *args[4:]], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "UnetkitError" in proc.stderr


def test_torch_floor_is_the_tested_version():
    """pyproject's torch floor is the version CI installs (the Makefile's pin), as README says."""
    root = Path(__file__).resolve().parents[2]
    pinned = re.search(r"torch==([\d.]+)", (root / "Makefile").read_text()).group(1)
    floor = re.search(r'"torch>=([\d.]+)"', (root / "pyproject.toml").read_text()).group(1)
    assert tuple(map(int, floor.split("."))) == tuple(map(int, pinned.split(".")))[:2]
    assert f"torch >= {floor}" in (root / "README.md").read_text()
    assert hasattr(torch.compiler, "is_compiling")  # what the floor protects (absent in 2.2)


def test_help_shows_the_config_defaults(capsys):
    """Flags default to None (so that "not given" is visible); --help shows the real default."""
    from unetkit.cli import main

    def words(out: str) -> str:  # the help's boxes wrap text: drop the frame, join the lines
        return " ".join(w for w in out.replace("│", " ").split())

    assert main(["train", "--help"]) == 0
    text = words(capsys.readouterr().out)
    for expected in ("0.002", "adamw", "cosine", "50, or unlimited with"):
        assert expected in text, expected
    assert main(["predict", "--help"]) == 0
    text = words(capsys.readouterr().out)
    assert "0.0" in text and "gaussian" in text and "0 = auto: 1 on a CPU" in text


def test_help_shows_on_off_flags_without_a_value_placeholder(capsys):
    """typer renders ``--overwrite`` as ``--overwrite <bool>``, as if it took a value."""
    from unetkit.cli import main

    for command in ("train", "predict", "evaluate", "compare", "demo", "prepare", "export"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "<bool>" not in out, command
    assert main(["train", "--help"]) == 0
    assert "--overwrite" in capsys.readouterr().out


def test_help_table_of_unset_defaults_names_options_that_use_it():
    """Each row of the table is the default ``--help`` shows for an option that has it."""
    from unetkit.cli import _command
    from unetkit.cli.help import UNSET_DEFAULTS

    root = _command()
    shown = {
        (param.opts[0], param.show_default)
        for sub in [root, *root.commands.values()]
        for param in sub.params
        if param.param_type_name == "option"
    }
    unused = [flag for flag, text in UNSET_DEFAULTS.items() if (flag, text) not in shown]
    assert not unused


def test_models_help_shows_the_presets_as_the_default_of_its_overrides(capsys, monkeypatch):
    """``models --num-classes`` overrides a preset's outputs: not given, they are the preset's
    (compare's --num-classes, not given, comes from the data)."""
    monkeypatch.setenv("COLUMNS", "240")
    assert main(["models", "--help"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"--num-classes .*\[default: \(the preset's\)\]", text)
    assert re.search(r"--in-channels .*\[default: \(the preset's\)\]", text)
    assert main(["compare", "--help"]) == 0
    assert re.search(r"--num-classes .*\[default: \(from the data\)\]", capsys.readouterr().out)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_every_inference_flag_reaches_the_predict_config(command, tmp_path, monkeypatch):
    """predict and evaluate hand each flag named after a PredictConfig field, as given, to
    the config (and nothing else; not given: None, the config's default)."""
    import dataclasses

    from unetkit.cli import _command, options
    from unetkit.config import PredictConfig

    seen: dict = {}

    def stop(**flags):
        seen.update(flags)
        raise UnetkitError("stop")

    monkeypatch.setattr(options, "predict_config", stop)
    fields = {f.name for f in dataclasses.fields(PredictConfig)}
    params = [p for p in _command().commands[command].params if p.name in fields]
    argv = [command, str(tmp_path / "m.pt"), str(tmp_path / "x"), "-o", str(tmp_path / "o")]
    values = {}
    for i, param in enumerate(p for p in params if not p.is_flag):
        values[param.name] = i + 1  # a value of its own: a crossed wire would show
        argv += [param.opts[0], str(i + 1)]
    argv.append("--tta")  # one on/off flag on, the other not given
    assert main(argv) == 2
    assert set(seen) == {p.name for p in params} and len(params) >= 17
    assert {k: float(v) for k, v in seen.items() if k in values} == values
    assert seen["tta"] is True and seen["fill_holes"] is None


def test_prepare_and_verify_count_objects(labelme_folder, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["prepare", str(labelme_folder), str(out)]) == 0
    said = capsys.readouterr().out
    n = int(re.search(r"objects: (\d+)", said).group(1))
    assert n > 0 and len(list((out / "instances").iterdir())) > 0
    assert main(["verify", str(out)]) == 0
    assert f"{n} object(s) in " in capsys.readouterr().out


def test_train_options_become_the_config_fit_gets(prepared_dataset, tmp_path, monkeypatch):
    """The options given (and only those) override the config file, each at its own key."""
    import importlib
    import json

    from unetkit.config import AugmentConfig

    fit_module = importlib.import_module("unetkit.train.fit")  # the package exports fit()
    seen = {}
    monkeypatch.setattr(fit_module, "fit", lambda cfg, **kw: seen.setdefault("cfg", cfg))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"lr": 0.5, "seed": 7, "data": {"resize": "letterbox"}}))
    argv = ["train", str(prepared_dataset), "-o", str(tmp_path / "r"), "--config", str(config)]
    flags = ["--preset", "milesial", "--patch-size", "64", "--base-width", "4", "--depth", "2",
             "--normalize", "image", "--sampling", "area", "--class-weights", "1,2,3",
             "--val-stems", "a, b,",
             "--boundary-width", "3", "--boundary-fraction", "0.4",
             "--no-augment", "--compile", "--epochs", "2"]  # fmt: skip
    assert main([*argv, *flags]) == 0
    cfg = seen["cfg"]
    assert cfg.lr == 0.5 and cfg.seed == 7 and cfg.data.resize == "letterbox"  # the file's
    assert cfg.preset == "milesial" and cfg.data.size == (64, 64) and cfg.epochs == 2
    assert cfg.model == unetkit.preset_config("milesial", base_width=4, depth=2)
    assert cfg.data.normalize == "image" and cfg.class_weights == (1.0, 2.0, 3.0)
    assert cfg.data.sampling == "area"
    assert cfg.val_stems == ("a", "b") and cfg.objects.boundary_width == 3
    assert cfg.objects.boundary_fraction == 0.4
    assert cfg.augment == AugmentConfig.none() and cfg.compile is True
    assert cfg.optimizer == TrainConfig.optimizer and cfg.weight_map is None  # not given
    seen.clear()
    assert main([*argv, "--augment", "--class-weights", "balanced", "--patch-size", "64x96"]) == 0
    assert seen["cfg"].augment == AugmentConfig() and seen["cfg"].class_weights == "balanced"
    assert seen["cfg"].data.size == (64, 96)  # H x W, as the auto recipe chooses them
    assert seen["cfg"].model is None  # no model option: the preset's config, resolved by fit


def test_bad_class_weights_name_the_option(prepared_dataset, tmp_path, capsys):
    argv = ["train", str(prepared_dataset), "-o", str(tmp_path / "r"), "--class-weights"]
    assert main([*argv, "1,x"]) == 2
    assert "--class-weights: 'balanced' or numbers, got '1,x'" in capsys.readouterr().err
    assert main([*argv, "-1,2"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: --class-weights: class_weights must be 'balanced' or numbers")


def test_help_shows_a_default_for_every_option(capsys, monkeypatch):
    """Every option of every command says in --help what it is when not given."""
    from unetkit.cli import _command

    root = _command()
    options = 0
    for name, sub in [("", root), *root.commands.items()]:
        for param in sub.params:
            if param.param_type_name != "option" or param.name == "help" or param.required:
                continue
            options += 1
            shown = param.show_default
            assert isinstance(shown, str) or (shown and param.default is not None), (
                name,
                param.opts[0],
            )
    assert options >= 80
    monkeypatch.setenv("COLUMNS", "240")
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"--base-width .*\[default: \(the preset's; auto: 16 on a CPU", text)
    assert re.search(r"--resume .*\[default: \(a new run\)\]", text)


def test_help_shows_the_default_of_every_on_off_flag(capsys, monkeypatch):
    """Flags that are off by default said nothing (``--overwrite``, ``--tta``, ``--debug``)."""
    from unetkit.cli import _command

    monkeypatch.setenv("COLUMNS", "240")  # one row per option
    root = _command()
    flags = 0
    for name, sub in [("", root), *root.commands.items()]:
        assert main([name, "--help"] if name else ["--help"]) == 0
        rows = [r for r in capsys.readouterr().out.splitlines() if r.lstrip("│ ").startswith("-")]
        for param in sub.params:
            if not getattr(param, "is_bool_flag", False) or param.name == "help":
                continue
            flags += 1
            row = next(r for r in rows if r.lstrip("│ ").split()[0] == param.opts[0])
            assert "[default: " in row, (name, param.opts[0], row)
    assert flags >= 25
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"--overwrite +Reuse a non-empty run folder\. \[default: \(off\)\]", text)
    assert re.search(
        r"--compile +--no-compile +torch\.compile the model\. \[default: \(off\)\]", text
    )


def test_help_loads_no_heavy_stack():
    """``unetkit --help`` and each command's ``--help`` answer without torch, scikit-image,
    matplotlib or OpenCV (a second, not the torch start-up): the heavy imports wait for work."""
    script = (
        "import sys, contextlib, io\n"
        "from unetkit.cli import _command, main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [main([*c, '--help']) for c in [[], *([n] for n in _command().commands)]]\n"
        "heavy = ('torch', 'skimage', 'matplotlib', 'cv2', 'scipy')\n"
        "print(set(codes), sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split("\n")[-2] == "{0} []", done.stdout + done.stderr
