"""The rate-distortion plot of one or more bench reports (``fsqdeploy bench ART ... --rd-plot``): each
artifact's point on the whole photos (the mean over photos, and each photo faintly) against the JPEG
and WebP curves of a quality sweep over the same photos, PSNR and SSIM against bits per pixel.

Only reads the reports, so saved ``--json`` files plot the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsqdeploy.errors import FSQDeployError
from fsqdeploy.fileio import write_with

Row = dict[str, Any]
PHOTO = "photo"
CURVE_STYLE = {"jpeg": ("C0", "o"), "webp": ("C1", "s")}


def _photo_rows(report: Row, mode: str) -> list[Row]:
    return [b for b in report["baselines"] if b.get("scope") == PHOTO and b["mode"] == mode]


def curves(reports: list[Row]) -> dict[str, list[Row]]:
    """Baseline -> its sweep rows sorted by rate, from the first report that has a sweep."""
    for report in reports:
        rows = _photo_rows(report, "quality")
        if rows:
            out: dict[str, list[Row]] = {}
            for row in rows:
                out.setdefault(row["codec"], []).append(row)
            return {name: sorted(points, key=lambda r: r["bits_per_pixel"]) for name, points in out.items()}
    return {}


def artifact_label(report: Row) -> str:
    a = report["artifact"]
    kind = f"conv f={a['downsample']}" if a.get("arch") == "conv" else f"paper {a['image_size']} px"
    return f"{Path(a['path']).name} ({kind})"


def check_plottable(reports: list[Row]) -> None:
    """Every report has whole-photo codec rows, and one of them the baselines' sweep."""
    for report in reports:
        if not _photo_rows(report, "codec"):
            note = report["settings"].get("photo_note") or "the photo comparison was off"
            raise FSQDeployError(f"bench: no whole-photo rows for '{report['artifact']['path']}' to plot ({note}). "
                                 "Note: --rd-plot needs the baselines and at least one photo (--photo-images)")
    if not curves(reports):
        raise FSQDeployError("bench: no quality sweep in the reports. Note: run bench with --rd-plot, which adds it")


def write_rd_plot(reports: list[Row], path: str | Path) -> None:
    """PNG: PSNR and SSIM against bits per pixel; a line per baseline (its quality sweep), a star per
    artifact (the mean over the photos), a small dot per artifact and photo."""
    check_plottable(reports)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    sets = {(r["settings"]["photos"]["data"], tuple(r["settings"]["photos"]["names"])) for r in reports}
    for ax, metric, label in zip(axes, ("psnr_vs_input", "ssim_vs_input"), ("PSNR (dB)", "SSIM")):
        for name, points in curves(reports).items():
            colour, marker = CURVE_STYLE.get(name, ("C2", "^"))
            ax.plot([p["bits_per_pixel"] for p in points], [p[metric] for p in points], "-", marker=marker,
                    markersize=3, color=colour, label=f"{name.upper()} quality {points[0]['quality']}-"
                    f"{points[-1]['quality']}" if len(points) > 1 else name.upper())
        for i, report in enumerate(reports):
            colour = f"C{i + 3}"
            rows = _photo_rows(report, "codec")
            each = [r for r in rows if r.get("image") is not None]
            ax.scatter([r["bits_per_pixel"] for r in each], [r[metric] for r in each], s=12, color=colour, alpha=0.4)
            for mean in (r for r in rows if r.get("image") is None):
                ax.scatter(mean["bits_per_pixel"], mean[metric], marker="*", s=220, color=colour, edgecolors="k",
                           label=f"{artifact_label(report)}: {mean['bits_per_pixel']:.3f} bpp", zorder=3)
        ax.set(xscale="log", xlabel="bits per pixel (whole files)", ylabel=f"{label} vs input",
               title=f"{label.split()[0]} against rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    data, names = sorted(sets)[0]
    what = f"{len(names)} whole photos of {data}" if len(sets) == 1 else "whole photos (the reports' sets differ)"
    fig.suptitle(f"fsqdeploy bench: rate-distortion on {what}; stars: mean over photos, dots: each photo")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
