"""Check results, the report that collects them, and its text / JSON forms."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from detlab.utils.errors import UserError

__all__ = ["PASS", "WARN", "FAIL", "SKIP", "Check", "Report"]

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
_MARK = {PASS: "✓", WARN: "!", FAIL: "✗", SKIP: "-"}


@dataclass
class Check:
    """One check: ``section`` (environment, data, transforms, model, overfit, dataloader),
    ``name``, ``status`` (pass / warn / fail / skip), one-line ``detail``, ``fix`` for a
    failure or warning, and machine-readable ``data``."""

    section: str
    name: str
    status: str
    detail: str = ""
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class Report:
    """Ordered list of checks; ``ok`` is False when any check failed."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def add(
        self,
        section: str,
        name: str,
        status: str,
        detail: str = "",
        fix: str = "",
        **data: Any,
    ) -> Check:
        check = Check(section, name, status, detail, fix, data)
        self.checks.append(check)
        return check

    def run(self, section: str, name: str, fn: Callable[[], Any], fix: str = "") -> Any:
        """Call ``fn``; if it raises, record a failure (the error as detail) and return None."""
        try:
            return fn()
        except UserError as err:
            self.add(section, name, FAIL, str(err), fix)
        except Exception as err:  # noqa: BLE001 - a check must report, never crash the tool
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            self.add(section, name, FAIL, last, fix or "run with --debug for the traceback.")
        return None

    @property
    def ok(self) -> bool:
        return not any(c.status == FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, WARN: 0, FAIL: 0, SKIP: 0}
        for c in self.checks:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def failed(self, section: str | None = None) -> bool:
        return any(c.status == FAIL and section in (None, c.section) for c in self.checks)

    def to_json(self) -> str:
        c = self.counts()
        return json.dumps(
            {
                "ok": self.ok,
                "summary": {"passed": c[PASS], "warnings": c[WARN], "failed": c[FAIL],
                            "skipped": c[SKIP]},
                "checks": [asdict(ch) for ch in self.checks],
            },
            default=str,
        )  # fmt: skip

    def format_text(self, title: str = "") -> str:
        lines = [title] if title else []
        section = None
        for c in self.checks:
            if c.section != section:
                section = c.section
                lines.append(f"\n{section.capitalize()}")
            lines.append(f"  {_MARK[c.status]} {c.name}: {c.detail}" if c.detail else
                         f"  {_MARK[c.status]} {c.name}")  # fmt: skip
        n = self.counts()
        lines.append(
            f"\nSummary: {n[PASS]} passed, {n[WARN]} warnings, {n[FAIL]} failed"
            + (f", {n[SKIP]} skipped" if n[SKIP] else "")
        )
        for c in self.checks:
            if c.status in (FAIL, WARN):
                lines.append(f"  {_MARK[c.status]} {c.section}/{c.name}: {c.detail}")
                if c.fix:
                    lines.append(f"      fix: {c.fix}")
        lines.append("All checks passed." if self.ok else "Some checks FAILED (exit status 1).")
        return "\n".join(lines)
