"""Build a sweep report: `python src/report.py [FOLDER]` (default: the newest sweep).

FOLDER may be a sweep (outputs/train/multiruns/<sweep>), a single run folder, or a folder
holding several sweeps; `report.md` and its figures are written into it. Ctrl-C or SIGTERM
while it is written: one line, no half-written report, exit code 128 + the signal number.
"""

import argparse
import os
import sys
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.process_setup import set_up_process
from cnnlab.results.markdown import runs_table
from cnnlab.results.report import ReportStopped, build_report_or_stop, newest_sweep
from cnnlab.results.text import plain

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    set_up_process(ROOT)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folder", nargs="?", type=Path, help="a sweep, a run, or a folder of sweeps"
    )
    args = parser.parse_args(argv)
    try:
        folder = args.folder or newest_sweep(Path(os.environ["CNNLAB_ROOT"]) / "outputs")
        report = build_report_or_stop(folder)
    except CnnlabError as err:
        print(f"Error: {plain(err)}", file=sys.stderr)
        return err.exit_code
    except ReportStopped as stop:
        print(f"Error: {plain(stop.message)}", file=sys.stderr)
        return stop.exit_code
    for group in report.groups:
        print(f"{plain(group.folder)}:\n{runs_table(group.runs, report.path.parent)}\n")
    print(
        plain(f"Report: {report.path} ({len(report.runs)} run(s), built in {report.seconds:.1f} s)")
    )
    if report.problems:
        problems = plain("; ".join(report.problems))
        print(f"Error: the report is incomplete: {problems}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
