"""The `adapterhub` command: a thin click layer over the library. Subcommands are imported only when invoked,
so `adapterhub ls` never pays for torch or transformers.

Public surface: `main` (the console script) and `COMMANDS`. The command modules and `_common` are internal; an
error becomes an exit code in one place, `LazyGroup.invoke`, through the table in `_common.exit_for`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
import traceback

import click

from ._common import debug_enabled, exit_for
from .examples import EXAMPLES

# command name -> "module:attribute" (each module holds one command group's commands)
COMMANDS: dict[str, str] = {
    "add": "adapterhub.cli.registry:add",
    "ls": "adapterhub.cli.registry:ls",
    "show": "adapterhub.cli.registry:show",
    "search": "adapterhub.cli.registry:search",
    "score": "adapterhub.cli.registry:score",
    "rm": "adapterhub.cli.registry:rm",
    "tag": "adapterhub.cli.registry:tag",
    "untag": "adapterhub.cli.registry:untag",
    "export": "adapterhub.cli.registry:export",
    "gc": "adapterhub.cli.registry:gc",
    "bases": "adapterhub.cli.registry:bases",
    "fsck": "adapterhub.cli.registry:fsck",
    "db": "adapterhub.cli.db:db",
    "token": "adapterhub.cli.token:token",
    "hash": "adapterhub.cli.hash:hash_cmd",
    "demo": "adapterhub.cli.demo:demo",
    "validate": "adapterhub.cli.apply:validate",
    "run": "adapterhub.cli.apply:run",
    "merge": "adapterhub.cli.merge:merge",
    "compose": "adapterhub.cli.merge:compose",
    "extract": "adapterhub.cli.merge:extract",
    "serve": "adapterhub.cli.hub:serve",
    "deploy": "adapterhub.cli.deploy:deploy",
    "push": "adapterhub.cli.hub:push",
    "pull": "adapterhub.cli.hub:pull",
    "import-gguf": "adapterhub.cli.gguf:import_gguf",
    "tune": "adapterhub.cli.tune:tune",
    "eval": "adapterhub.cli.tune:eval_cmd",
}


class LazyGroup(click.Group):
    """Imports a command's module only when it runs; the one place an error becomes an exit code (see `invoke`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, target in COMMANDS.items() if _module_exists(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _module_exists(target):
            return None
        module, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        if cmd_name in EXAMPLES and not command.epilog:
            command.epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[cmd_name])
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        """An unknown command names the nearest known one: `adapterhub serch` -> did you mean 'search'?"""
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            near = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.5)
            ctx.fail(f"No such command {name!r}." + (f" Did you mean {near[0]!r}?" if near else ""))
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; an error adapterhub explains becomes one line on stderr and its exit code (the table is
        `_common.exit_for`: 2 usage, 1 failed). `ADAPTERHUB_DEBUG=1` prints the traceback first."""
        try:
            return super().invoke(ctx)
        except Exception as exc:
            verdict = exit_for(exc)
            if verdict is None:
                raise  # a bug: click shows the traceback
            if debug_enabled():
                traceback.print_exc(file=sys.stderr)
            code, line = verdict
            if code == 2:
                raise click.UsageError(line) from None
            click.echo(f"error: {line}", err=True)
            sys.exit(code)


def _module_exists(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="adapterhub")
def main() -> None:
    """adapterhub: find, check, attach, swap, combine and merge LoRA adapters for one frozen base model."""
