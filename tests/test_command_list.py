"""The command list of ``fsqdeploy --help``."""

import re


def test_the_command_list_has_each_command_once_with_its_summary_unbroken(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # wide enough that no summary wraps
    for _ in range(2):  # a second main() in the same process must not list the commands twice
        code, out, _ = cli("--help")
    assert code == 0
    rows = re.findall(r"^│ (\w+) {2,}(.*?)\s*│$", out, flags=re.MULTILINE)
    names = [name for name, _ in rows]
    assert names == ["train", "eval", "export", "check", "calibrate", "bench", "compress", "decompress",
                     "info", "tokenize", "detokenize", "triton", "tune"]
    summaries = dict(rows)
    # The docstring breaks this sentence after "with"; the list shows it on one line.
    assert "prove them equal to PyTorch; with --precision fp16 also FP16 graphs" in summaries["export"]
