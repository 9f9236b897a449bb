"""The preamble every stage script shares: its log file, and a traceback there on failure."""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from collections.abc import Iterator
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def stage_log(path: str | os.PathLike[str]) -> Iterator[TextIO]:
    """Open the job's log (truncated): `logging` records go there, and so may plain text written
    to the yielded stream (progress bars, tool output). A failure's traceback ends the log."""
    with open(path, "w") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield stream
        except BaseException:
            stream.write(traceback.format_exc())
            raise
        finally:
            root.removeHandler(handler)
            stream.flush()
