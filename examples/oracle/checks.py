"""The oracles' checks: one line per check (`ok   what`, or `FAIL what` and the detail indented
below), counted for the closing `N passed, M failed`."""

from __future__ import annotations

import sys


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}")
            for line in detail.splitlines():
                print(f"       {line}")
        sys.stdout.flush()
        return ok
