#!/usr/bin/env python3
"""The Elves worker entry (``app-worker.py``), for Python >= 3.8, standard library only.

The agent runs ``python3 app-worker.py APP FUNC B64PARAM`` in the app directory
(agent-protocol section 3). This module:

1. takes exactly ``APP FUNC`` or ``APP FUNC B64PARAM`` (anything else answers flag ``false``,
   result ``param error``);
2. decodes the parameter: standard base64, then UTF-8, then JSON (an empty or absent
   parameter gives ``""``); unlike the original Python 2 worker, non-ASCII text, newlines
   and backslashes in the parameter work;
3. imports the module ``APP`` (the file ``APP.py`` of the app directory), instantiates its
   class ``APP`` without arguments and calls the method ``FUNC`` with the parameter; the
   method returns ``(flag, result)``;
4. prints ``<ElvesWFlag>{flag}</ElvesWFlag> <ElvesWResult>{result}</ElvesWResult>`` on one
   line of stdout, in UTF-8, after whatever the app printed itself; the exit status is 0.

Any exception (import, missing class or method, bad parameter, a return value that is not
a pair, or raised by the app) answers flag ``false`` with the formatted traceback.

The flag prints as ``str(flag)``, except that Python booleans print as ``true``/``false``
(the original printed ``True``, which the agent counts as a failure). A ``str`` result
prints as it is, a ``dict`` or ``list`` as JSON, anything else as ``str(result)``.

The file is self-contained: it works as ``elves_app.worker`` and, copied, as
``app-worker.py``.
"""

import base64
import binascii
import importlib
import json
import os
import sys
import traceback

FLAG_OPEN = "<ElvesWFlag>"
FLAG_CLOSE = "</ElvesWFlag>"
RESULT_OPEN = "<ElvesWResult>"
RESULT_CLOSE = "</ElvesWResult>"


def decode_param(b64):
    """Decodes the worker's third argument: base64, then UTF-8, then JSON ("" when empty)."""
    if not b64:
        return ""
    try:
        raw = base64.b64decode(b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise ValueError("the parameter is not standard base64: %s" % e)
    return json.loads(raw.decode("utf-8"))


def _text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _flag_text(flag):
    if isinstance(flag, bool):
        return "true" if flag else "false"
    return _text(flag)


def answer(flag, result):
    """The answer line the agent parses, without the trailing newline."""
    return "%s%s%s %s%s%s" % (
        FLAG_OPEN,
        _flag_text(flag),
        FLAG_CLOSE,
        RESULT_OPEN,
        _text(result),
        RESULT_CLOSE,
    )


def run(argv, app_dir=None):
    """Runs one call for ``argv`` (without the program name) and returns ``(flag, result)``.

    Never raises: every failure becomes ``("false", traceback or reason)``.
    """
    if len(argv) not in (2, 3):
        return "false", "param error"
    app, func = argv[0], argv[1]
    try:
        param = decode_param(argv[2] if len(argv) == 3 else "")
        if app_dir is None:
            app_dir = os.getcwd()
        if app_dir not in sys.path:
            sys.path.insert(0, app_dir)
        module = importlib.import_module(app)
        instance = getattr(module, app)()
        outcome = getattr(instance, func)(param)
        if not isinstance(outcome, (tuple, list)) or len(outcome) != 2:
            raise TypeError(
                "%s.%s must return a pair (flag, result), not %r" % (app, func, outcome)
            )
        return outcome[0], outcome[1]
    except BaseException:  # noqa: B902 - SystemExit and KeyboardInterrupt are answers too.
        return "false", traceback.format_exc()


def main(argv=None):
    """The command-line entry: prints the answer and exits 0."""
    if argv is None:
        argv = sys.argv[1:]
    # The app directory: that of app-worker.py when this file runs under that name, else
    # the working directory (the agent starts every worker in its app directory).
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(script) == "app-worker.py":
        app_dir = os.path.dirname(script)
    else:
        app_dir = os.getcwd()
    flag, result = run(argv, app_dir)
    try:
        line = answer(flag, result)
    except BaseException:
        line = answer("false", traceback.format_exc())
    try:
        sys.stdout.flush()
    except Exception:
        pass
    out = getattr(sys.stdout, "buffer", None)
    data = (line + "\n").encode("utf-8", "replace")
    if out is not None:
        out.write(data)
        out.flush()
    else:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
