"""Configure TensorFlow once per process, before it runs any op."""

from __future__ import annotations

import os
import warnings

_configured_threads: int | None = None


def configure_tensorflow(threads: int, deterministic: bool = True) -> None:
    """Thread pools of `threads` threads, quiet C++ logs, deterministic ops.

    Must run before TensorFlow executes anything: the thread pools cannot be resized afterwards.
    The first call wins: a later call (say a second test in one pytest process) with another
    `threads` only warns, since the pools are fixed by then.
    """
    global _configured_threads
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if _configured_threads is not None:
        if _configured_threads != threads:
            warnings.warn(
                f"TensorFlow already runs {_configured_threads} threads; {threads} ignored",
                RuntimeWarning,
                stacklevel=2,
            )
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() != threads:
        try:
            threading.set_intra_op_parallelism_threads(threads)
            threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError as error:  # TensorFlow ran an op before this call
            warnings.warn(f"thread pools not set: {error}", RuntimeWarning, stacklevel=2)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    _configured_threads = threads
