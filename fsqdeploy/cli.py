"""The ``fsqdeploy`` command line: train, eval, export, check, calibrate, bench, compress, decompress,
info, tokenize, detokenize, triton, tune.

Each stage keeps its commands in its own ``commands`` module; this file only assembles them and
turns user errors (FSQDeployError) into one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from fsqdeploy.errors import FSQDeployError

app = typer.Typer(
    name="fsqdeploy",
    help="Train, export and verify FSQ-VAE image codecs (PyTorch, ONNX Runtime, TensorRT).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    if app.registered_commands:  # main() runs more than once in one process (the tests)
        return
    from fsqdeploy.calibration import commands as calibration_commands
    from fsqdeploy.export import commands as export_commands
    from fsqdeploy.runtime import commands as runtime_commands
    from fsqdeploy.runtime.serving import commands as serving_commands
    from fsqdeploy.train import commands as train_commands

    commands = {
        "train": train_commands.train, "eval": train_commands.evaluate,
        "export": export_commands.export, "check": export_commands.check,
        "calibrate": calibration_commands.calibrate, "bench": runtime_commands.bench,
        "compress": runtime_commands.compress, "decompress": runtime_commands.decompress,
        "info": runtime_commands.info, "tokenize": runtime_commands.tokenize,
        "detokenize": runtime_commands.detokenize,
        "triton": serving_commands.triton, "tune": runtime_commands.tune,
    }
    for name, function in commands.items():
        app.command(name, short_help=_summary(function))(function)


def _summary(function: object) -> str:
    """The docstring's first paragraph as one line: the command list keeps a docstring's line
    breaks, which split its sentences at the source's wrap column."""
    paragraph = (getattr(function, "__doc__", None) or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except FSQDeployError as e:
        print(f"fsqdeploy: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("fsqdeploy: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
