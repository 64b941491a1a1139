"""A hostile hub's error text reaches the terminal as one plain line: no escape sequences, no control characters."""

from __future__ import annotations

import httpx

from adapterhub.hub.remote import server_message


def test_terminal_escapes_in_a_hub_message_are_dropped() -> None:
    evil = "\x1b]0;pwned\x07\x1b[2Jrepo not found\u202e\x00 really"
    for response in (
        httpx.Response(404, json={"error": evil}),
        httpx.Response(404, headers={"X-Error-Message": "\x1b[2Jrepo not found\x07 really"}),
    ):
        msg = server_message(response)
        assert "\x1b" not in msg and "\x07" not in msg and "\u202e" not in msg and "\x00" not in msg
        assert "repo not found" in msg and "\n" not in msg


def test_an_ordinary_message_is_kept() -> None:
    assert (
        server_message(httpx.Response(401, json={"error": "invalid token: use a valid one"})) == "invalid token: use a valid one"
    )
