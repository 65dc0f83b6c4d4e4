#!/usr/bin/env python3
"""Elves app worker (agent-protocol §3-§4), in the style of the original Python SDK.

Usage: app-worker.py APP FUNC [BASE64_PARAM]. Loads class APP from APP.py next to this file,
calls FUNC(param) and prints the two markers. The param is decoded as UTF-8 JSON.
"""
import base64
import importlib
import json
import os
import sys
import traceback


def main(argv):
    if len(argv) not in (2, 3):
        return "false", "param error"
    app, func = argv[0], argv[1]
    param = ""
    if len(argv) == 3 and argv[2]:
        param = json.loads(base64.b64decode(argv[2]).decode("utf-8"))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    module = importlib.import_module(app)
    instance = getattr(module, app)()
    flag, result = getattr(instance, func)(param)
    return flag, result


if __name__ == "__main__":
    try:
        flag, result = main(sys.argv[1:])
    except Exception:  # the traceback is the answer
        flag, result = "false", traceback.format_exc()
    sys.stdout.write("<ElvesWFlag>%s</ElvesWFlag> <ElvesWResult>%s</ElvesWResult>\n" % (flag, result))
