"""The `adapterhub` command: a thin click layer over the library. Subcommands are imported only when invoked,
so `adapterhub ls` never pays for torch or transformers."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" (each module holds one command group's commands)
COMMANDS: dict[str, str] = {
    "add": "adapterhub.cli.registry:add",
    "ls": "adapterhub.cli.registry:ls",
    "show": "adapterhub.cli.registry:show",
    "search": "adapterhub.cli.registry:search",
    "rm": "adapterhub.cli.registry:rm",
    "tag": "adapterhub.cli.registry:tag",
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
    "push": "adapterhub.cli.hub:push",
    "pull": "adapterhub.cli.hub:pull",
    "import-gguf": "adapterhub.cli.gguf:import_gguf",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, target in COMMANDS.items() if _module_exists(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _module_exists(target):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


def _module_exists(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="adapterhub")
def main() -> None:
    """adapterhub: find, check, attach, swap, combine and merge LoRA adapters for one frozen base model."""
