"""The training recipe: setup, train, save; it stands alone (no database, no broker)."""

import logging

# On CPUs with AVX512-BF16, bitsandbytes looks for optional kernels on the hub (the
# `kernels` package) and logs a warning when they are not there; it then uses its own
# CPU path, which is what this service wants (no code is fetched from the hub), so the
# warning is noise on every run (and broke the one-line error of the standalone CLI).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
