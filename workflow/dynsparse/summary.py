"""All samples in one table (CSV, Markdown) and two figures (PNG, SVG), aggregated over seeds.

Each training job is one (sample, seed). A sample's row gives, over its seeds, the final-epoch
test accuracy's mean, standard deviation, 95 % Student-t interval, min, max and n
(dynsparse.stats); "best" is the test accuracy at the epoch of best VALIDATION accuracy (mean over
seeds; empty when nothing is held out). A sample is compared with its baseline: the sample its
config names (`baseline:`), else the model's first dense sample; the difference is paired by seed
(mean and 95 % interval over the seeds both have).

- accuracy against weight density with error bars (95 % interval), one line per method and one
  panel per model;
- training curves per sample group (the samples of a model that share densities or sparsity, with
  the model's dense samples as reference), drawn like the original's result plotter: the train
  accuracy averaged over each RigL step (the batches between two updates) against batches done.

Inputs are each job's summary.json (written by dynsparse.train) and history.npz; the final and
best test accuracy come from the history's per-epoch accuracies. The curves show each sample's
first seed.
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
from dynsparse.stats import Summary, format_mean_ci, paired_difference  # noqa: E402
from dynsparse.stats import summarize as summarize_values  # noqa: E402

METHOD_ORDER = ("dense", "static", "random", "rigl")
METHOD_COLOURS = {"dense": "#222222", "static": "#1f77b4", "random": "#ff7f0e", "rigl": "#d62728"}
METHOD_LABELS = {"dense": "dense", "static": "static", "random": "random regrow", "rigl": "RigL"}
# (key, label) of table.csv's columns (accuracies as fractions; `_ci_low`/`_ci_high`: the 95 %
# Student-t interval of the mean over seeds).
TABLE_COLUMNS = (
    ("model", "model"),
    ("sample", "sample"),
    ("method", "method"),
    ("sparsity_setting", "densities / sparsity"),
    ("weight_density", "weight density"),
    ("layer_densities", "layer densities"),
    ("block_size", "block"),
    ("pooling", "pooling"),
    ("epochs", "epochs"),
    ("seeds", "seeds"),
    ("n", "n"),
    ("final_test_accuracy", "final test acc. (mean)"),
    ("final_test_accuracy_std", "std"),
    ("final_test_accuracy_ci_low", "95% CI low"),
    ("final_test_accuracy_ci_high", "95% CI high"),
    ("final_test_accuracy_min", "min"),
    ("final_test_accuracy_max", "max"),
    ("best_test_accuracy", "test acc. at best val. epoch"),
    ("final_validation_accuracy", "final val. acc."),
    ("baseline", "baseline"),
    ("difference", "difference to baseline"),
    ("difference_ci_low", "difference 95% CI low"),
    ("difference_ci_high", "difference 95% CI high"),
    ("difference_n", "paired seeds"),
    ("train_seconds", "train time (s)"),
    ("throughput", "samples/s"),
    ("sparse_nonzeros", "non-zeros (sparse layers)"),
    ("parameters", "parameters (held)"),
)
# The Markdown table: fewer columns, the statistics written as "mean ± half-width".
MARKDOWN_COLUMNS = (
    ("model", "model"),
    ("sample", "sample"),
    ("method", "method"),
    ("sparsity_setting", "densities / sparsity"),
    ("weight_density", "weight density"),
    ("layer_densities", "layer densities"),
    ("block_size", "block"),
    ("epochs", "epochs"),
    ("final_test_text", "final test acc. % (mean ± 95% CI, n)"),
    ("range_text", "min – max %"),
    ("best_test_accuracy", "test acc. at best val. epoch"),
    ("difference_text", "Δ to baseline, paired (pp, 95% CI)"),
    ("train_seconds", "train time (s)"),
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
    def seed(self) -> int:
        return int(self.summary.get("seed", self.settings.seed))

    @property
    def test_accuracy(self) -> np.ndarray:
        return np.asarray(self.history.get("test_accuracy", np.zeros(0)), dtype=np.float64)

    @property
    def final_test_accuracy(self) -> float:
        accuracy = self.test_accuracy
        return float(accuracy[-1]) if len(accuracy) else float(self.summary["final_test_accuracy"])

    @property
    def best_test_accuracy(self) -> float | None:
        """Test accuracy at the epoch of best validation accuracy; None without validation."""
        validation = np.asarray(self.history.get("validation_accuracy", []), dtype=np.float64)
        if len(validation) == 0 or np.all(np.isnan(validation)):
            return None
        return float(self.test_accuracy[int(np.nanargmax(validation))])

    @property
    def final_validation_accuracy(self) -> float | None:
        validation = np.asarray(self.history.get("validation_accuracy", []), dtype=np.float64)
        return None if len(validation) == 0 or np.isnan(validation[-1]) else float(validation[-1])

    @property
    def train_seconds(self) -> float | None:
        seconds = self.summary.get("train_seconds")
        if seconds is None and "train_seconds" in self.history:
            seconds = float(np.sum(self.history["train_seconds"]))
        return None if seconds is None else float(seconds)

    @property
    def throughput(self) -> float | None:
        throughput = self.summary.get("throughput_samples_per_second")
        seconds = self.train_seconds
        if throughput is None and seconds:
            throughput = len(self.history["step"]) * self.settings.batch_size / seconds
        return None if throughput is None else float(throughput)


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _layer_densities_text(summary: Mapping[str, Any]) -> str:
    """`fc1 0.100, fc2 0.300` from summary.json's `layer_densities` (absent: empty)."""
    densities = summary.get("layer_densities")
    if not isinstance(densities, Mapping):
        return ""
    return ", ".join(f"{name} {float(value):.3f}" for name, value in densities.items())


@dataclass
class SampleGroup:
    """Every seed's result of one sample, in seed order."""

    results: list[SampleResult]

    @property
    def first(self) -> SampleResult:
        return self.results[0]

    @property
    def key(self) -> str:
        return f"{self.first.model}/{self.first.sample}"

    def by_seed(self) -> dict[int, float]:
        return {r.seed: r.final_test_accuracy for r in self.results}

    def final_test(self) -> Summary:
        return summarize_values(self.by_seed().values(), what=f"{self.key} final test accuracy")

    def row(self, baseline: SampleGroup | None) -> dict[str, Any]:
        first, final = self.first, self.final_test()
        nonzeros = first.summary.get("nonzero_weights")
        row: dict[str, Any] = {
            "model": first.model,
            "sample": first.sample,
            "method": first.method,
            "sparsity_setting": first.sparsity_setting,
            "weight_density": round(first.weight_density, 6),
            "layer_densities": _layer_densities_text(first.summary),
            "block_size": first.settings.block_size,
            # Pooling only matters to a method that scores regrowth by the dense gradient.
            "pooling": first.settings.pooling if METHODS[first.method].needs_dense_grad else "",
            "epochs": first.settings.epochs,
            "seeds": " ".join(str(r.seed) for r in self.results),
            "n": final.n,
            "final_test_accuracy": final.mean,
            "final_test_accuracy_std": final.std,
            "final_test_accuracy_ci_low": final.ci_low,
            "final_test_accuracy_ci_high": final.ci_high,
            "final_test_accuracy_min": final.min,
            "final_test_accuracy_max": final.max,
            "best_test_accuracy": _mean_or_none(r.best_test_accuracy for r in self.results),
            "final_validation_accuracy": _mean_or_none(
                r.final_validation_accuracy for r in self.results
            ),
            "train_seconds": _mean_or_none(r.train_seconds for r in self.results),
            "throughput": _mean_or_none(r.throughput for r in self.results),
            "sparse_nonzeros": sum(nonzeros.values()) if nonzeros else None,
            "parameters": first.summary.get("total_parameters"),
            **_difference_columns(self, baseline),
        }
        row["final_test_text"] = _percent_ci(final)
        row["range_text"] = f"{100 * final.min:.2f} – {100 * final.max:.2f}"
        return row


def _percent_ci(summary: Summary) -> str:
    scaled = Summary(
        n=summary.n,
        mean=100 * summary.mean,
        std=100 * summary.std,
        ci_low=100 * summary.ci_low,
        ci_high=100 * summary.ci_high,
        min=100 * summary.min,
        max=100 * summary.max,
    )
    return format_mean_ci(scaled)


def _difference_columns(group: SampleGroup, baseline: SampleGroup | None) -> dict[str, Any]:
    empty = {
        "baseline": "",
        "difference": None,
        "difference_ci_low": None,
        "difference_ci_high": None,
        "difference_n": None,
        "difference_text": "",
    }
    if baseline is None:
        return empty
    try:
        paired = paired_difference(
            group.by_seed(), baseline.by_seed(), method_name=group.key, baseline_name=baseline.key
        )
    except ValueError:  # no shared seed: nothing to pair
        return {**empty, "baseline": baseline.first.sample, "difference_text": "no shared seed"}
    diff = paired.summary
    interval = (
        "" if math.isnan(diff.ci_low) else f" [{100 * diff.ci_low:+.2f}, {100 * diff.ci_high:+.2f}]"
    )
    return {
        "baseline": baseline.first.sample,
        "difference": diff.mean,
        "difference_ci_low": diff.ci_low,
        "difference_ci_high": diff.ci_high,
        "difference_n": diff.n,
        "difference_text": f"{100 * diff.mean:+.2f}{interval} vs {baseline.first.sample} "
        f"(n={diff.n})",
    }


def group_by_sample(results: Sequence[SampleResult]) -> list[SampleGroup]:
    """One group per (model, sample), in `results`' order, seeds sorted."""
    groups: dict[tuple[str, str], list[SampleResult]] = {}
    for result in results:
        groups.setdefault((result.model, result.sample), []).append(result)
    return [SampleGroup(sorted(members, key=lambda r: r.seed)) for members in groups.values()]


def baseline_of(
    group: SampleGroup, groups: Sequence[SampleGroup], named: Mapping[str, str]
) -> SampleGroup | None:
    """The named baseline (`model/sample` → `model/sample`), else the model's first dense sample
    (none for a dense sample itself)."""
    by_key = {g.key: g for g in groups}
    if group.key in named:
        return by_key.get(named[group.key])
    if group.first.is_dense:
        return None
    dense = [g for g in groups if g.first.model == group.first.model and g.first.is_dense]
    return dense[0] if dense else None


def aggregate_rows(
    results: Sequence[SampleResult], baselines: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per sample, its statistics over seeds and its paired difference to a baseline."""
    groups = group_by_sample(results)
    return [group.row(baseline_of(group, groups, baselines or {})) for group in groups]


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
            r.seed,
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
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key.endswith("_text"):
        return str(value)
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
        [label for _, label in MARKDOWN_COLUMNS],
        [[_md_cell(key, row[key]) for key, _ in MARKDOWN_COLUMNS] for row in rows],
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
        "Accuracy on the 10 000 MNIST test images after the last epoch, measured just before "
        "the epoch's last pattern update: mean over the seeds ± the half-width of its 95 % "
        "Student-t confidence interval (n seeds; no interval for n = 1). Test acc. at best val. "
        "epoch: the test accuracy at the epoch of best validation accuracy (validation: images "
        "held out of the training set), mean over seeds. Δ to baseline: the mean paired "
        "difference by seed in percentage points, with its 95 % interval, against the sample's "
        "`baseline` (default: the model's dense sample). Weight density: share of the weights "
        "held in the layers that can be sparse (FC: both layers; transformer: every sparse "
        "layer). Parameters: trainable values held (a sparse layer counts its stored block "
        "values).\n",
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


def _error_bar(summary: Summary) -> float:
    """The 95 % interval's half-width in percent; 0 (no bar) for a single seed."""
    return 0.0 if math.isnan(summary.half_width) else 100 * summary.half_width


def accuracy_vs_density_figure(results: Sequence[SampleResult]) -> Figure:
    """Final test accuracy (mean over seeds, 95 % CI bars) against weight density; one series
    per method (and block size)."""
    groups = [g for g in group_by_sample(results) if len(g.first.test_accuracy)]
    models = sorted({g.first.model for g in groups}) or ["fc"]
    with plt.style.context("bmh"):
        figure, axes = plt.subplots(
            1, len(models), figsize=(5.5 * len(models), 4.2), dpi=100, layout="constrained"
        )
        for ax, model in zip(np.atleast_1d(axes), models, strict=True):
            members = [g for g in groups if g.first.model == model]
            series: dict[str, list[SampleGroup]] = {}
            ordered = sorted(members, key=lambda g: (_method_sort_key(g.first.method), g.key))
            for group in ordered:
                series.setdefault(_series_label(group.first), []).append(group)
            for index, (label, points) in enumerate(series.items()):
                points.sort(key=lambda g: (g.first.weight_density, g.key))
                finals = [g.final_test() for g in points]
                x = [g.first.weight_density for g in points]
                y = [100 * f.mean for f in finals]
                method = points[0].first.method
                if method == "dense":
                    for value in y:
                        ax.axhline(value, color=METHOD_COLOURS["dense"], linewidth=0.8, ls="--")
                # A line only joins different densities; samples at one density stay points.
                joined = len(set(x)) == len(x)
                # Series side by side (a few % apart on the log axis) so equal points stay visible.
                dodge = 1.0 if method == "dense" else 1.05 ** (index - (len(series) - 1) / 2)
                x = [xi * dodge for xi in x]
                ax.errorbar(
                    x,
                    y,
                    yerr=[_error_bar(f) for f in finals],
                    capsize=3,
                    marker="os^Dv<>"[index % 7],
                    markersize=6,
                    linewidth=1 if joined else 0,
                    elinewidth=1,
                    color=METHOD_COLOURS.get(method, f"C{index}"),
                    label=label if len(points) > 1 else f"{label}: {points[0].first.sample}",
                )
                if len(points) > 1 and not joined:
                    for g, xi, yi in zip(points, x, y, strict=True):
                        ax.annotate(
                            g.first.sample,
                            (xi, yi),
                            textcoords="offset points",
                            xytext=(5, 3),
                            fontsize=7,
                        )
            ticks = sorted({round(g.first.weight_density, 3) for g in members} | {1.0})
            ax.set_xlim(min(ticks) / 1.5, 1.5)
            ax.set_xscale("log")
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("weight density of the sparse layers (log scale; 1 = dense)")
            seeds = sorted({g.final_test().n for g in members})
            ax.set_ylabel("final test accuracy (%), mean ± 95% CI")
            ax.set_title(
                f"{model}: accuracy vs density ({'/'.join(map(str, seeds))} seeds)", loc="left"
            )
            # "best": a fixed corner hid the error bar of a point near it.
            ax.legend(fontsize=8, loc="best")
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
    """Per sample group: the whole run, and the second half zoomed in (where methods differ);
    each sample's first seed."""
    groups = sample_groups([g.first for g in group_by_sample(results)])
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
    baselines: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Write the table and figures; `baselines` maps `model/sample` to its named baseline."""
    results = load_results(summary_paths, history_paths)
    rows = aggregate_rows(results, baselines)
    markdown = summary_markdown(rows, bench_paths)
    write_text(outputs.table_csv, table_csv(rows))
    write_text(outputs.table_md, markdown)
    if outputs.table_html is not None:
        from dynsparse.report import markdown_page

        write_text(outputs.table_html, markdown_page("Results", markdown))
    _save_figure(accuracy_vs_density_figure(results), outputs.accuracy_png, outputs.accuracy_svg)
    _save_figure(curves_figure(results), outputs.curves_png, outputs.curves_svg)
    return rows
