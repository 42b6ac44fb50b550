"""Passwords in URLs (``scheme://user:password@host``): masked wherever archselect writes or
prints, and kept off the command line that Hydra records and prints."""

from __future__ import annotations

import os
import re

# The password runs to the last '@' before the host (a raw '@' inside it is masked too).
_SECRET = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s'\"]+):(?P<pw>[^/\s'\"]*)@"
                     r"(?=[^@/\s'\"]*(?:[/\s?#'\",]|$))")
ENV_PREFIX = "ARCHSELECT_SECRET_"


def mask_secrets(text: str) -> str:
    """Hide the password of any ``scheme://user:password@host`` URL in ``text``."""
    return _SECRET.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. a database driver's message) with the password of ``url`` masked, and
    every piece of it too: a driver that split the URL at a raw '@' in the password quotes the
    rest as a host name."""
    out = mask_secrets(text)
    for m in _SECRET.finditer(url):
        pieces = {m["pw"], *m["pw"].split("@")}
        for piece in sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True):
            out = out.replace(piece, "***")
    return out


def hide_secrets(argv: list[str]) -> list[str]:
    """The command line with every URL password moved into an environment variable of this
    process (``${oc.env:ARCHSELECT_SECRET_<n>}`` in its place). Hydra records the overrides in
    ``multirun.yaml``, prints them with HYDRA_FULL_ERROR=1 and ``--cfg job``; the password is in
    none of them, and the config still resolves to it."""
    out = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            out.append(arg)
            continue

        def hide(m: re.Match[str]) -> str:
            name = f"{ENV_PREFIX}{sum(k.startswith(ENV_PREFIX) for k in os.environ)}"
            os.environ[name] = m["pw"]
            return f"{m['scheme']}{m['user']}:${{oc.env:{name}}}@"

        out.append(_SECRET.sub(hide, arg))
    return out
