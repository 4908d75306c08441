"""The ``painvrl`` command: train, validate-config, data-summary, and the workflows of :mod:`painvrl.workflows`
(study, compare, suite, report, download).

User mistakes (bad config, bad --set, bad data files, a non-empty output folder) are reported as
``painvrl: error: <message>`` on stderr with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import yaml

from painvrl.errors import PainvrlInputError
from painvrl.workflows import compare, download, report, study, suite

EXIT_USAGE = 2
WORKFLOWS: dict[str, tuple[ModuleType, str]] = {
    "study": (study, "run a study: multi-objective search on Ray Tune, results in MLflow"),
    "compare": (compare, "backbones x methods x splits x seeds on an MMRec dataset, into MLflow and a table"),
    "suite": (suite, "the methods over the family of synthetic benchmark shifts"),
    "report": (report, "the report of studies logged in MLflow"),
    "download": (download, "download a public dataset (checksum-verified) into a folder"),
}
"""Subcommand -> (module with ``add_arguments(parser)`` and ``run(args)``, one-line help)."""
LEGACY_COMMANDS = {"download-movielens": ["download", "movielens"]}
"""Older spellings still accepted (not listed in the help)."""


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config file (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.lr=0.001 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="painvrl", description="PaInvRL: Pareto invariant representation "
                                     "learning for multimedia recommendation.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every epoch and the libraries' own messages (default: progress bars and a summary)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one method on one dataset and write a run folder")
    _add_config_args(train)
    train.add_argument("--output", required=True, help="run folder to create (metrics.json, config.yaml, ...)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing non-empty run folder")

    validate = commands.add_parser("validate-config", help="check a config and print it fully resolved")
    _add_config_args(validate)

    summary = commands.add_parser("data-summary", help="load the config's dataset and print its summary")
    _add_config_args(summary)

    for name, (workflow, help_text) in WORKFLOWS.items():
        sub = commands.add_parser(name, help=help_text, description=(workflow.__doc__ or "").replace("``", ""),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        workflow.add_arguments(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command in WORKFLOWS:
        code: int = WORKFLOWS[args.command][0].run(args)
        return code
    from painvrl.config import load_config

    config = load_config(args.config, args.overrides)
    if args.command == "validate-config":
        from painvrl.training.checks import resolve_run

        resolve_run(config)  # the registered names and what the backbone can honour
        print(f"# config OK (hash {config.config_hash()})")
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if args.command == "data-summary":
        from painvrl.data.registry import load_dataset

        print(json.dumps(load_dataset(config.dataset).summary(), indent=2, default=str))
        return 0
    from painvrl.runner import train

    metrics = train(config, args.output, overwrite=args.overwrite)
    print(train_summary(args.output, metrics))
    return 0


def train_summary(output: str, metrics: dict[str, Any]) -> str:
    """One line: what was trained, which epoch was selected on what, and the test metrics that matter."""
    selection = metrics.get("selection", {})
    test = metrics.get("test", {})
    parts = [f"{split} recall@20 {test[split]['recall@20']:.4f}" for split in ("iid", "ood", "worst_env")
             if isinstance(test.get(split), dict) and "recall@20" in test[split]]
    timing = metrics.get("timing", {})
    seconds = float(timing["total"]) if "total" in timing else sum(
        float(v) for v in timing.values() if isinstance(v, int | float))  # "total" already sums the phases
    return (f"{metrics.get('method')}: selected epoch {selection.get('epoch')} on {selection.get('source')} "
            f"{selection.get('metric')}; test {', '.join(parts) or 'n/a'}; {seconds:.0f} s; wrote {output}")


def modern_spelling(argv: Sequence[str]) -> list[str]:
    """``argv`` with an older command spelling (``LEGACY_COMMANDS``) replaced by the current one."""
    args = list(argv)
    at = next((i for i, arg in enumerate(args) if not arg.startswith("-")), None)
    if at is not None and args[at] in LEGACY_COMMANDS:
        args[at:at + 1] = LEGACY_COMMANDS[args[at]]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(modern_spelling(sys.argv[1:] if argv is None else argv))
    from painvrl.console import configure_logging

    configure_logging(args.verbose)
    try:
        return _run(args)
    except PainvrlInputError as exc:
        print(f"painvrl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("painvrl: interrupted", file=sys.stderr)
        return 130
