"""The ``fsqdeploy`` command line: train, eval, export, check, bench, compress, decompress, tune.

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
    from fsqdeploy.calibration import commands as calibration_commands
    from fsqdeploy.export import commands as export_commands
    from fsqdeploy.runtime import commands as runtime_commands
    from fsqdeploy.runtime.serving import commands as serving_commands
    from fsqdeploy.train import commands as train_commands

    app.command("train")(train_commands.train)
    app.command("eval")(train_commands.evaluate)
    app.command("export")(export_commands.export)
    app.command("check")(export_commands.check)
    app.command("calibrate")(calibration_commands.calibrate)
    app.command("bench")(runtime_commands.bench)
    app.command("compress")(runtime_commands.compress)
    app.command("decompress")(runtime_commands.decompress)
    app.command("triton")(serving_commands.triton)
    app.command("tune")(runtime_commands.tune)


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
