"""The benchmark's tables: plain text for the terminal, Markdown for docs/speed.md."""

from __future__ import annotations

from typing import Any


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"CPU: {report['machine']['cpu']}  GPU: {report['machine']['gpu']}  "
        f"torch {report['machine']['torch']}, {report['machine']['threads']} threads",
        f"{'net':6} {'data':8} {'batch':>5} {'prec':>9} {'train img/s':>30} {'ratio':>6} "
        f"{'min.PL':>6} {'epoch s':>13} {'eval img/s':>21} {'ratio':>6} {'eval%':>6} "
        f"{'RSS MB':>7}",
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
            f"{100 * r['eval_share_of_full_epoch']:>5.1f}% {r['peak_rss_mb']:>7.0f}"
        )
    if report["rows"]:
        lines.append(
            f"img/s and seconds: {report['rows'][0]['estimate']}; ratio = pipeline / bare; "
            "min.PL = the same net and data in a minimal LightningModule (Lightning's own cost)"
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
            f"{'rest':>7} {'step':>8} {'ratio':>6} {'PL loop':>8} {'cap':>6}"
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
            lines.append(line)
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
