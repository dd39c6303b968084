"""The benchmark's tables: plain text for the terminal, Markdown for docs/speed.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"CPU: {report['machine']['cpu']} ({', '.join(report['machine']['cpu_flags']) or '-'})  "
        f"GPU: {report['machine']['gpu']}  "
        f"torch {report['machine']['torch']}, {report['machine']['threads']} threads; "
        f"{_load(report)}",
        f"{'net':6} {'data':8} {'batch':>5} {'prec':>9} {'train img/s':>30} {'ratio':>6} "
        f"{'min.PL':>6} {'epoch s':>13} {'eval img/s':>21} {'ratio':>6} {'eval%':>6} "
        f"{'RSS MB':>7} {'NHWC/NCHW':>9}",
        f"{'':6} {'':8} {'':>5} {'':>9} {'pipeline':>10} {'bare':>9} {'min.PL':>9} {'':>6} "
        f"{'ratio':>6} {'pipe':>6} {'bare':>6} {'pipeline':>10} {'bare':>10}",
    ]
    for r in report["rows"]:
        prec = r["precision"] + ("+cl" if r["channels_last"] else "")
        t, e, v = r["train_images_per_s"], r["epoch_s"], r["eval_images_per_s"]
        lines.append(
            f"{r['net']:6} {r['data']:8} {r['batch_size']:>5} {prec:>9} {t['pipeline']:>10.0f} "
            f"{t['bare']:>9.0f} {t['minimal_lightning']:>9.0f} {t['ratio']:>6.3f} "
            f"{t['minimal_lightning_ratio']:>6.3f} {e['pipeline']:>6.2f} {e['bare']:>6.2f} "
            f"{v['pipeline']:>10.0f} {v['bare']:>10.0f} {v['ratio']:>6.3f} "
            f"{100 * r['eval_share_of_full_epoch']:>5.1f}% {r['peak_rss_mb']:>7.0f} "
            f"{_layout_gain(r):>9}"
        )
    if report["rows"]:
        lines.append(
            f"img/s and seconds: {report['rows'][0]['estimate']}; ratio = pipeline / bare; "
            "min.PL = the same net and data in a minimal LightningModule (Lightning's own cost); "
            "NHWC/NCHW = the bare loop's speed with channels_last over without, same process"
        )
    phased = [r for r in report["rows"] if r.get("per_step")]
    if phased:
        lines.append(
            "median ms per training step; rest = fetching the batch, zero_grad and the loop's "
            "own code; PL loop = min.PL's rest - bare's; cap = bare step / (bare step + PL "
            "loop): the ratio with nothing but Lightning's loop code added to the bare loop"
        )
        lines.append(
            f"  {'net':6} {'data':8} {'loop':8} {'forward':>8} {'backward':>9} {'optimizer':>10} "
            f"{'rest':>7} {'step':>8} {'ratio':>6} {'PL loop':>8} {'cap':>6} {'by code':>8}"
        )
    for r in phased:
        verdict = r["per_step"]
        for label, name in (("bare", "bare"), ("min.PL", "minimal"), ("pipeline", "pipeline")):
            ms = r["step_ms_median"][name]
            parts = " ".join(
                f"{ms[part]:>{width}.2f}" if part in ms else f"{'':>{width}}"
                for part, width in (("forward", 8), ("backward", 9), ("optimizer", 10), ("rest", 7))
            )
            line = f"  {r['net']:6} {r['data']:8} {label:8} {parts} {ms['step']:>8.2f}"
            if name == "pipeline":
                line += (
                    f" {verdict['pipeline_ratio']:>6.3f} {verdict['lightning_loop_ms']:>8.2f} "
                    f"{verdict['lightning_ratio_cap']:>6.3f}"
                )
                if "pipeline_vs_minimal_by_code" in verdict:
                    line += f" {verdict['pipeline_vs_minimal_by_code']:>8.3f}"
            lines.append(line)
    if report.get("code_probe"):
        lines.append(
            "by code = min.PL step / (min.PL step + cnnlab's code per step), measured on "
            + _probe(report)
        )
    check = report.get("accuracy_check")
    if check:
        fp32, fast = check["fp32"], check["fast"]
        layout = "+channels_last" if fast["channels_last"] else ""
        per_seed = ", ".join(f"{d:+.2f}" for d in check["per_seed_difference_points"])
        lines.append(
            f"Fashion-MNIST, net_1, one full epoch, seeds {check['seeds']}: fp32 mean test acc "
            f"{fp32['test_acc']:.4f} ({fp32['train_images_per_s']:.0f} img/s); "
            f"{fast['precision']}{layout} {fast['test_acc']:.4f} "
            f"({fast['train_images_per_s']:.0f} img/s); difference "
            f"{check['test_acc_difference_points']:+.2f} points (per seed {per_seed})"
        )
        if "fp32_same_layout" in check:
            same = check["fp32_same_layout"]
            per_seed = ", ".join(
                f"{d:+.2f}" for d in check["per_seed_difference_to_same_layout_points"]
            )
            lines.append(
                f"fp32 in the same layout (channels_last, other rounding only): "
                f"{same['test_acc']:.4f}; {fast['precision']} against it "
                f"{check['test_acc_difference_to_same_layout_points']:+.2f} points "
                f"(per seed {per_seed})"
            )
    return "\n".join(lines)


def _layout_gain(row: dict[str, Any]) -> str:
    layout = row.get("layout")
    return f"{layout['nhwc_over_nchw']:.3f}" if layout else "-"


def _probe(report: dict[str, Any]) -> str:
    probe = report["code_probe"]
    ms, row, reps = probe["step_ms"], probe["row"], probe["reps"]
    return (
        f"an {row['net'].upper()} at batch {row['batch_size']} whose kernels take a fraction of "
        f"a millisecond ({row['steps']} steps, median of {reps} run{'s' * (reps != 1)}): "
        f"bare {ms['bare']:.3f} ms, minimal Lightning {ms['minimal']:.3f} ms, pipeline "
        f"{ms['pipeline']:.3f} ms, so the pipeline adds {probe['pipeline_code_ms']:+.3f} ms "
        "to Lightning's minimal step"
    )


# -- Markdown, for docs/benchmarks/ ------------------------------------------------------------

INDEX_FILE = "README.md"


def _load(report: dict[str, Any]) -> str:
    busy = int(report["settings"].get("load", 0))
    return f"{busy} busy process(es) beside it (--load {busy})" if busy else "machine quiet"


def cpu_kind(machine: dict[str, Any]) -> str:
    """A file-name slug for the CPU kind and precision features, e.g. 'amd-epyc-avx512-bf16'."""
    words = f"{machine['cpu']} {' '.join(machine.get('cpu_flags', []))}".lower()
    slug = "-".join("".join(c if c.isalnum() else " " for c in words).split())
    return slug or "unknown-cpu"


def _precision(row: dict[str, Any]) -> str:
    return row["precision"] + (" + channels_last" if row["channels_last"] else "")


def _data(row: dict[str, Any]) -> str:
    return f"{row['data']} ({row['data_source']})"


def markdown_report(report: dict[str, Any], command: str, when: str) -> str:
    """One benchmark run as a Markdown page: where and how it ran, then every table."""
    m = report["machine"]
    flags = ", ".join(m.get("cpu_flags", [])) or "none of AVX-512, AVX512-BF16, AMX"
    rows = report["rows"]
    lines = [
        f"# {m['cpu']} ({flags}): {', '.join(sorted({_precision(r) for r in rows}))}"
        + (f", {_load(report).split(' (')[0]}" if report["settings"].get("load") else ""),
        "",
        f"Generated by `{command}` on {when}: torch {m['torch']}, {m['threads']} threads, "
        f"GPU {m['gpu'] or 'none'}; {rows[0]['estimate'] if rows else ''}; optimizer "
        f"{report['settings']['optimizer']}; {_load(report)}. Do not edit: run the command "
        "again.",
        "",
        "Training images per second (validation excluded); ratio = pipeline / bare loop; "
        "min. Lightning = the same net, data and optimizer in a minimal LightningModule; "
        "NHWC / NCHW = the bare loop's speed with channels_last over its speed without, "
        "alternating in the same process (what `model.channels_last` buys on this CPU).",
        "",
        "| net | data | batch | precision | pipeline | bare | ratio | min. Lightning (ratio) "
        "| pipeline / min. Lightning | eval img/s pipeline / bare | eval share | peak RSS "
        "| NHWC / NCHW |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t, v = r["train_images_per_s"], r["eval_images_per_s"]
        lines.append(
            f"| {r['net']} | {_data(r)} | {r['batch_size']} | {_precision(r)} "
            f"| {t['pipeline']:.0f} | {t['bare']:.0f} | {t['ratio']:.3f} "
            f"| {t['minimal_lightning']:.0f} ({t['minimal_lightning_ratio']:.3f}) "
            f"| {t['pipeline'] / t['minimal_lightning']:.3f} "
            f"| {v['pipeline']:.0f} / {v['bare']:.0f} | {100 * r['eval_share_of_full_epoch']:.1f}% "
            f"| {r['peak_rss_mb'] / 1024:.1f} GB | {_layout_gain(r)} |"
        )
    phased = [r for r in rows if r.get("per_step")]
    if phased:
        lines += [
            "",
            "Median milliseconds per training step, bare loop / minimal Lightning (the "
            "pipeline's whole step in parentheses). Lightning loop = the minimal run's `rest` "
            "minus the bare loop's; cap = bare step / (bare step + Lightning loop)"
            + (
                "; pipeline / min. Lightning by code = the minimal run's step / (that step + "
                f"cnnlab's code per step), measured on {_probe(report)}."
                if report.get("code_probe")
                else "."
            ),
            "",
            "| net | data | precision | forward | backward | optimizer | rest "
            "| step (pipeline) | Lightning loop | cap | pipeline / min. Lightning by code |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in phased:
            ms, verdict = r["step_ms_median"], r["per_step"]
            pair = [
                f"{ms['bare'][k]:.2f} / {ms['minimal'][k]:.2f}"
                for k in ("forward", "backward", "optimizer", "rest")
            ]
            lines.append(
                f"| {r['net']} | {r['data']} | {_precision(r)} | {' | '.join(pair)} "
                f"| {ms['bare']['step']:.2f} / {ms['minimal']['step']:.2f} "
                f"({ms['pipeline']['step']:.2f}) | {verdict['lightning_loop_ms']:.2f} ms "
                f"| {verdict['lightning_ratio_cap']:.3f} "
                f"| {verdict.get('pipeline_vs_minimal_by_code', float('nan')):.3f} |"
            )
    check = report.get("accuracy_check")
    if check:
        fp32, fast = check["fp32"], check["fast"]
        per_seed = ", ".join(f"{d:+.2f}" for d in check["per_seed_difference_points"])
        lines += [
            "",
            f"Accuracy check (net_1, one full Fashion-MNIST epoch, seeds {check['seeds']}): "
            f"fp32 mean test accuracy {fp32['test_acc']:.4f} "
            f"({fp32['train_images_per_s']:.0f} img/s); {fast['precision']}"
            f"{' + channels_last' if fast['channels_last'] else ''} {fast['test_acc']:.4f} "
            f"({fast['train_images_per_s']:.0f} img/s): "
            f"{check['test_acc_difference_points']:+.2f} points (per seed: {per_seed}).",
        ]
        if "fp32_same_layout" in check:
            lines.append(
                f"fp32 in the same layout: {check['fp32_same_layout']['test_acc']:.4f}; "
                f"against it {check['test_acc_difference_to_same_layout_points']:+.2f} points."
            )
    return "\n".join(lines) + "\n"


def write_markdown(report: dict[str, Any], folder: Path, command: str, when: str) -> Path:
    """This run's page in `folder` (one per CPU kind, precision and load), then the index."""
    settings, rows = report["settings"], report["rows"]
    # The layout the rows ran in: `auto` is decided per device (cnnlab.speed.layout).
    layouts = [r["channels_last"] for r in rows] or [settings["channels_last"] is True]
    precision = settings["precision"] + ("-cl" if all(layouts) else "")
    load = int(settings.get("load", 0))
    name = f"{cpu_kind(report['machine'])}_{precision}{f'_load{load}' if load else ''}.md"
    return write_page(folder, name, markdown_report(report, command, when))


def write_page(folder: Path, name: str, text: str) -> Path:
    """One generated page of `folder`; its index is rebuilt."""
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / name
    page.write_text(text)
    write_index(folder)
    return page


def write_index(folder: Path) -> None:
    """The folder's README: a link to every page in it, by its title."""
    entries = []
    for other in sorted(folder.glob("*.md")):
        if other.name != INDEX_FILE:
            title = other.read_text().splitlines()[0].lstrip("# ")
            entries.append(f"- [{title}]({other.name})")
    (folder / INDEX_FILE).write_text(
        "# Benchmark results\n\nOne page per CPU kind and precision (and load, and the Keras "
        "comparison), each written by `make bench` or `make bench-keras` (`src/bench.py`) on "
        "that machine; see [speed](../speed.md) for what the columns "
        "mean.\n\n" + "\n".join(entries) + "\n"
    )
