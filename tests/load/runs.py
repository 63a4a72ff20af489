"""Runs ``python -m loadtests.run`` (gateway + Locust + agents, all on 127.0.0.1) for the load tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROFILES = Path(__file__).resolve().parent / "profiles"


@dataclass
class LoadRun:
    code: int
    output: str
    summary: dict[str, Any]
    out: Path

    def explain(self) -> str:
        return f"exit code {self.code}; output tail:\n{self.output[-3500:]}"


def run_load(profile: str, out: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 100,
             report: bool = False) -> LoadRun:
    """One bounded load run; ``profile`` is a name in configs/profiles or a file in tests/load/profiles.

    ``report``: also write our report.html and plots (about 2 s of CPU: only the tests that read it ask).
    """
    local = PROFILES / f"{profile}.toml"
    argv = [sys.executable, "-m", "loadtests.run", "--profile", str(local) if local.exists() else profile,
            "--out", str(out), "--grace", "60", *([] if report else ["--no-report"]), *args]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return LoadRun(done.returncode, done.stdout + done.stderr, summary, out)


def check(summary: dict[str, Any], name: str, scope: str = "all") -> dict[str, Any]:
    for item in summary["checks"]:
        if item["name"] == name and item["scope"] == scope:
            return dict(item)
    raise AssertionError(f"no check {name} [{scope}] in {[c['name'] for c in summary['checks']]}")
