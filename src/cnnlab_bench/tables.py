"""The benchmark's tables: plain text for the terminal, Markdown for docs/speed.md."""

from __future__ import annotations

import functools
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


def _speed_table(rows: list[dict[str, Any]], gpu: bool = False) -> list[str]:
    """The training-speed table of a benchmark page, one line per row. On a GPU page the
    mean milliseconds per step are added (a GPU step has no per-phase split: timing phases
    would need a sync each) and the peak is the GPU's memory, not the process's RSS."""
    step = " | ms per step: pipeline / bare / min. Lightning" if gpu else ""
    peak = "peak GPU memory" if gpu else "peak RSS"
    lines = [
        "| net | data | batch | precision | pipeline | bare | ratio | min. Lightning (ratio) "
        f"| pipeline / min. Lightning{step} | eval img/s pipeline / bare | eval share | {peak} "
        "| NHWC / NCHW |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|" + "---:|" * (5 if gpu else 4),
    ]
    for r in rows:
        t, v = r["train_images_per_s"], r["eval_images_per_s"]
        ms = ""
        if gpu:
            names = ("pipeline", "bare", "minimal_lightning")
            ms = " | " + " / ".join(f"{1000 * r['batch_size'] / t[k]:.2f}" for k in names)
        memory = r.get("peak_gpu_mb") if gpu else r["peak_rss_mb"]
        lines.append(
            f"| {r['net']} | {_data(r)} | {r['batch_size']} | {_precision(r)} "
            f"| {t['pipeline']:.0f} | {t['bare']:.0f} | {t['ratio']:.3f} "
            f"| {t['minimal_lightning']:.0f} ({t['minimal_lightning_ratio']:.3f}) "
            f"| {t['pipeline'] / t['minimal_lightning']:.3f}{ms} "
            f"| {v['pipeline']:.0f} / {v['bare']:.0f} | {100 * r['eval_share_of_full_epoch']:.1f}% "
            f"| {_gigabytes(memory)} | {_layout_gain(r)} |"
        )
    return lines


def _ips_and_ms(ips: float, batch: int) -> str:
    return f"{ips:.0f} img/s ({1000 * batch / ips:.2f} ms)"


def _graph_table(rows: list[dict[str, Any]]) -> list[str]:
    """The CUDA-graph step against eager, per row: img/s and ms per step of the pipeline
    (`cuda_graph=false` / `true`) and of the bare loop (eager / captured, the limit)."""
    rows = [r for r in rows if r.get("graph_images_per_s")]
    if not rows:
        return []
    lines = [
        "| net | data | batch | precision | pipeline eager | pipeline, graph step "
        "| bare eager | bare, graph (limit) | graph step / limit |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t, g, b = r["train_images_per_s"], r["graph_images_per_s"], r["batch_size"]
        cell = functools.partial(_ips_and_ms, batch=b)
        lines.append(
            f"| {r['net']} | {_data(r)} | {b} | {_precision(r)} | {cell(t['pipeline'])} "
            f"| {cell(g['pipeline_graph'])} | {cell(t['bare'])} | {cell(g['bare_graph'])} "
            f"| {g['pipeline_graph'] / g['bare_graph']:.3f} |"
        )
    return lines


def _gigabytes(megabytes: float | None) -> str:
    return "-" if megabytes is None else f"{megabytes / 1024:.1f} GB"


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
        "alternating in the same process (what `channels_last` buys on this CPU).",
        "",
        *_speed_table(rows),
    ]
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
        "that machine, and one per GPU kind, written by `make gpu-check` (`src/gpu_check.py`); "
        "both run the benchmark's package, `src/cnnlab_bench/`. See [speed](../speed.md) for "
        "what the columns mean.\n\n" + "\n".join(entries) + "\n"
    )


# -- The GPU check's page (src/gpu_check.py) ---------------------------------------------------


def gpu_page_name(gpu: str) -> str:
    """The page of a GPU kind, e.g. 'nvidia-h200.md': one per kind, as for CPUs."""
    slug = "-".join("".join(c if c.isalnum() else " " for c in gpu.lower()).split())
    return f"{slug or 'unknown-gpu'}.md"


def _cell(text: Any) -> str:
    """Table-safe text: a failing test's message may hold pipes and newlines."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _gpu_tests(tests: dict[str, Any] | None) -> list[str]:
    if not tests:
        return ["Not run (see the stages below)."]
    code = tests.get("exit_code")
    ended = f"exit {code}" if code is not None else "killed before it ended"
    lines = [f"`pytest -m gpu`: {tests.get('summary') or 'no summary'} ({ended})."]
    if not tests.get("summary") and tests.get("outcomes"):
        seen = ", ".join(f"{n} {outcome}" for outcome, n in sorted(tests["outcomes"].items()))
        lines[0] += f" Its per-test lines so far: {seen}."
    failures = tests.get("failures", [])
    if failures:
        lines += [
            "",
            "| failed test | where | assertion | error |",
            "|---|---|---|---|",
            *(
                f"| `{_cell(f['id'])}` | {_cell(f.get('location') or '-')} "
                f"| `{_cell(f.get('source') or '-')}` | {_cell(f.get('message') or '-')} |"
                for f in failures
            ),
        ]
    return lines


def _stages(stages: list[dict[str, Any]]) -> list[str]:
    lines = ["| stage | status | seconds | estimate s |", "|---|---|---:|---:|"]
    for s in stages:
        seconds = f"{s['seconds']:.0f}" if s.get("seconds") is not None else "-"
        status = "cut off while running" if s["status"] == "running" else s["status"]
        status += f": {s['error']}" if s.get("error") else ""
        lines.append(f"| {s['title']} | {_cell(status)} | {seconds} | {s['estimate_s']:.0f} |")
    return lines


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


# The sweep table's rows: the card's sweep first, then by jobs per GPU, then one job alone.
SWEEP_ORDER = (
    "default launcher",
    "jobs_per_gpu=1",
    "jobs_per_gpu=2",
    "jobs_per_gpu=3",
    "one job alone",
)


def _sweep_row(name: str, run: dict[str, Any], sequential: dict[str, Any] | None) -> str:
    if "same_as" in run:
        return f"| {name} | {_cell(run['note'])} | | | | | | | |"
    epochs = [j["per_epoch_s"] for j in run.get("jobs", []) if j.get("per_epoch_s")]
    per_job = " / ".join(f"{_mean(e):.1f}" for e in epochs) or "-"
    gain = "-"
    several = run.get("expected_jobs", 0) > 1
    if several and sequential and sequential.get("exit_code") == 0 and run["exit_code"] == 0:
        gain = f"{sequential['wall_s'] / run['wall_s']:.2f}"
    util = (
        f"{run['gpu_util_mean']:.0f}% / {run['gpu_util_max']:.0f}%"
        if run.get("gpu_util_mean") is not None
        else "-"
    )
    exit_text = "killed" if run["exit_code"] is None else str(run["exit_code"])
    exit_text += f" ({run['stopped_by']})" if run.get("stopped_by") else ""
    exit_text += " (time budget)" if run.get("timed_out") else ""
    return (
        f"| {name} | {_cell(run.get('launcher') or '-')} "
        f"| {run['completed_jobs']} of {run['expected_jobs']} | {run['wall_s']:.1f} "
        f"| {per_job} | {gain} | {util} | {_gigabytes(run.get('gpu_memory_max_mb'))} "
        f"| {exit_text} |"
    )


def _sweeps(sweeps: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    lines = [
        f"`python src/train.py -m optimizer=adadelta,adam,adagrad "
        f"{' '.join(settings.get('overrides', []))}` on {settings.get('data', '?')}; one job "
        "alone is `optimizer=adam`. epoch s per job = each job's mean of `time.per_epoch_s` "
        "(its metrics.json); vs jobs_per_gpu=1 = that run's wall time over this one's; GPU "
        "utilisation and memory from nvidia-smi, sampled every half second over the whole "
        "command (start-up included).",
        "",
        "| run | launcher's choice | jobs completed | wall s | epoch s per job "
        "| vs jobs_per_gpu=1 | GPU utilisation mean / max | peak GPU memory | exit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sequential = sweeps.get("jobs_per_gpu=1")
    ordered = sorted(sweeps, key=lambda n: SWEEP_ORDER.index(n) if n in SWEEP_ORDER else 99)
    for name in ordered:
        lines.append(_sweep_row(name, sweeps[name], sequential))
    failed = {
        n: run for n, run in sweeps.items() if run.get("stderr_tail") and not run.get("stopped_by")
    }
    for name, run in failed.items():
        ended = "was killed" if run["exit_code"] is None else f"ended with exit {run['exit_code']}"
        lines += ["", f"`{name}` {ended}; its last lines:", "", "```"]
        lines += [*run["stderr_tail"], "```"]
    return lines


def gpu_markdown_report(report: dict[str, Any]) -> str:
    """The GPU check as a page: its tests, its stages, the speed rows and the sweeps."""
    m = report["machine"]
    stopped = f"; stopped by {report['stopped_by']}" if report.get("stopped_by") else ""
    stopped += "".join(f"; then `{again}`" for again in report.get("resumed_by", []))
    bench = report.get("bench") or {}
    rows = bench.get("rows", [])
    lines = [
        f"# {report['gpu']}: GPU check (tests, training speed, sweeps)",
        "",
        f"Generated by `{report['command']}` on {report['started']}: torch {m['torch']} "
        f"(CUDA {m.get('cuda')}), Lightning {m.get('lightning')}, driver {m.get('driver')}, "
        f"{m.get('cpu_cores')} CPU cores; time budget {report['budget_s']:.0f} s"
        f"{stopped}. Do not edit: run the command again, or rebuild this page from its JSON "
        "with `python src/gpu_check.py --page <json>`.",
        "",
        "## Tests marked gpu",
        "",
        *_gpu_tests(report.get("gpu_tests")),
        "",
        "## Stages",
        "",
        "Most important first; a stage whose estimate does not fit in the time left is skipped.",
        "",
        *_stages(report.get("stages", [])),
    ]
    if rows:
        lines += [
            "",
            "## Training speed",
            "",
            f"Training images per second (validation excluded), {rows[0]['estimate']}, "
            f"optimizer {rows[0]['optimizer']}; ratio = pipeline / bare loop; min. Lightning = "
            "the same net, data and optimizer in a minimal LightningModule; ms per step = "
            "1000 x batch / img/s; NHWC / NCHW = the bare loop's speed with channels_last over "
            "its speed without, alternating in the same process; peak GPU memory = torch's "
            "peak allocation during the row.",
            "",
            *_speed_table(rows, gpu=True),
        ]
        if graph := _graph_table(rows):
            lines += [
                "",
                "## The CUDA-graph step",
                "",
                "Training images per second and milliseconds per step (1000 x batch / img/s) of "
                "the pipeline with `cuda_graph=false` and `true`, and of the bare loop eager and "
                "with its whole step captured as one CUDA graph (the limit); capture and warm-up "
                "steps included.",
                "",
                *graph,
            ]
    sweeps = report.get("sweeps") or {}
    if any("same_as" not in run for run in sweeps.values()):
        lines += ["", "## Sweeps", "", *_sweeps(sweeps, report.get("sweep", {}))]
    return "\n".join(lines) + "\n"


def write_gpu_markdown(report: dict[str, Any], folder: Path) -> Path:
    """The GPU check's page in `folder` (named by GPU kind), then the folder's index."""
    return write_page(folder, gpu_page_name(report["gpu"]), gpu_markdown_report(report))
