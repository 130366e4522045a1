"""Rendering of a bench report (``run_bench``): rich tables and a PNG plot.

Only reads the report dictionary, so a saved ``--json`` file renders the same way.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsqdeploy.fileio import write_with
from fsqdeploy.metrics import PSNR_CAP
from fsqdeploy.runtime.bench.settings import REFERENCE

PHOTO = "photo"  # the scope of whole-photo rows (runtime/bench/photos.py)

Row = dict[str, Any]
Key = tuple[str, str, str, int, str, str]


def _device(row: Row) -> str:
    """Where a row ran; reports of schema version 1 did not say, but only GPU rows had CUDA events."""
    return row.get("device") or ("cuda" if row.get("timing") == "cuda-events" else "cpu")


def _label(row: Row) -> str:
    label = row["backend"] if row["precision"] == "fp32" else f"{row['backend']}:{row['precision']}"
    if row["backend"] == REFERENCE and _device(row) != "cpu":
        label += f":{_device(row)}"
    return f"{label} (device io)" if row.get("io") == "device" else label


def _key(row: Row) -> Key:
    return (row["backend"], row["precision"], _device(row), _scope(row), row["batch_size"], row["stage"],
            row.get("io", "host"))


def _scope(row: Row) -> str:
    """"patch" (a batch of bench images) or "photo" (one whole image, --photo-size); reports before
    the photo rows have only the former."""
    return row.get("scope", "patch")


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return f"≥{PSNR_CAP:g}" if value >= PSNR_CAP else f"{value:.2f}"


def _pct(value: float) -> str:
    return {1.0: "100%", 0.0: "0%"}.get(value, f"{100 * value:.4f}%")


def _err(value: float | None) -> str:
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:.2g}"


def speedups(results: list[Row]) -> dict[Key, float]:
    """Row key -> PyTorch's p50 latency / this row's, where PyTorch ran at that batch and stage (the
    median: a few calls slowed by a neighbour on the machine do not move it). Like is compared with
    like: a GPU row against torch:cuda when it ran, else against torch on the CPU, labelled as such."""
    torch_p50 = {(_device(r), _scope(r), r["batch_size"], r["stage"]): r["latency_ms"]["p50"]
                 for r in results if r["backend"] == REFERENCE and r["precision"] == "fp32"}
    out = {}
    for r in results:
        at = (_scope(r), r["batch_size"], r["stage"])
        base = torch_p50.get((_device(r), *at)) or torch_p50.get(("cpu", *at))
        if base:
            out[_key(r)] = base / r["latency_ms"]["p50"]
    return out


def _table(title: str, columns: Sequence[str], left: Sequence[str], **options: Any) -> Any:
    """A rich table: text columns (``left``) left-aligned, numbers right-aligned; ``options`` per
    column (default: no wrapping)."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right", **options.get(col, {"no_wrap": True}))
    return table


def _header(report: Row, console: Any) -> None:
    from rich.markup import escape

    m, s, a = report["machine"], report["settings"], report["artifact"]
    gpu = m["gpu"]["name"] if m["gpu"] else "no GPU"
    console.print(f"[bold]fsqdeploy bench[/] {a['path']}  model {a['model_id'][:12]}  {_model_text(a)}")
    timed = f"{s['iters']} iters" if s["iters"] is not None else f"{s['seconds']:g} s"
    console.print(f"{m['cpu']} ({m['usable_cores']} of {m['cores']} cores usable), {gpu}; {s['threads']} threads; "
                  f"warm-up {s['warmup']}, {timed} per measurement; fidelity on {s['images']} images of {s['data']}"
                  f" against {s.get('reference', REFERENCE)}")
    if s.get("data_note"):
        console.print(f"[yellow]note:[/] {escape(s['data_note'])}")


def _model_text(a: Row) -> str:
    """What the artifact codes: a patch per vector (paper), or a latent grid of f x f-pixel cells."""
    if a.get("arch") == "conv":
        f = a["downsample"]
        return (f"conv, {a['code_width']} indices per {f}x{f}-pixel cell, {a['bits_per_cell']} bits/cell "
                f"({a['bits_per_cell'] / f**2:.4g} bpp); bench crops {a['image_size']} px")
    return (f"{a['image_size']} px, {a['code_width']} indices, {a['bits_per_image']} bits/image "
            f"({a['bits_per_pixel']:.4g} bpp)")


def _latency(report: Row, console: Any) -> None:
    results = report["results"]
    ratio = speedups(results)
    clocks = sorted({r.get("timing", "wall") for r in results})
    columns = ("backend", "batch", "image", "stage", "p50", "p90", "p99", "mean", "images/s", "p50 vs torch")
    table = _table(f"latency (ms; {', '.join(clocks).replace('cuda-events', 'CUDA events')})", columns,
                   left=("backend", "stage"))
    previous = None
    for r in results:
        label, lat = _label(r), r["latency_ms"]
        size = "x".join(map(str, r["image_size"][::-1])) if r.get("image_size") else "-"  # W x H
        table.add_row(label if label != previous else "", str(r["batch_size"]), size, r["stage"],
                      _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]), _ms(lat["mean"]),
                      f"{r['throughput_ips']:,.0f}", f"{ratio[_key(r)]:.2f}x" if _key(r) in ratio else "-",
                      end_section=r["stage"] == "roundtrip" and r is not results[-1])
        previous = label
    console.print(table)
    if any(r["backend"] == REFERENCE and _device(r) == "cuda" for r in results):
        console.print("'vs torch': GPU rows against torch:cuda, CPU rows against torch on the CPU.")


def _skipped(report: Row, console: Any) -> None:
    from rich.markup import escape

    if not report["skipped"]:
        return
    table = _table("skipped (cannot run here)", ("backend", "reason"), left=("backend", "reason"),
                   reason={"overflow": "fold"})
    for k in report["skipped"]:
        table.add_row(_label(k), f"[yellow]skipped:[/] {escape(k['reason'])}")
    console.print(table)


def _pixels(agreement: float | None, max_error: int | None) -> str:
    """Share of 8-bit values equal, and how many levels apart the others are at most."""
    if agreement is None or max_error is None:
        return "-"
    return _pct(agreement) if max_error == 0 else f"{_pct(agreement)} (max {max_error})"


def _fidelity(report: Row, console: Any) -> None:
    from rich.markup import escape

    columns = ("backend", "indices\nequal", "flipped\nimages", "round trip\nPSNR vs ref", "round trip\nmax err",
               "decoder\nPSNR vs ref", "decoder\nmax err", "decoder\n8-bit equal", "PSNR\nvs input", "SSIM\nvs input",
               "bpp", "gate")
    table = _table(f"fidelity vs PyTorch FP32 ({report['settings'].get('reference', REFERENCE)}, same images)",
                   columns, left=("backend", "gate"), gate={"overflow": "fold", "min_width": 10})
    for f in report["fidelity"]:
        gate = "[cyan]reference[/]" if f["reference"] else (
            "[green]PASS[/]" if f["gate"]["passed"] else "[bold red]FAIL[/] " + escape("; ".join(f["gate"]["reasons"])))
        flipped = f"{f['flipped_images']} ({_pct(f['flipped_image_share'])})"
        table.add_row(_label(f), _pct(f["index_agreement"]), flipped,
                      _db(f["roundtrip_psnr_vs_reference"]), _err(f["roundtrip_max_abs_error"]),
                      _db(f.get("psnr_vs_reference")), _err(f.get("max_abs_error")),
                      _pixels(f.get("pixel_agreement"), f.get("max_pixel_error")), f"{f['psnr_vs_input']:.2f}",
                      f"{f['ssim_vs_input']:.4f}", f"{f['bits_per_pixel']:.4g}", gate)
    console.print(table)
    variants = [f for f in report["fidelity"] if "graph_variants" in f]
    if variants:
        console.print("graph variants: " + "; ".join(
            f"{_label(f)} encoder {f['graph_variants']['encoder']}, decoder {f['graph_variants']['decoder']} "
            f"({'tuned on this machine' if f['graph_variants']['tuned'] else 'defaults: fsqdeploy tune ART measures'})"
            for f in variants))
    whole = [f for f in report["fidelity"] if "photo_index_agreement" in f and not f["reference"]]
    if whole:  # spatial models: the whole photos at their own sizes, through the dynamic-shape graphs
        console.print(f"whole photos ({whole[0]['photos']}, each at its own size): indices equal to the reference: "
                      + ", ".join(f"{_label(f)} {_pct(f['photo_index_agreement'])}" for f in whole)
                      + "; the same files decoded, 8-bit pixels equal to the reference's: "
                      + ", ".join(f"{_label(f)} {_pixels(f['photo_pixel_agreement'], f['photo_max_pixel_error'])}"
                                  for f in whole))
    console.print("'round trip': each backend's own indices decoded by it; 'decoder': the reference indices decoded "
                  "by it, isolating the decoder. Every PSNR is a mean of per-image PSNRs, each capped at "
                  f"{PSNR_CAP:g} dB (≥{PSNR_CAP:g}: MSE below 1e-10).")


def _baselines(report: Row, console: Any) -> None:
    from rich.markup import escape

    rows = [b for b in report["baselines"] if b.get("scope") != PHOTO]  # the photo rows have a table of their own
    if not rows:
        return
    columns = ("codec", "images", "mode", "bytes", "bpp", "quality", "PSNR", "SSIM", "note")
    table = _table("rate and distortion vs JPEG / WebP (Pillow)", columns, left=("codec", "mode", "note"),
                   note={"overflow": "fold"})
    for i, b in enumerate(rows):
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
                      end_section=i + 1 < len(rows) and rows[i + 1]["codec"] == "fsq")  # a new scope
    console.print(table)


def photo_table(baselines: list[Row]) -> list[tuple[str | None, Row, dict[str, Row], dict[str, Row]]]:
    """(photo name or None for overall, the codec's row, {baseline: its equal_bytes row}, {baseline:
    its min_quality row}) per photo, overall last, from a report's ``scope: "photo"`` rows."""
    def rows_of(mode: str) -> dict[tuple[str, str | None], Row]:
        return {(b["codec"], b.get("image")): b for b in baselines if b.get("scope") == PHOTO and b["mode"] == mode}

    at_budget, lowest = rows_of("equal_bytes"), rows_of("min_quality")
    names = sorted({k[0] for k in at_budget})
    return [(b.get("image"), b,
             {n: at_budget[(n, b.get("image"))] for n in names if (n, b.get("image")) in at_budget},
             {n: lowest[(n, b.get("image"))] for n in names if (n, b.get("image")) in lowest})
            for b in baselines if b.get("scope") == PHOTO and b["mode"] == "codec"]


def _vs_tables(codec: Row) -> str:
    """The entropy-coded payload's actual size against its tables' cross-entropy ("fixed": coding 0)."""
    if codec.get("table_overhead") is not None:  # the mean row: summed over the entropy-coded photos
        return f"{codec['table_overhead']:+.2%}"
    if codec.get("table_bits") is None:
        return "fixed" if codec.get("coding") == 0 else "-"
    return f"{8 * codec['payload_bytes'] / codec['table_bits'] - 1:+.2%}"


def _photos(report: Row, console: Any) -> None:
    from rich.markup import escape

    rows = photo_table(report["baselines"])
    if not rows:
        if report["settings"].get("photo_note"):
            console.print(f"[yellow]note:[/] {escape(report['settings']['photo_note'])}")
        return
    names = list(rows[0][2])
    columns = ("photo", "size", "FSQ bytes", "payload\nvs tables", "bpp", "PSNR", "SSIM",
               *(f"{n.upper()}\n{c}" for n in names for c in ("quality", "bytes", "PSNR", "SSIM")))
    photos = report["settings"]["photos"]
    selection = f" ({photos['selection']})" if photos.get("selection") else ""
    table = _table(f"whole photos of {photos['data']}{selection}: the .fsq file vs JPEG / WebP at no more bytes",
                   columns, left=("photo", "size"))
    floor_used = False
    for i, (name, codec, others, lowest) in enumerate(rows):
        cells = []
        for n in names:
            b = others[n]
            fits = b["images_within_budget"] > 0
            if not fits and name is not None and n in lowest:  # no file this small: its smallest, marked *
                b, floor_used = lowest[n], True
                cells += [f"{b['quality']}*", f"{b['bytes_mean']:.0f}*", _db(b.get("psnr_vs_input")),
                          "-" if b.get("ssim_vs_input") is None else f"{b['ssim_vs_input']:.4f}"]
                continue
            cells += ["-" if b.get("quality_mean") is None else f"{b['quality_mean']:.3g}",
                      "-" if not fits else f"{b['bytes_mean']:.0f}", _db(b.get("psnr_vs_input")),
                      "-" if b.get("ssim_vs_input") is None else f"{b['ssim_vs_input']:.4f}"]
        size = "x".join(map(str, codec["image_size"][::-1])) if codec.get("image_size") else "-"
        table.add_row(escape(name or "mean"), size, f"{codec['bytes_mean']:.0f}", _vs_tables(codec),
                      f"{codec['bits_per_pixel']:.4g}",
                      _db(codec["psnr_vs_input"]), f"{codec['ssim_vs_input']:.4f}", *cells,
                      end_section=i == len(rows) - 2 and rows[-1][0] is None)  # the mean row apart
    console.print(table)
    if floor_used:
        console.print("* no file of that baseline is as small as FSQ's: its smallest (lowest quality), which "
                      "has more bytes")
    overall = rows[-1][1]
    for n, beat in overall.get("beats", {}).items():
        gain = "" if beat["psnr_gain_db"] is None else f", {beat['psnr_gain_db']:+.2f} dB on average"
        console.print(f"FSQ beats {n.upper()} at no more bytes (PSNR) on {beat['wins']} of {beat['images']} photos"
                      f"{gain}")
        floor = overall.get("beats_smallest", {}).get(n)
        if floor and floor["images"]:
            console.print(f"  where {n.upper()} cannot get as small: FSQ beats its smallest file (PSNR) on "
                          f"{floor['wins']} of {floor['images']} photos, {floor['psnr_gain_db']:+.2f} dB on average, "
                          f"with {floor['bytes_ratio']:.2f}x its bytes")
    for b in report["baselines"]:
        if b.get("scope") == PHOTO and b["mode"] == "equal_bytes" and b.get("image") is None and b.get("note"):
            console.print(f"[yellow]{b['codec'].upper()}:[/] {escape(b['note'])}")
    if report["settings"].get("photo_note"):  # e.g. photos the model trained on
        console.print(f"[yellow]note:[/] {escape(report['settings']['photo_note'])}")


def print_report(report: Row, console: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = console or Console(width=max(120, shutil.get_terminal_size((140, 24)).columns))
    for section in (_header, _latency, _skipped, _fidelity, _baselines, _photos):
        section(report, console)
    gates = report["gates"]
    if gates["passed"]:
        console.print("[green]all gates passed[/]")
    for failure in gates["failures"]:
        console.print(f"[bold red]gate failed:[/] {escape(failure)}")


def write_plot(report: Row, path: str | Path) -> None:
    """PNG: p50 latency vs batch size per backend and stage; PSNR vs bits per pixel against JPEG/WebP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, rd) = plt.subplots(1, 2, figsize=(13, 5))
    _plot_latency(lat, report)
    notes = _plot_rate_distortion(rd, report)
    if notes:  # below the panels, where they cannot cover a point
        fig.text(0.5, 0.01, "\n".join(notes), ha="center", va="bottom", fontsize=7)
    a = report["artifact"]
    rate = (f"{a['bits_per_cell']} bits per {a['downsample']}x{a['downsample']}-pixel cell" if a.get("arch") == "conv"
            else f"{a['bits_per_image']} bits/image")
    fig.suptitle(f"fsqdeploy bench: {Path(a['path']).name}, {rate}")
    fig.tight_layout(rect=(0, 0.035 * len(notes), 1, 1))
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _plot_latency(ax: Any, report: Row) -> None:
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for r in report["results"]:
        if _scope(r) == "patch":  # latency against batch size: the one-photo rows are not on that axis
            series[(_label(r), r["stage"])].append((r["batch_size"], r["latency_ms"]["p50"]))
    labels = sorted({k[0] for k in series}, key=[_label(r) for r in report["results"]].index)
    colours = {label: f"C{i}" for i, label in enumerate(labels)}
    styles = {"encode": "-", "decode": "--", "roundtrip": ":"}
    for (label, stage), points in series.items():
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, styles[stage], marker="o", color=colours[label], label=f"{label} {stage}")
    batch_sizes = sorted({r["batch_size"] for r in report["results"] if _scope(r) == "patch"})
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="p50 latency (ms)",
           title=f"latency ({report['machine']['threads']} threads, {report['machine']['cpu']})")
    if batch_sizes:
        ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def _plot_rate_distortion(ax: Any, report: Row) -> list[str]:
    """Scatter the baselines; returns the n/a notes of the equal-bytes search."""
    markers = {"fsq": "*", "jpeg": "o", "webp": "s"}  # filled: model-size images; hollow: tiles and photos
    for b in report["baselines"]:
        if b.get("bits_per_pixel") is None or b.get("psnr_vs_input") is None:
            continue
        if b.get("scope") == PHOTO and (b.get("image") is not None or b["mode"] == "quality"):
            continue  # per photo and the sweep: the rate-distortion plot's (--rd-plot); here the means
        size = "x".join(map(str, b["image_size"])) if b.get("image_size") else "photos"
        what = {"codec": "FSQ", "equal_bytes": "at FSQ bytes", "min_quality": "q=1"}[b["mode"]]
        name = f"{b['codec'].upper()} {what} ({size})" if b["codec"] != "fsq" else f"FSQ ({size})"
        colour = {"fsq": "k", "jpeg": "C0", "webp": "C1"}.get(b["codec"], "C2")
        ax.scatter(b["bits_per_pixel"], b["psnr_vs_input"], marker=markers.get(b["codec"], "^"),
                   s=160 if b["codec"] == "fsq" else 50, edgecolors=colour,
                   facecolors="none" if b["scope"] != "patch" else colour,
                   linewidths=2 if b["scope"] == PHOTO else 1, label=name)
    ax.set(xscale="log", xlabel="bits per pixel", ylabel="PSNR vs input (dB)", title="rate-distortion")
    ax.grid(True, which="both", alpha=0.3)
    if ax.collections:
        ax.legend(fontsize=7)
    return [f"{b['codec'].upper()} {'x'.join(map(str, b.get('image_size') or [])) or 'photos'}: {b['note']}"
            for b in report["baselines"] if b.get("note") and b["mode"] == "equal_bytes"
            and (b.get("scope") != PHOTO or b.get("image") is None)]
