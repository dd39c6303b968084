"""The names of the files in a run folder and in a sweep folder.

Below every layer, so that what writes a file (training, scale) and what reads it later
(results, a resumed sweep) name it alike without importing each other.
"""

# -- a run folder --------------------------------------------------------------------------------

METRICS_FILE = "metrics.json"  # the run's record (cnnlab.results.record)
CONFUSION_FILE = "confusion.json"  # its confusion matrices (cnnlab.results.confusion)
CURVES_FILE = "curves.png"  # its loss and accuracy per epoch
PER_CLASS_FILE = "test_per_class.md"  # its test metrics per class
SUMMARY_FILE = "model_summary.txt"  # written by the model_summary_file callback (conf/callbacks)

# -- a sweep folder ------------------------------------------------------------------------------

MULTIRUN_FILE = "multirun.yaml"  # Hydra's basic sweeper writes it before the first job
FAIL_FAST_FILE = ".failed_job"  # written by the first failed job of a fail-fast sweep
STOPPED_FILE = ".stopped"  # a sweep of parallel jobs got a stop signal: holds its name
WORKERS_DIR = ".workers"  # one empty file per parallel worker process, named by its pid
SHOWN_DIR = ".shown"  # what one job already printed for the whole sweep (a model summary)
REPORT_FILE = "report.md"  # the sweep report (cnnlab.results.report)
# Figures sit next to report.md as files, not in a folder, so that nothing new looks like
# a job folder in a sweep (or like a sweep in a folder of sweeps).
FIGURE_PREFIX = "report_"
