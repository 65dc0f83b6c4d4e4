"""Write Elves apps in Python.

* :mod:`elves_app.worker` is the worker entry the agent starts (``app-worker.py``
  semantics: ``app func b64param``); copy it into your app as ``app-worker.py`` (or run
  ``python3 -m elves_app init APP DIR``).
* :mod:`elves_app.processor` receives mode-P results from the agent, over HTTP (standard
  library only) or over the original Thrift ``AppService.runProcessor`` (needs ``thrift``).

The worker needs nothing beyond the Python (>= 3.8) standard library.
"""

from .worker import FLAG_CLOSE, FLAG_OPEN, RESULT_CLOSE, RESULT_OPEN, answer, run

__all__ = ["FLAG_OPEN", "FLAG_CLOSE", "RESULT_OPEN", "RESULT_CLOSE", "answer", "run"]
__version__ = "0.1.0"
