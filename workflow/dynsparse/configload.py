"""Where a config value came from: YAML syntax errors and config problems with file and line.

Snakemake merges `config.yaml` with every `--configfile` (later files win) before the workflow
sees the result, so a problem found in the merged config would otherwise be blamed on
`config.yaml`. `ConfigFiles` keeps each file's YAML node tree (line and column of every key) and
answers, for a key path, the last file that sets it. Parse-time only: PyYAML, nothing heavy.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

KeyPath = Sequence[str | int]


class ConfigSyntaxError(ValueError):
    """A config file is not valid YAML; the message is `file:line:column: what`."""


def compose_yaml(path: str | Path) -> yaml.Node | None:
    """The file's node tree; raise ConfigSyntaxError naming file, line and column."""
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.compose(stream, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        context = f" ({error.context})" if error.context else ""
        raise ConfigSyntaxError(
            f"{where}: YAML syntax error: {error.problem}{context}. Fix the file there "
            "(mismatched brackets or quotes, a tab, or a missing ':' are the usual causes)."
        ) from None
    except yaml.YAMLError as error:
        raise ConfigSyntaxError(f"{path}: YAML syntax error: {error}") from None


def check_yaml_syntax(paths: Sequence[str | Path]) -> None:
    for path in paths:
        if Path(path).exists():
            compose_yaml(path)


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == str(key):
                return value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key]
    return None


def _find(root: yaml.Node | None, path: KeyPath) -> yaml.Node | None:
    node = root
    for key in path:
        node = _child(node, key)
        if node is None:
            return None
    return node


class ConfigFiles:
    """The config files in Snakemake's order (`config.yaml` first, then each `--configfile`)."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.roots = [compose_yaml(p) for p in self.paths]

    def origin(self, path: KeyPath) -> str:
        """`file:line` of the last file that sets `path` (or its nearest parent that one sets).

        A sample's setting that its override does not give comes from the model's defaults:
        `fc/samples/x/lr` falls back to `fc/defaults/lr`.
        """
        candidates = [list(path)]
        if len(path) >= 4 and path[1] == "samples":
            candidates.append([path[0], "defaults", *path[3:]])
        exact = [(candidate, len(candidate)) for candidate in candidates]
        parents = [(candidates[0], depth) for depth in range(len(path) - 1, 0, -1)]
        for candidate, depth in exact + parents:
            for file, root in zip(reversed(self.paths), reversed(self.roots), strict=True):
                node = _find(root, candidate[:depth])
                if node is not None:
                    return f"{file}:{node.start_mark.line + 1}"
        return str(self.paths[-1]) if self.paths else "config"


class UnknownSampleError(ValueError):
    """A target names a sample the config does not have."""


def unknown_sample(model: str, name: str, known: Sequence[str]) -> None:
    """Raise the error for a target under results/<model>/<name>/ with no such sample."""
    raise UnknownSampleError(
        f"no {model} sample named {name!r} in the config; known {model} samples: "
        f"{', '.join(sorted(known)) or '(none)'}. Fix the target, or add the sample under "
        f"{model}/samples in config.yaml."
    )


def main(argv: Sequence[str]) -> int:
    """`python workflow/dynsparse/configload.py FILE...`: check YAML syntax, say where it fails.

    Snakemake reads a `--configfile` before the workflow starts, so its syntax errors come
    without a place; this names it."""
    try:
        check_yaml_syntax(argv)
    except ConfigSyntaxError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{', '.join(argv)}: valid YAML")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
