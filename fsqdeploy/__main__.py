"""``python -m fsqdeploy``: the command line, e.g. under ``torchrun --nproc-per-node N -m fsqdeploy train``."""

from fsqdeploy.cli import main

main()
