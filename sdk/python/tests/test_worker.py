"""The worker entry, run the way the agent runs it: ``python3 app-worker.py APP FUNC B64``
in the app directory, with a minimal environment, reading the two markers of stdout the way
crates/worker-output does (first opening marker, last closing marker)."""

import base64
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)
sys.path.insert(0, SDK)

from elves_app import worker  # noqa: E402

# An app written in the original SDK's style: a module and a class with the app's name,
# methods taking the param and returning (flag, result).
APP = '''
import json
import sys


class demo:
    def echo(self, param):
        return "true", json.dumps(param, ensure_ascii=False, sort_keys=True)

    def kind(self, param):
        return "true", type(param).__name__

    def noisy(self, param):
        print("the app prints <ElvesWResult>too")
        sys.stderr.write("and warns\\n")
        return "true", "done"

    def refuse(self, param):
        return "false", "not today"

    def boom(self, param):
        raise RuntimeError("kaboom")

    def single(self, param):
        return "only one value"

    def pybool(self, param):
        return True, {"n": 1, "s": "é"}

    def exit(self, param):
        sys.exit(3)
'''


def b64(text):
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def between(out, open_, close):
    start = out.index(open_) + len(open_)
    return out[start:out.rindex(close)]


class WorkerProcess(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        shutil.copyfile(worker.__file__, os.path.join(cls.dir, "app-worker.py"))
        with open(os.path.join(cls.dir, "demo.py"), "w", encoding="utf-8") as f:
            f.write(APP)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def call(self, *args):
        # The agent's allowlist may leave out LANG: the answer must still be UTF-8.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        p = subprocess.run(
            [sys.executable, "app-worker.py"] + list(args),
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode("utf-8")
        return between(out, worker.FLAG_OPEN, worker.FLAG_CLOSE), between(
            out, worker.RESULT_OPEN, worker.RESULT_CLOSE
        ), out

    def test_rules(self):
        cases = [
            # (what, args, flag, result or None to check with `contains`, contains)
            ("param round-trips", ["demo", "echo", b64('{"b": [1, 2], "a": "x"}')],
             "true", '{"a": "x", "b": [1, 2]}', None),
            ("non-ASCII, newlines and backslashes in the param",
             ["demo", "echo", b64('{"s": "中文 é\\n\\\\ \\"q\\" \'q\'"}')],
             "true", '{"s": "中文 é\\n\\\\ \\"q\\" \'q\'"}', None),
            ("no param gives an empty string", ["demo", "kind"], "true", "str", None),
            ("an empty param gives an empty string", ["demo", "kind", ""], "true", "str", None),
            ("a JSON object param is a dict", ["demo", "kind", b64('{"a": 1}')], "true", "dict", None),
            ("app-reported failure", ["demo", "refuse", b64("{}")], "false", "not today", None),
            ("wrong argument count", ["demo"], "false", "param error", None),
            ("too many arguments", ["demo", "echo", "", "x"], "false", "param error", None),
            ("exception becomes the traceback", ["demo", "boom", ""], "false", None, "RuntimeError: kaboom"),
            ("missing method", ["demo", "nosuch", ""], "false", None, "AttributeError"),
            ("missing module", ["nosuchapp", "f", ""], "false", None, "ModuleNotFoundError"),
            ("param that is not JSON", ["demo", "echo", b64("{oops")], "false", None, "JSONDecodeError"),
            ("param that is not base64", ["demo", "echo", "***"], "false", None, "base64"),
            ("param that is not UTF-8", ["demo", "echo", base64.b64encode(b"\xff\xfe").decode()],
             "false", None, "UnicodeDecodeError"),
            ("a return value that is not a pair", ["demo", "single", ""], "false", None, "must return a pair"),
            ("Python booleans and dicts", ["demo", "pybool", ""], "true", '{"n": 1, "s": "é"}', None),
            ("sys.exit in the app", ["demo", "exit", ""], "false", None, "SystemExit"),
        ]
        for what, args, flag, result, contains in cases:
            with self.subTest(what):
                got_flag, got_result, _ = self.call(*args)
                self.assertEqual(got_flag, flag)
                if result is not None:
                    self.assertEqual(got_result, result)
                else:
                    self.assertIn(contains, got_result)

    def test_app_output_comes_first_and_the_answer_is_one_line(self):
        flag, result, out = self.call("demo", "noisy", "")
        self.assertEqual(flag, "true")
        lines = out.splitlines()
        self.assertIn("the app prints", lines[0])
        self.assertEqual(
            lines[-1], "<ElvesWFlag>true</ElvesWFlag> <ElvesWResult>done</ElvesWResult>"
        )


class Answer(unittest.TestCase):
    def test_answer_format(self):
        self.assertEqual(
            worker.answer("true", "r"),
            "<ElvesWFlag>true</ElvesWFlag> <ElvesWResult>r</ElvesWResult>",
        )
        self.assertEqual(worker.answer(False, [1]), "<ElvesWFlag>false</ElvesWFlag> <ElvesWResult>[1]</ElvesWResult>")
        self.assertEqual(worker.answer("1", 2), "<ElvesWFlag>1</ElvesWFlag> <ElvesWResult>2</ElvesWResult>")


class Init(unittest.TestCase):
    def test_init_scaffolds_a_working_app(self):
        from elves_app.__main__ import init

        d = tempfile.mkdtemp()
        try:
            init("hello", d)
            p = subprocess.run(
                [sys.executable, "app-worker.py", "hello", "helloworld", b64('"世界"')],
                cwd=d, capture_output=True, timeout=30,
            )
            self.assertIn(
                "<ElvesWFlag>true</ElvesWFlag> <ElvesWResult>hello 世界</ElvesWResult>",
                p.stdout.decode("utf-8"),
            )
        finally:
            shutil.rmtree(d)


if __name__ == "__main__":
    unittest.main()
