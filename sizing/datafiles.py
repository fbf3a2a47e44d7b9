"""Reading the catalog files shipped in sizing/data (CSV and JSON). The only module that opens package data."""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from typing import Any


def read_text(name: str) -> str:
    """The text of sizing/data/<name>."""
    return resources.files("sizing").joinpath("data", name).read_text(encoding="utf-8")


def read_csv(name: str) -> list[dict[str, str]]:
    """Rows of sizing/data/<name> as dicts of strings (empty cells are '')."""
    return list(csv.DictReader(io.StringIO(read_text(name))))


def read_json(name: str) -> Any:
    """The parsed JSON document sizing/data/<name>."""
    return json.loads(read_text(name))


def optional_float(text: str | None) -> float | None:
    """'' or None -> None (missing is None, never 0); otherwise float(text)."""
    if text is None or str(text).strip() == "":
        return None
    return float(text)
