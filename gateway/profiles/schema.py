"""The JSON Schema editors use to complete and check profile YAML, and checks of abstract bases.

The loader validates a *resolved* profile (after ``extends``) against the pydantic models, whose
schema is ``loader.profile_json_schema()``. A file as written is looser: a profile that extends
another may override one field of an inherited signal, may drop a signal with ``remove: true``,
and an abstract base (``abstract: true``) may name signals without addresses or a protocol. The
authoring schema is the model schema with exactly those allowances, so an editor flags what the
loader would refuse and nothing it accepts; ``shulian profile validate`` remains the full check.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap

from gateway.drivers.registry import profile_models
from gateway.profiles.loader import (
    Lines,
    _plain,
    _sub,
    locate,
    profile_json_schema,
    record_lines,
    validation_problems,
)
from gateway.profiles.models import CustomSignalSpec, GroupSpec, SignalBase
from wire.signals import SIGNALS

SCHEMA_ID: Final = "https://shulian.dev/schemas/device-profile.schema.json"
SCHEMA_FILE: Final = "profile.schema.json"
"""Name of the committed schema in ``device_profiles/``."""

_AUTHORING_KEYS: Final[dict[str, Any]] = {
    "extends": {
        "type": "string",
        "description": "Profile this one builds on: a path relative to this file "
        "(`../_base/machine_tool.yaml`) or a profile id. Fields given here replace the base's; "
        "signals and groups merge by name, field by field.",
    },
    "abstract": {
        "type": "boolean",
        "description": "A base that only other profiles extend: it may omit `protocol` and "
        "addresses, and no device may use it directly.",
    },
}
_REMOVE_KEY: Final[dict[str, Any]] = {
    "type": "boolean",
    "description": "In a profile that extends another: drop the inherited signal of this name.",
}

_REMOVE_GROUP_KEY: Final[dict[str, Any]] = {
    "type": "boolean",
    "description": "In a profile that extends another: drop the inherited group of this name.",
}


_REMOVE_CUSTOM_KEY: Final[dict[str, Any]] = {
    "type": "boolean",
    "description": "In a profile that extends another: drop the inherited custom signal.",
}


def authoring_schema() -> dict[str, Any]:
    """The profile schema for files as written: the model schema plus ``extends``/``abstract``."""
    schema = copy.deepcopy(profile_json_schema())
    defs: dict[str, Any] = schema["$defs"]
    branches = []
    for model in profile_models():
        profile_def = defs[model.__name__]
        profile_def["properties"].update(copy.deepcopy(_AUTHORING_KEYS))
        # A child restates nothing it inherits, so only the id is always required; a complete
        # (non-abstract, non-extending) profile still needs its protocol and signals.
        profile_def["required"] = ["id"]
        profile_def["if"] = {
            "not": {"anyOf": [{"required": ["extends"]}, {"required": ["abstract"]}]}
        }
        profile_def["then"] = {"required": ["protocol", "signals"]}
        signal_ref = profile_def["properties"]["signals"]["items"]["$ref"]
        signal_def = defs[signal_ref.rsplit("/", 1)[1]]
        signal_def["properties"]["remove"] = copy.deepcopy(_REMOVE_KEY)
        signal_def["properties"]["name"] = _signal_name_schema(signal_def["properties"]["name"])
        signal_def["required"] = ["name"]
        group_ref = profile_def["properties"]["groups"]["items"]["$ref"]
        group_def = defs[group_ref.rsplit("/", 1)[1]]
        group_def["properties"]["remove"] = copy.deepcopy(_REMOVE_GROUP_KEY)
        custom_ref = profile_def["properties"]["custom_signals"]["items"]["$ref"]
        custom_def = defs[custom_ref.rsplit("/", 1)[1]]
        custom_def["properties"]["remove"] = copy.deepcopy(_REMOVE_CUSTOM_KEY)
        custom_def["required"] = ["name"]  # a child may override one field of an inherited one
        branches.append({"$ref": f"#/$defs/{model.__name__}"})
    # anyOf, not a discriminated oneOf: an abstract base has no `protocol`, and a signal that
    # overrides only shared fields fits every protocol.
    schema.pop("discriminator", None)
    schema.pop("oneOf", None)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "shulian device profile",
        "description": "A device profile: what the gateway reads from one equipment model and "
        "how it normalizes it. Reference: docs/profiles.md; full check: shulian profile validate.",
        "anyOf": branches,
        "$defs": defs,
    }


def _signal_name_schema(model_schema: dict[str, Any]) -> dict[str, Any]:
    """A canonical name (offered for completion) or one qualified with ``.l1``, ``.z3``, ..."""
    bases = sorted(SIGNALS)
    qualified = "^(" + "|".join(re.escape(b) for b in bases) + r")\.[a-z0-9_]+$"
    custom = r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*(\.[a-z0-9_]+)?$"  # declared in custom_signals
    return {
        "description": model_schema.get("description", ""),
        "anyOf": [
            {"enum": bases},
            {"type": "string", "pattern": qualified},
            {"type": "string", "pattern": custom},
        ],
    }


def _signal_fields() -> set[str]:
    fields: set[str] = {"remove"}
    for model in profile_models():
        signal_model = model.model_fields["signals"].annotation.__args__[0]  # type: ignore[union-attr]
        fields |= set(signal_model.model_fields)
    return fields


def _profile_fields() -> set[str]:
    fields: set[str] = set(_AUTHORING_KEYS)
    for model in profile_models():
        fields |= set(model.model_fields)
    return fields


def check_abstract_base(data: CommentedMap, file: Path) -> list[str]:
    """Every problem in an abstract base that can be found without a protocol.

    Addresses and protocol settings are checked in each profile that extends the base; here the
    fields must exist in some protocol, signal names must be canonical and the shared signal and
    group fields must be valid.
    """
    where = str(file)
    lines = record_lines(data, where)
    problems: list[str] = []
    known = _profile_fields()
    for key in data:
        if key not in known:
            problems.append(f"{locate(lines, (key,), where)}: {key}: unknown profile field")
    problems += _check_items(
        data, "groups", lines, where, GroupSpec, {*GroupSpec.model_fields, "remove"}
    )
    problems += _check_items(data, "signals", lines, where, SignalBase, _signal_fields())
    problems += _check_items(
        data,
        "custom_signals",
        lines,
        where,
        CustomSignalSpec,
        {*CustomSignalSpec.model_fields, "remove"},
    )
    return problems


def _check_items(
    data: CommentedMap,
    key: str,
    lines: Lines,
    where: str,
    model: type[SignalBase] | type[GroupSpec] | type[CustomSignalSpec],
    known: set[str],
) -> list[str]:
    problems: list[str] = []
    items = data.get(key) or []
    if not isinstance(items, list):
        return [f"{locate(lines, (key,), where)}: {key}: expected a list"]
    shared = set(model.model_fields)
    for index, item in enumerate(items):
        path = (key, index)
        if not isinstance(item, dict):
            problems.append(f"{locate(lines, path, where)}: {key}[{index}]: expected a mapping")
            continue
        for field in item:
            if field not in known:
                problems.append(
                    f"{locate(lines, (*path, field), where)}: {key}[{index}].{field}: unknown field"
                )
        try:
            model.model_validate({k: _plain(v) for k, v in item.items() if k in shared})
        except ValidationError as exc:
            sub = _sub(lines, path)
            for problem in validation_problems(exc, sub, where):
                file_line, _, rest = problem.partition(": ")
                if rest.startswith("(top level): "):  # about the item as a whole
                    rest = rest.removeprefix("(top level)")
                else:
                    rest = f".{rest}"
                problems.append(f"{file_line}: {key}[{index}]{rest}")
    return problems
