"""The demo app: each method takes the task's param and returns (flag, result)."""
import json


class apptest(object):
    def helloword(self, param):
        """Answers param["my"], like the original demo."""
        return "true", param.get("my", "") if isinstance(param, dict) else ""

    def echo(self, param):
        """Answers the param back as compact JSON."""
        return "true", json.dumps(param, ensure_ascii=False, separators=(",", ":"))

    def fail(self, param):
        """A function that reports failure (worker_flag 0)."""
        return "false", "this function always fails"
