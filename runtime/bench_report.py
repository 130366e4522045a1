"""Rendering of a bench report (``fsqdeploy.runtime.bench.run_bench``): rich tables and a PNG plot.

Only reads the report dictionary, so a saved ``--json`` file renders the same way.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from fsqdeploy.fileio import write_with

PSNR_CAP = 100.0  # fsqdeploy.metrics.psnr caps identical images at 100 dB


def _label(row: dict[str, Any]) -> str:
    label = row["backend"] if row["precision"] == "fp32" else f"{row['backend']}:{row['precision']}"
    return f"{label} (device io)" if row.get("io") == "device" else label


def _key(row: dict[str, Any]) -> tuple[str, str, int, str, str]:
    return (row["backend"], row["precision"], row["batch_size"], row["stage"], row.get("io", "host"))


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return f"≥{PSNR_CAP:g}" if value >= PSNR_CAP else f"{value:.2f}"


def _pct(value: float) -> str:
    return "100%" if value == 1.0 else f"{100 * value:.4f}%"


def _err(value: float) -> str:
    return "0" if value == 0 else f"{value:.2g}"


def speedups(results: list[dict[str, Any]], reference: str = "torch") -> dict[tuple[str, str, int, str, str], float]:
    """(backend, precision, batch, stage, io) -> torch's p50 latency / this row's, where torch ran
    (the median: a few calls slowed by a neighbour on the machine do not move it). Torch runs on
    host arrays; device-io rows are compared with it too, and labelled as such."""
    torch_p50 = {(r["batch_size"], r["stage"]): r["latency_ms"]["p50"]
                 for r in results if r["backend"] == reference and r["precision"] == "fp32"}
    out = {}
    for r in results:
        base = torch_p50.get((r["batch_size"], r["stage"]))
        if base:
            out[_key(r)] = base / r["latency_ms"]["p50"]
    return out


def print_report(report: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(width=max(120, shutil.get_terminal_size((140, 24)).columns))
    m, s, a = report["machine"], report["settings"], report["artifact"]
    gpu = m["gpu"]["name"] if m["gpu"] else "no GPU"
    console.print(f"[bold]fsqdeploy bench[/] {a['path']}  model {a['model_id'][:12]}  {a['image_size']} px, "
                  f"{a['code_width']} indices, {a['bits_per_image']} bits/image ({a['bits_per_pixel']:.4g} bpp)")
    timed = f"{s['iters']} iters" if s["iters"] is not None else f"{s['seconds']:g} s"
    console.print(f"{m['cpu']} ({m['usable_cores']} of {m['cores']} cores usable), {gpu}; {s['threads']} threads; "
                  f"warm-up {s['warmup']}, {timed} per measurement; fidelity on {s['images']} images of {s['data']}")
    if s.get("data_note"):
        console.print(f"[yellow]note:[/] {escape(s['data_note'])}")

    ratio = speedups(report["results"])
    clocks = sorted({r.get("timing", "wall") for r in report["results"]})
    table = Table(title=f"latency (ms; {', '.join(clocks).replace('cuda-events', 'CUDA events')})")
    for col in ("backend", "batch", "stage", "p50", "p90", "p99", "mean", "images/s", "p50 vs torch"):
        table.add_column(col, justify="left" if col in ("backend", "stage") else "right", no_wrap=True)
    previous = None
    for r in report["results"]:
        label = _label(r)
        key = _key(r)
        lat = r["latency_ms"]
        table.add_row(label if label != previous else "", str(r["batch_size"]), r["stage"],
                      _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]), _ms(lat["mean"]),
                      f"{r['throughput_ips']:,.0f}", f"{ratio[key]:.2f}x" if key in ratio else "-",
                      end_section=r["stage"] == "roundtrip" and r is not report["results"][-1])
        previous = label
    console.print(table)
    if report["skipped"]:
        table = Table(title="skipped (cannot run here)")
        table.add_column("backend", no_wrap=True)
        table.add_column("reason", overflow="fold")
        for k in report["skipped"]:
            table.add_row(_label(k), f"[yellow]skipped:[/] {escape(k['reason'])}")
        console.print(table)

    table = Table(title="fidelity vs PyTorch FP32 (same images)")
    cols = ("backend", "indices\nequal", "images\nw/ flips", "PSNR\nvs ref", "max err\nvs ref",
            "decoder\nPSNR vs ref", "decoder\nmax err", "PSNR\nvs input", "SSIM\nvs input", "bpp", "gate")
    for col in cols:
        table.add_column(col, justify="left" if col in ("backend", "gate") else "right",
                         no_wrap=col != "gate", overflow="fold", min_width=10 if col == "gate" else None)
    for f in report["fidelity"]:
        gate = "[cyan]reference[/]" if f["reference"] else (
            "[green]PASS[/]" if f["gate"]["passed"] else "[bold red]FAIL[/] " + escape("; ".join(f["gate"]["reasons"])))
        table.add_row(_label(f), _pct(f["index_agreement"]), _pct(f["images_with_flips"]),
                      _db(f["psnr_vs_reference"]), _err(f["max_abs_error_vs_reference"]),
                      _db(f["decoder_psnr_vs_reference"]), _err(f["decoder_max_abs_error"]),
                      f"{f['psnr_vs_input']:.2f}", f"{f['ssim_vs_input']:.4f}", f"{f['bits_per_pixel']:.4g}", gate)
    console.print(table)
    console.print("'vs ref': each backend's own indices decoded by it; 'decoder': the reference indices decoded "
                  "by it, isolating the decoder. PSNR vs ref pools the squared error over all images and is capped "
                  "at 100 dB (≥100: MSE below 1e-10); PSNR/SSIM vs input are means over images.")

    if report["baselines"]:
        table = Table(title="rate and distortion vs JPEG / WebP (Pillow)")
        for col in ("codec", "images", "mode", "bytes", "bpp", "quality", "PSNR", "SSIM", "note"):
            table.add_column(col, justify="left" if col in ("codec", "mode", "note") else "right",
                             no_wrap=col != "note", overflow="fold")
        for b in report["baselines"]:
            size = "x".join(map(str, b.get("image_size", []))) or "-"
            quality = b.get("quality", b.get("quality_mean"))
            mode = {"codec": "codec payload", "equal_bytes": f"<= {b.get('budget_bytes')} bytes",
                    "min_quality": "quality 1"}[b["mode"]]
            if b["mode"] == "equal_bytes":
                mode += f" ({b['images_within_budget']}/{b['images']} fit)"
            table.add_row(f"{b['codec']} {size}", str(b.get("images", "-")), mode,
                          "-" if b.get("bytes_mean") is None else f"{b['bytes_mean']:.1f}",
                          "-" if b.get("bits_per_pixel") is None else f"{b['bits_per_pixel']:.4g}",
                          "-" if quality is None else f"{quality:.3g}",
                          _db(b.get("psnr_vs_input")),
                          "-" if b.get("ssim_vs_input") is None else f"{b['ssim_vs_input']:.4f}",
                          escape(b.get("note") or ""),
                          end_section=b["codec"] == "webp" and b["mode"] == "min_quality")
        console.print(table)

    gates = report["gates"]
    if gates["passed"]:
        console.print("[green]all gates passed[/]")
    else:
        for failure in gates["failures"]:
            console.print(f"[bold red]gate failed:[/] {escape(failure)}")


def write_plot(report: dict[str, Any], path: str | Path) -> None:
    """PNG: p50 latency vs batch size per backend and stage; PSNR vs bits per pixel against JPEG/WebP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, rd) = plt.subplots(1, 2, figsize=(13, 5))
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for r in report["results"]:
        series[(_label(r), r["stage"])].append((r["batch_size"], r["latency_ms"]["p50"]))
    labels = sorted({k[0] for k in series}, key=[_label(r) for r in report["results"]].index)
    colours = {label: f"C{i}" for i, label in enumerate(labels)}
    styles = {"encode": "-", "decode": "--", "roundtrip": ":"}
    for (label, stage), points in series.items():
        xs, ys = zip(*sorted(points))
        lat.plot(xs, ys, styles[stage], marker="o", color=colours[label], label=f"{label} {stage}")
    batch_sizes = sorted({r["batch_size"] for r in report["results"]})
    lat.set(xscale="log", yscale="log", xlabel="batch size", ylabel="p50 latency (ms)",
            title=f"latency ({report['machine']['threads']} threads, {report['machine']['cpu']})")
    if batch_sizes:
        lat.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    lat.grid(True, which="both", alpha=0.3)
    lat.legend(fontsize=7, ncol=2)

    markers = {"fsq": "*", "jpeg": "o", "webp": "s"}  # filled: model-size images; hollow: tiles
    for b in report["baselines"]:
        if b.get("bits_per_pixel") is None or b.get("psnr_vs_input") is None:
            continue
        size = "x".join(map(str, b["image_size"]))
        what = {"codec": "FSQ", "equal_bytes": "at FSQ bytes", "min_quality": "q=1"}[b["mode"]]
        name = f"{b['codec'].upper()} {what} ({size})" if b["codec"] != "fsq" else f"FSQ ({size})"
        colour = {"fsq": "k", "jpeg": "C0", "webp": "C1"}[b["codec"]]
        rd.scatter(b["bits_per_pixel"], b["psnr_vs_input"], marker=markers[b["codec"]],
                   s=160 if b["codec"] == "fsq" else 50, edgecolors=colour,
                   facecolors="none" if b["scope"] == "tile" else colour, label=name)
    notes = [f"{b['codec'].upper()} {'x'.join(map(str, b['image_size']))}: {b['note']}"
             for b in report["baselines"] if b.get("note") and b["mode"] == "equal_bytes"]
    if notes:  # below the panels, where they cannot cover a point
        fig.text(0.5, 0.01, "\n".join(notes), ha="center", va="bottom", fontsize=7)
    rd.set(xscale="log", xlabel="bits per pixel", ylabel="PSNR vs input (dB)", title="rate-distortion")
    rd.grid(True, which="both", alpha=0.3)
    if rd.collections:
        rd.legend(fontsize=7)
    fig.suptitle(f"fsqdeploy bench: {Path(report['artifact']['path']).name}, "
                 f"{report['artifact']['bits_per_image']} bits/image")
    fig.tight_layout(rect=(0, 0.035 * len(notes), 1, 1))
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
