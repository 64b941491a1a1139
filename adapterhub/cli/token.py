"""`adapterhub token`: create, list and revoke hub access tokens (stored hashed; the secret is printed once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._common import json_option, print_json, print_table

if TYPE_CHECKING:
    from ..store.tokens import TokenStore


def _tokens() -> TokenStore:
    from ..sources import default_registry
    from ..store.tokens import TokenStore

    return TokenStore(default_registry().db)


@click.group()
def token() -> None:
    """Hub access tokens: `Authorization: Bearer <token>` (what huggingface_hub sends with token=...)."""


@token.command()
@click.option("--namespace", required=True, help="Namespace the token works on; '*' for all.")
@click.option("--scope", type=click.Choice(["read", "write"]), required=True, help="write implies read.")
@click.option("--expires", default=None, help="Lifetime such as 12h, 30d or 2w (default: never).")
@click.option("--label", default="", help="A note to recognise the token by.")
@json_option
def create(namespace: str, scope: str, expires: str | None, label: str, as_json: bool) -> None:
    """Create a token and print its secret (shown only this once)."""
    from ..store.tokens import parse_duration

    info, secret = _tokens().create(namespace, scope, label=label, expires_in=parse_duration(expires) if expires else None)
    if as_json:
        print_json({**info.model_dump(mode="json"), "token": secret})
    else:
        click.echo(secret)
        click.echo(f"token {info.id}: {info.scope.value} on {info.namespace}"
                   + (f", expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ""), err=True)  # fmt: skip


@token.command(name="list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@json_option
def list_(include_revoked: bool, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    infos = _tokens().list(include_revoked=include_revoked)
    if as_json:
        print_json(infos)
        return
    print_table(
        ["id", "prefix", "namespace", "scope", "label", "created", "expires", "revoked"],
        [[t.id, t.prefix + "…", t.namespace, t.scope.value, t.label, f"{t.created_at:%Y-%m-%d}",
          f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never", f"{t.revoked_at:%Y-%m-%d}" if t.revoked_at else ""]
         for t in infos],
    )  # fmt: skip


@token.command()
@click.argument("token_id", type=int)
@json_option
def revoke(token_id: int, as_json: bool) -> None:
    """Revoke a token by id; requests carrying it are refused from now on."""
    info = _tokens().revoke(token_id)
    print_json(info) if as_json else click.echo(f"revoked token {info.id} ({info.prefix}…)")
