"""The ``key=value,...`` option lists of ``--quantize``, ``--prune`` and ``--lowrank``."""
from __future__ import annotations

from typing import Any

from edgert.errors import CompressError

_YES = ("1", "true", "on", "yes")


def parse_options(flag: str, text: str, numbers: dict[str, type], *, booleans: tuple[str, ...] = (),
                  words: tuple[str, ...] = (), lists: tuple[str, ...] = (), bare: str | None = None,
                  bare_hint: str = "") -> dict[str, Any]:
    """Options of ``text`` (``,`` or ``;`` separated) as keyword arguments of a spec.

    ``numbers`` maps a key to its type; ``booleans`` take 1/true/on/yes; ``words`` are kept
    lower-cased; ``lists`` are ``A+B`` tuples. A part without ``=`` is the value of ``bare``,
    or an error that shows ``bare_hint`` when there is no such key.
    """
    kw: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            if bare is None:
                raise CompressError(f"{flag} '{part}': write KEY=VALUE, e.g. {bare_hint}")
            key, value = bare, key
        key = key.strip().replace("-", "_")
        if key in booleans:
            kw[key] = value.strip().lower() in _YES
        elif key in words:
            kw[key] = value.strip().lower()
        elif key in lists:
            kw[key] = tuple(v.strip() for v in value.split("+") if v.strip())
        elif key in numbers:
            try:
                kw[key] = numbers[key](value)
            except ValueError:
                raise CompressError(f"{flag} {key}={value}: not a number") from None
        else:
            known = ", ".join([*words, *booleans, *lists, *numbers])
            raise CompressError(f"{flag}: unknown option '{key}'; known: {known}")
    return kw
