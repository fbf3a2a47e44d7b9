"""Units: byte constants, parsing of durations and lists typed on the command line, and display formatting.

Decimal GB (1e9 bytes) is what datasheets and this tool print; GiB (2**30 bytes) is what nvidia-smi and vLLM logs use.
"""

from __future__ import annotations

import re

from sizing.errors import SizingError

GB = 10**9
GiB = 2**30
MiB = 2**20

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s|sec|min|m)\s*$")
_SECONDS_PER_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0}


def parse_duration_s(text: str, flag: str) -> float:
    """'50ms' -> 0.05, '2s' -> 2.0. A unit is required: a bare number is ambiguous, so it is an error."""
    match = _DURATION.match(str(text))
    if not match:
        raise SizingError(flag, f"{flag} got {text!r}, which is not a duration; give a number with a unit, "
                                f"for example 50ms, 0.2s or 2s (units: us, ms, s, min).")
    value_s = float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]
    if value_s <= 0:
        raise SizingError(flag, f"{flag} must be a positive duration, got {text!r}.")
    return value_s


def parse_slo(text: str, flag: str = "--slo") -> dict[str, str]:
    """'ttft=2s,tpot=50ms' -> {'ttft': '2s', 'tpot': '50ms'} (each checked as a duration; sizing models TTFT and
    TPOT, so other names bench knows -- itl, e2e, ttfat -- are refused with a sentence)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in ("ttft", "tpot"):
            raise SizingError(flag, f"{flag} got {part!r}; sizing predicts ttft and tpot: give NAME=DURATION with "
                                    "NAME ttft or tpot, e.g. --slo ttft=2s,tpot=50ms.")
        parse_duration_s(value.strip(), flag)
        out[name] = value.strip()
    if not out:
        raise SizingError(flag, f"{flag} is empty; example: --slo ttft=2s,tpot=50ms.")
    return out


def parse_int_list(text: str, flag: str, minimum: int = 1) -> tuple[int, ...]:
    """'1,10,100' -> (1, 10, 100); every item an integer >= minimum."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    values: list[int] = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            raise SizingError(flag, f"{flag} got {item!r}; give whole numbers separated by commas, "
                                    f"for example 1,10,100.") from None
        if value < minimum:
            raise SizingError(flag, f"{flag} values must be at least {minimum}, got {value}.")
        values.append(value)
    if not values:
        raise SizingError(flag, f"{flag} is empty; give whole numbers separated by commas, for example 1,10,100.")
    return tuple(sorted(set(values)))


def parse_tokens(text: str, flag: str) -> int:
    """'8192' -> 8192, '32k' -> 32768, '128K' -> 131072 (k = 1024 tokens, as context lengths are usually quoted)."""
    raw = str(text).strip().lower()
    multiplier = 1
    if raw.endswith("k"):
        raw, multiplier = raw[:-1], 1024
    try:
        value = int(float(raw) * multiplier)
    except ValueError:
        raise SizingError(flag, f"{flag} got {text!r}; give a token count such as 8192 or 32k.") from None
    if value < 1:
        raise SizingError(flag, f"{flag} must be at least 1 token, got {text!r}.")
    return value


def format_gb(n_bytes: float | None, digits: int = 1) -> str:
    """Bytes as decimal GB ('81.6 GB'); None prints as '-'."""
    if n_bytes is None:
        return "-"
    return f"{n_bytes / GB:.{digits}f} GB"


def format_duration(seconds: float | None) -> str:
    """0.0123 -> '12.3 ms', 2.5 -> '2.50 s'; None prints as '-'."""
    if seconds is None:
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"
