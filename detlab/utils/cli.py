"""The argument parsing every ``tools/`` script shares, and the user-error boundary.

Tools are thin: ``tools/X.py`` calls ``main(argv) -> int`` of the ``cli`` module next to what
it drives (``detlab.engine.cli``, ``detlab.evaluation.cli``, ``detlab.export.cli``,
``detlab.diagnostics.cli``, ``detlab.visualization.cli``, ``detlab.monitor.cli``,
``detlab.sweep.cli``, ``detlab.config.cli``). Those parse arguments with
:func:`default_argument_parser` or :func:`parse_with_overrides` and hand a function to
:func:`run_tool`, which turns a :class:`~detlab.utils.errors.UserError` into one line on
stderr and exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from detlab.utils.errors import UserError

__all__ = [
    "EXIT_PREEMPTED",
    "EXIT_USER_ERROR",
    "DetlabArgumentParser",
    "default_argument_parser",
    "parse_with_overrides",
    "run_tool",
]

EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: stopped on SIGTERM/SIGUSR1 after a checkpoint


class DetlabArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line (status 2), not usage plus error.

    When the parser has a free ``opts`` positional (config overrides), options may come
    before, between or after the overrides (``parse_args`` parses them intermixed).
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        if any(a.dest == "opts" and a.nargs == "*" for a in self._actions):
            return self.parse_intermixed_args(args, namespace)
        return super().parse_args(args, namespace)


def default_argument_parser(
    description: str | None = None, *, config_required: bool = True
) -> DetlabArgumentParser:
    """Parser with the options shared by detlab tools and free ``opts`` overrides.

    Overrides are ``KEY VALUE`` pairs or ``KEY=VALUE`` tokens; options may sit anywhere
    among them.
    """
    parser = DetlabArgumentParser(
        description=description,
        epilog="Config overrides: SOLVER.BASE_LR 0.001 or SOLVER.BASE_LR=0.001, among the options",
    )
    parser.add_argument(
        "--config-file", metavar="FILE", required=config_required, help="path to a config YAML"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from OUTPUT_DIR/last_checkpoint (MODEL.WEIGHTS is then ignored)",
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="machines in the job")
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's rank")
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="initialisation URL for multi-machine jobs, e.g. tcp://host:port ('auto' on one)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument(
        "opts",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="config overrides: KEY VALUE pairs or KEY=VALUE tokens",
    )
    return parser


def parse_with_overrides(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Options wherever they are, the remaining tokens as ``args.opts`` (config overrides).

    For tools whose overrides may sit between options (``--config-file C MODEL.WEIGHTS w.pth
    --output m.onnx``). A token starting with ``--`` that no option knows stays in ``opts``,
    where the config's override parser reports it as an unexpected option.
    """
    args, rest = parser.parse_known_args(argv)
    args.opts = list(getattr(args, "opts", None) or []) + list(rest)
    return args


def run_tool(fn: Callable[[], int | None], *, debug: bool = False) -> int:
    """Run ``fn``; a :class:`UserError` — or a full disk / permission error while writing —
    becomes one stderr line and status 2."""
    from detlab.utils.file_io import output_write_error

    try:
        return int(fn() or 0)
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        friendly = output_write_error(err, err.filename or "a file")
        if debug or friendly is None:
            raise
        print(f"error: {friendly}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
