"""The console scripts (``pyproject.toml``'s ``[project.scripts]``): each imports its tool or trainer only
when run, under :func:`~mocapact_envs.extras.needs_extra`, so a command whose extra is not installed
names the extra to install (exit status 2) instead of ending in a traceback.

``mocapact-<tool>`` runs ``mocapact_envs.tools.<tool>``'s ``main``; ``mocapact-train-expert`` and the
other trainer commands run a trainer of ``baselines/`` as ``python -m baselines.<name>`` does, the
same single file (``baselines`` ships in the wheel).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable

from mocapact_envs.extras import MissingExtraError, needs_extra


def _guarded(command: str, run: Callable[[], int | None], doc: str) -> Callable[[], int]:
    """The console script ``command``: ``run()``'s exit status (``None``: 0), or 2 naming the extra to install."""

    def main() -> int:
        try:
            with needs_extra(command):
                code = run()
        except MissingExtraError as error:
            print(f"{command}: error: {error}", file=sys.stderr)
            return 2
        return 0 if code is None else code

    main.__doc__ = doc
    return main


def tool(command: str, module: str) -> Callable[[], int]:
    """The console script ``command``: ``module``'s ``main()``."""
    return _guarded(command, lambda: importlib.import_module(module).main(), f"``{command}``: ``{module}.main()``.")


def run_as_main(module: str, command: str) -> None:
    """Runs ``module`` as ``python -m module`` does (``runpy``), its usage line naming ``command``
    (``sys.argv[0]``) instead of the file."""
    spec = importlib.util.find_spec(module)  # imports its packages
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    namespace = types.ModuleType("__main__")
    namespace.__dict__.update(__file__=spec.origin, __spec__=spec, __loader__=spec.loader, __package__=spec.parent)
    sys.modules["__main__"] = namespace  # this process runs the one command: what it defines lives in __main__
    sys.argv[0] = command
    exec(spec.loader.get_code(module), namespace.__dict__)


def trainer(command: str, module: str) -> Callable[[], int]:
    """The console script ``command``: the trainer ``module`` run as ``python -m module``."""
    return _guarded(command, lambda: run_as_main(module, command), f"``{command}``: ``python -m {module}``.")


convert = tool("mocapact-convert", "mocapact_envs.tools.convert_clips")
demo = tool("mocapact-demo", "mocapact_envs.tools.demo")
collect = tool("mocapact-collect", "mocapact_envs.tools.collect")
minari = tool("mocapact-minari", "mocapact_envs.tools.minari_export")
download = tool("mocapact-download", "mocapact_envs.tools.download")
convert_models = tool("mocapact-convert-models", "mocapact_envs.tools.convert_models")
zoo = tool("mocapact-zoo", "mocapact_envs.tools.zoo")

train_expert = trainer("mocapact-train-expert", "baselines.ppo_expert.train")
sweep_experts = trainer("mocapact-sweep-experts", "baselines.ppo_expert.sweep")
distill = trainer("mocapact-distill", "baselines.distill.train")
train_gpt = trainer("mocapact-train-gpt", "baselines.gpt.train")
train_transfer = trainer("mocapact-train-transfer", "baselines.transfer.train")
