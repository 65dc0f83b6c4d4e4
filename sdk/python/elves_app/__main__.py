"""``python3 -m elves_app``: scaffold an app, or call one of its functions locally.

    python3 -m elves_app init APP DIR        # DIR/app-worker.py and DIR/APP.py
    python3 -m elves_app call APP FUNC [JSON] # in the app directory: prints the answer line
"""

import base64
import os
import re
import shutil
import sys

from . import worker

APP_TEMPLATE = '''"""The {app} app: one method per function, each returning (flag, result)."""


class {app}(object):
    def helloworld(self, param):
        # param is the task's JSON parameter, decoded ("" when there is none).
        return "true", "hello %s" % (param,)
'''

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def init(app, directory):
    if not NAME.match(app):
        raise SystemExit("elves_app: the app name must be a Python identifier: %r" % app)
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, "app-worker.py")
    shutil.copyfile(worker.__file__, target)
    module = os.path.join(directory, app + ".py")
    if not os.path.exists(module):
        with open(module, "w", encoding="utf-8") as f:
            f.write(APP_TEMPLATE.format(app=app))
    print("created %s and %s" % (target, module))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "init":
        init(argv[1], argv[2])
        return 0
    if len(argv) in (3, 4) and argv[0] == "call":
        b64 = base64.b64encode(argv[3].encode("utf-8")).decode("ascii") if len(argv) == 4 else ""
        return worker.main([argv[1], argv[2], b64])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
