"""All samples in one table (CSV, Markdown) and two figures (PNG, SVG).

- accuracy against weight density, one line per method and one panel per model;
- training curves per sample group (the samples of a model that share densities or sparsity, with
  the model's dense samples as reference), drawn like the original's result plotter: the train
  accuracy averaged over each RigL step (the batches between two updates) against batches done.

Inputs are each sample's summary.json (written by dynsparse.train) and history.npz; the final
and best test accuracy come from the history's per-epoch test accuracy.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dynsparse.atomic import atomic_path, write_text  # noqa: E402
from dynsparse.blocks import load_npz  # noqa: E402
from dynsparse.methods import METHODS  # noqa: E402
from dynsparse.registry import model_entry  # noqa: E402
from dynsparse.settings import ModelSettings  # noqa: E402

METHOD_ORDER = ("dense", "static", "random", "rigl")
METHOD_COLOURS = {"dense": "#222222", "static": "#1f77b4", "random": "#ff7f0e", "rigl": "#d62728"}
METHOD_LABELS = {"dense": "dense", "static": "static", "random": "random regrow", "rigl": "RigL"}
TABLE_COLUMNS = (
    ("model", "model"),
    ("sample", "sample"),
    ("method", "method"),
    ("sparsity_setting", "densities / sparsity"),
    ("weight_density", "weight density"),
    ("block_size", "block"),
    ("pooling", "pooling"),
    ("epochs", "epochs"),
    ("final_test_accuracy", "final test acc."),
    ("best_test_accuracy", "best test acc."),
    ("train_seconds", "train time (s)"),
    ("throughput", "samples/s"),
    ("sparse_nonzeros", "non-zeros (sparse layers)"),
    ("parameters", "parameters (held)"),
)
MAX_BENCH_ROWS = 80


@dataclass
class SampleResult:
    model: str
    sample: str
    settings: ModelSettings
    summary: dict[str, Any]
    history: dict[str, np.ndarray]

    @property
    def is_dense(self) -> bool:
        return bool(model_entry(self.model).is_dense(self.settings))

    @property
    def method(self) -> str:
        return "dense" if self.is_dense else self.settings.rigl.method

    @property
    def sparsity_setting(self) -> str:
        return str(model_entry(self.model).sparsity_label(self.settings))

    @property
    def weight_density(self) -> float:
        """Nominal share of the weights held, over the layers that can be sparse."""
        return float(model_entry(self.model).weight_density(self.settings))

    @property
    def test_accuracy(self) -> np.ndarray:
        return np.asarray(self.history.get("test_accuracy", np.zeros(0)), dtype=np.float64)

    def row(self) -> dict[str, Any]:
        accuracy = self.test_accuracy
        summary = self.summary
        train_seconds = summary.get("train_seconds")
        if train_seconds is None and "train_seconds" in self.history:
            train_seconds = float(np.sum(self.history["train_seconds"]))
        throughput = summary.get("throughput_samples_per_second")
        if throughput is None and train_seconds:
            batch_size = self.settings.batch_size
            throughput = len(self.history["step"]) * batch_size / train_seconds
        nonzeros = summary.get("nonzero_weights")
        return {
            "model": self.model,
            "sample": self.sample,
            "method": self.method,
            "sparsity_setting": self.sparsity_setting,
            "weight_density": round(self.weight_density, 6),
            "block_size": self.settings.block_size,
            # Pooling only matters to a method that scores regrowth by the dense gradient.
            "pooling": self.settings.pooling if METHODS[self.method].needs_dense_grad else "",
            "epochs": self.settings.epochs,
            "final_test_accuracy": float(accuracy[-1])
            if len(accuracy)
            else summary.get("final_test_accuracy"),
            "best_test_accuracy": float(accuracy.max())
            if len(accuracy)
            else summary.get("best_test_accuracy"),
            "train_seconds": train_seconds,
            "throughput": throughput,
            "sparse_nonzeros": sum(nonzeros.values()) if nonzeros else None,
            "parameters": summary.get("total_parameters"),
        }


def load_results(
    summary_paths: Sequence[str | os.PathLike[str]], history_paths: Sequence[str | os.PathLike[str]]
) -> list[SampleResult]:
    if len(summary_paths) != len(history_paths):
        raise ValueError(f"{len(summary_paths)} summaries but {len(history_paths)} histories")
    results = []
    for summary_path, history_path in zip(summary_paths, history_paths, strict=True):
        summary = json.loads(Path(summary_path).read_text())
        folder = Path(summary_path).parent
        model = str(summary.get("model") or folder.parent.name)
        sample = str(summary.get("sample") or folder.name)
        if Path(history_path).parent != folder:
            raise ValueError(f"{history_path} is not beside {summary_path}")
        settings = model_entry(model).parse(summary["settings"])
        results.append(SampleResult(model, sample, settings, summary, load_npz(history_path)))
    return sorted(
        results,
        key=lambda r: (
            r.model,
            METHOD_ORDER.index(r.method) if r.method in METHOD_ORDER else 9,
            r.sample,
        ),
    )


# ---- tables -------------------------------------------------------------------------------------


def _csv_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def table_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key for key, _ in TABLE_COLUMNS])
    for row in rows:
        writer.writerow([_csv_cell(row[key]) for key, _ in TABLE_COLUMNS])
    return buffer.getvalue()


def _md_cell(key: str, value: Any) -> str:
    if value is None or value == "":
        return "–"
    if key.endswith("accuracy"):
        return f"{100 * float(value):.2f}%"
    if key == "weight_density":
        return f"{float(value):.3f}"
    if key in ("train_seconds",):
        return f"{float(value):.1f}"
    if key == "throughput":
        return f"{float(value):,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def results_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    return markdown_table(
        [label for _, label in TABLE_COLUMNS],
        [[_md_cell(key, row[key]) for key, _ in TABLE_COLUMNS] for row in rows],
    )


def csv_markdown(path: str | os.PathLike[str], max_rows: int = MAX_BENCH_ROWS) -> str:
    with open(path, newline="") as handle:
        table = list(csv.reader(handle))
    if not table:
        return "(empty)\n"
    header, body = table[0], table[1:]
    text = markdown_table(header, [[c.replace("|", "\\|") for c in row] for row in body[:max_rows]])
    if len(body) > max_rows:
        text += f"\n({len(body) - max_rows} more rows in `{Path(path).name}`)\n"
    return text


BENCH_TITLES = {"ops.csv": "Native op benchmark", "training.csv": "Training benchmark"}


def summary_markdown(
    rows: Sequence[Mapping[str, Any]], bench_csvs: Sequence[str | os.PathLike[str]] = ()
) -> str:
    parts = [
        "# Results",
        "Accuracy on the 10 000 MNIST test images: final = after the last epoch, best = best "
        "epoch. Weight density: share of the weights held in the layers that can be sparse "
        "(FC: both layers; transformer: every sparse layer). Parameters: trainable values "
        "held (a sparse layer counts its stored block values).\n",
        results_markdown(rows),
    ]
    csvs = [Path(p) for p in bench_csvs if str(p).endswith(".csv")]
    if csvs:
        parts.append("## Benchmarks")
        for path in csvs:
            parts.append(f"### {BENCH_TITLES.get(path.name, path.stem)} (`{path.name}`)")
            parts.append(csv_markdown(path))
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


# ---- figures ------------------------------------------------------------------------------------


def _save_figure(figure: Figure, png: str | os.PathLike[str], svg: str | os.PathLike[str]) -> None:
    with atomic_path(png) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    with atomic_path(svg) as tmp:
        figure.savefig(tmp, format="svg")
    plt.close(figure)


def _method_sort_key(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def _series_label(result: SampleResult) -> str:
    label = METHOD_LABELS.get(result.method, result.method)
    block = result.settings.block_size
    return label if block == 1 or result.method == "dense" else f"{label}, block {block}"


def accuracy_vs_density_figure(results: Sequence[SampleResult]) -> Figure:
    """Final test accuracy against weight density; one series per method (and block size)."""
    models = sorted({r.model for r in results}) or ["fc"]
    with plt.style.context("bmh"):
        figure, axes = plt.subplots(
            1, len(models), figsize=(5.5 * len(models), 4.2), dpi=100, layout="constrained"
        )
        for ax, model in zip(np.atleast_1d(axes), models, strict=True):
            members = [r for r in results if r.model == model and len(r.test_accuracy)]
            series: dict[str, list[SampleResult]] = {}
            for result in sorted(members, key=lambda r: (_method_sort_key(r.method), r.sample)):
                series.setdefault(_series_label(result), []).append(result)
            for index, (label, group) in enumerate(series.items()):
                group.sort(key=lambda r: (r.weight_density, r.sample))
                x = [r.weight_density for r in group]
                y = [100 * float(r.test_accuracy[-1]) for r in group]
                method = group[0].method
                if method == "dense":
                    for value in y:
                        ax.axhline(value, color=METHOD_COLOURS["dense"], linewidth=0.8, ls="--")
                # A line only joins different densities; samples at one density stay points.
                joined = len(set(x)) == len(x)
                # Series side by side (a few % apart on the log axis) so equal points stay visible.
                dodge = 1.0 if method == "dense" else 1.05 ** (index - (len(series) - 1) / 2)
                x = [xi * dodge for xi in x]
                ax.plot(
                    x,
                    y,
                    marker="os^Dv<>"[index % 7],
                    markersize=7,
                    linewidth=1 if joined else 0,
                    color=METHOD_COLOURS.get(method, f"C{index}"),
                    label=label if len(group) > 1 else f"{label}: {group[0].sample}",
                )
                if len(group) > 1:
                    for r, xi, yi in zip(group, x, y, strict=True):
                        ax.annotate(
                            r.sample,
                            (xi, yi),
                            textcoords="offset points",
                            xytext=(5, 3),
                            fontsize=7,
                        )
            ticks = sorted({round(r.weight_density, 3) for r in members} | {1.0})
            ax.set_xlim(min(ticks) / 1.5, 1.5)
            ax.set_xscale("log")
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("weight density of the sparse layers (log scale; 1 = dense)")
            ax.set_ylabel("final test accuracy (%)")
            ax.set_title(f"{model}: test accuracy against density", loc="left")
            ax.legend(fontsize=8, loc="lower right")
    return figure


def smoothed_accuracy(result: SampleResult) -> tuple[np.ndarray, np.ndarray]:
    """(batches done, mean train accuracy over each RigL step) as the original logged it."""
    accuracy = np.asarray(result.history["accuracy"], dtype=np.float64)
    steps = np.asarray(result.history["step"], dtype=np.int64)
    batches_per_epoch = result.summary.get("batches_per_epoch")
    updates_per_epoch = result.settings.rigl.updates_per_epoch
    if batches_per_epoch and updates_per_epoch:
        window = max(1, int(batches_per_epoch) // updates_per_epoch)
    else:
        window = max(1, len(accuracy) // 50)
    n = len(accuracy) // window * window
    if n == 0:
        return steps, accuracy
    means = accuracy[:n].reshape(-1, window).mean(axis=1)
    return steps[window - 1 : n : window], means


def sample_groups(results: Sequence[SampleResult]) -> list[tuple[str, list[SampleResult]]]:
    """Samples of one model sharing densities or sparsity, each with that model's dense samples."""
    groups: dict[tuple[str, str], list[SampleResult]] = {}
    for result in results:
        if not result.is_dense:
            groups.setdefault((result.model, result.sparsity_setting), []).append(result)
    named = []
    for (model, setting), members in sorted(groups.items()):
        dense = [r for r in results if r.model == model and r.is_dense]
        named.append((f"{model}, {setting}", dense + members))
    for model in sorted({r.model for r in results}):
        if not any(key[0] == model for key in groups):
            named.append((f"{model}, dense", [r for r in results if r.model == model]))
    return named


def curves_figure(results: Sequence[SampleResult]) -> Figure:
    """Per sample group: the whole run, and the second half zoomed in (where methods differ)."""
    groups = sample_groups(results)
    rows = max(1, len(groups))
    with plt.style.context("bmh"):
        figure, axes = plt.subplots(
            rows, 2, figsize=(12.0, 3.8 * rows), dpi=100, layout="constrained", squeeze=False
        )
        for (whole, zoom), (title, members) in zip(axes, groups, strict=False):
            for index, result in enumerate(members):
                x, y = smoothed_accuracy(result)
                if len(y) == 0:
                    continue
                same_method = [m for m in members if m.method == result.method]
                options = {
                    "linestyle": ("-", "--", ":", "-.")[same_method.index(result) % 4],
                    "linewidth": 1,
                    "alpha": 0.9,
                    "color": METHOD_COLOURS.get(result.method, f"C{index}"),
                }
                whole.plot(x, y, label=f"{result.sample} ({_series_label(result)})", **options)
                later = x > x[-1] / 2
                zoom.plot(x[later], y[later], **options)
            whole.set_ylim(0.0, 1.0)
            whole.set_yticks(np.arange(0.0, 1.01, 0.1))
            whole.set_title(title, loc="left")
            whole.legend(fontsize=7, loc="lower right")
            zoom.set_title(f"{title}: second half, zoomed", loc="left")
            for ax in (whole, zoom):
                ax.tick_params(axis="x", labelrotation=55)
                ax.set_xlabel("batches processed")
                ax.set_ylabel("train accuracy over the last RigL step")
    return figure


# ---- the stage ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryOutputs:
    table_csv: str | os.PathLike[str]
    table_md: str | os.PathLike[str]
    accuracy_png: str | os.PathLike[str]
    accuracy_svg: str | os.PathLike[str]
    curves_png: str | os.PathLike[str]
    curves_svg: str | os.PathLike[str]
    table_html: str | os.PathLike[str] | None = None


def summarize(
    summary_paths: Sequence[str | os.PathLike[str]],
    history_paths: Sequence[str | os.PathLike[str]],
    outputs: SummaryOutputs,
    bench_paths: Sequence[str | os.PathLike[str]] = (),
) -> list[dict[str, Any]]:
    results = load_results(summary_paths, history_paths)
    rows = [result.row() for result in results]
    markdown = summary_markdown(rows, bench_paths)
    write_text(outputs.table_csv, table_csv(rows))
    write_text(outputs.table_md, markdown)
    if outputs.table_html is not None:
        from dynsparse.report import markdown_page

        write_text(outputs.table_html, markdown_page("Results", markdown))
    _save_figure(accuracy_vs_density_figure(results), outputs.accuracy_png, outputs.accuracy_svg)
    _save_figure(curves_figure(results), outputs.curves_png, outputs.curves_svg)
    return rows
