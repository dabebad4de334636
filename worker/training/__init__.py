"""The training recipe: setup, train, save; it stands alone (no database, no broker)."""

import logging

# On CPUs with AVX512-BF16, bitsandbytes looks for optional kernels on the hub (the
# `kernels` package) and logs a warning when they are not there; it then uses its own
# CPU path, which is what this service wants (no code is fetched from the hub), so the
# warning is noise on every run (and broke the one-line error of the standalone CLI).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def log_through_root() -> None:
    """In a job's (or merge's) process, whose output is its log (core.logs): transformers
    logs through a plain-text handler of its own and never passes its lines on, so they go
    through the process's handler instead, in the service's format and with the job's id;
    and the libraries' progress bars, a redrawn line meant for a terminal, are off."""
    import datasets
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    transformers_logging.disable_progress_bar()  # the hub's downloads' too
    datasets.disable_progress_bars()
