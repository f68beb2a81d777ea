"""The shape of src/probatorium, read with `ast` (pure and fast: nothing is imported or run).

(a) No import cycles among the modules. Only module-level imports count (those run when
    the module is imported, including inside module-level `try`/`if` and class bodies);
    imports inside functions are deferred, and imports under `if TYPE_CHECKING:` never run.
(b) Layering: a module imports only from its own row of `LAYERS` or from the rows below it,
    and never across an `INDEPENDENT` pair. `LAYERS` is the picture in docs/architecture.md
    (top to bottom), with the low layers split out and the modules the picture does not draw
    placed where their imports put them (each such placement says why). Every module must be
    placed: a new module fails here until it is given a row.
(c) No function body over `MAX_BODY_LINES` lines (from its first statement, docstring
    included, to its last line). The byte-level parsers in `LONG_OK_MODULES` may keep a longer
    state machine when the function carries, among its own lines (not a nested function's), a
    comment of the form ``# long: <why it stays one function>`` (at least 20 characters of
    reason), e.g. the first line of its body.

Every test reports all its violations at once. `PENDING` lists violations on main that other
branches remove (named per item); the lead deletes an entry once its fix is merged, and a
PENDING entry that no longer occurs fails too, so the list cannot go stale.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT_PKG = "probatorium"
MAX_BODY_LINES = 80
LONG_TAG = "# long:"
LONG_OK_MODULES = frozenset({"probatorium.rawclient", "probatorium.loadgen.parser", "probatorium.validate.tier1.http1"})

# Top to bottom. An entry is a module ("probatorium.cli") or a package with everything in it
# ("probatorium.bench.*"); the longest entry that matches a module gives its row.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("commands", (
        "probatorium.cli",
        "probatorium.config",  # not drawn: the config file, defaults for the commands' flags (cli only)
    )),
    # not drawn: the multi-host drivers run whole validate/bench commands per host (as child processes)
    ("cluster", ("probatorium.hosts.*",)),
    # --- publish (issue 14 item 2): not drawn; reads run documents (validate gate, results), calls the report
    ("publish", ("probatorium.publish.*",)),
    # --- end publish
    # wt-report: the HTML report reads what validation and the bench wrote (results, bench rate
    # search, loadgen histograms); only the commands sit above it
    ("report", ("probatorium.report.*",)),
    ("validate run", (
        "probatorium.validate",  # the package itself (empty)
        "probatorium.bisect.*",  # not drawn: `probatorium bisect` serves releases, runs adversarial cases on them
        "probatorium.validate.orchestrator",
        "probatorium.validate.reprocheck",  # not drawn: the repro-check command, beside the orchestrator
        "probatorium.validate.fuzz",  # not drawn: `probatorium fuzz` (Tier 2 alone), beside the orchestrator
        "probatorium.validate.replay",  # not drawn: `probatorium replay` starts a target like a cell, then Tier 3
        "probatorium.validate.citier",  # not drawn: `probatorium ci-tier` runs validate per phase, reads the documents
        "probatorium.validate.soak",  # not drawn: `probatorium soak` runs validate per round, merges the documents
    )),
    ("validate cell", (
        "probatorium.validate.cell",
        "probatorium.validate.liveness",
        "probatorium.validate.crash",
        "probatorium.validate.observers",
        "probatorium.validate.resources",
        "probatorium.validate.metrics",
        # drawn first because it runs first, but plan.py holds the values (ValidateOptions,
        # CellPlan) that the orchestrator and the cell import: it sits with the cell
        "probatorium.validate.plan",
    )),
    ("tiers", (
        "probatorium.validate.tiers",
        "probatorium.validate.tier_api",
        # Tier 1 is one of the tiers: it implements tier_api.Tier (and imports it)
        "probatorium.validate.tier1.tier",
        "probatorium.validate.tier2.tier",  # Tier 2 likewise
        "probatorium.validate.tier3.*",  # Tier 3: plans, runner, judges, the tier unit (on the faults package)
        # drawn beside the cell, but the Schedule is a value every tier gets (TierEnv.schedule)
        "probatorium.validate.schedule",
    )),
    ("slices", ("probatorium.validate.tier1.*", "probatorium.validate.tier2.*")),  # tier2: its checkers, runner, planner
    ("catalogue", (
        "probatorium.validate.invariants",
        "probatorium.validate.gate",
        "probatorium.validate.baseline",  # not drawn: the gate's accepted findings (--baseline)
        "probatorium.validate.ci_outputs",  # not drawn: --junit / --sarif / --json from the run document
        "probatorium.validate.diff",
        "probatorium.validate.incidents",
        "probatorium.validate.repro",  # the stdlib reproducer harness the dossiers and slices plug into
        "probatorium.validate.openapi",  # not drawn: the contract's operations, read by the slices
    )),
    # not drawn (the picture is the validation core): the bench stands beside validation, on the
    # low layers; INDEPENDENT keeps the two apart whatever their rows
    ("bench", ("probatorium.bench.*",)),
    # the picture's low row, split: what starts, watches and loads processes ...
    ("drivers", ("probatorium.loadgen.*", "probatorium.targets.*", "probatorium.services.*",
                 "probatorium.faults.*",  # Tier 3's faults: act on targets, services and sockets
                 "probatorium.hosts.netns",  # the netns hosts: the launcher places targets in them
                 "probatorium.hosts.agent_client")),  # the ansible driver's agent: the launcher asks it for targets
    # ... on what everything uses: results, the raw-socket client, seeds, ddmin, processes
    ("foundation", (
        "probatorium",  # the package itself: __version__
        "probatorium.errors",
        "probatorium.rawclient",
        "probatorium.seeds",
        "probatorium.shrink",
        "probatorium.procs",
        "probatorium.procfs",
        "probatorium.wsframe",  # the one WebSocket framer (RFC 6455 §5), for the load generator and the ws slice
        "probatorium.results.*",
        "probatorium.api.*",  # Tier 2's OpenAPI model, values and dependencies: stdlib + yaml/jsonschema only
        # wt-progress: the progress reporter (ETA, status line) every orchestrator feeds; stdlib only
        "probatorium.progress",
        "probatorium.jsonsummary",  # wt-progress: the --json envelope every command prints
    )),
)

# Siblings that are not layered on each other: neither side imports the other.
INDEPENDENT: tuple[tuple[str, str], ...] = (
    ("probatorium.bench.*", "probatorium.validate.*"),  # the bench and validation share only the low layers
)

# Known violations on main that other branches remove. Remove an entry when its fix is merged.
PENDING: frozenset[str] = frozenset()


# ---------------------------------------------------------------------------------------
# Reading the sources


@cache
def modules() -> dict[str, Path]:
    """Every module under src/probatorium, by dotted name (a package by its own name)."""
    out = {}
    for path in sorted((SRC / ROOT_PKG).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_targets(package: str, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The `known` modules an import statement in `package` loads (the most specific one it names)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.add(sub if sub in known else base)  # `from pkg import submodule` loads the submodule
    return {m for m in out if m in known}


def imports_of(name: str, source: str, known: set[str], *, is_package: bool = False) -> frozenset[str]:
    """The `known` modules module `name` imports when it is imported (see the docstring, (a))."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.If) and _type_checking(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.update(_import_targets(package, node, known))
                continue
            for block in ("body", "orelse", "finalbody"):
                visit(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                visit(handler.body)
            for case in getattr(node, "cases", []):
                visit(case.body)

    visit(ast.parse(source).body)
    found.discard(name)
    return frozenset(found)


# ---------------------------------------------------------------------------------------
# The rules as pure functions (tested on small made-up inputs below)


def _matches(entry: str, module: str) -> bool:
    if entry.endswith(".*"):
        pkg = entry[:-2]
        return module == pkg or module.startswith(pkg + ".")
    return module == entry


def _specificity(entry: str) -> tuple[int, int]:
    # an exact module beats the package pattern of the same name
    return (len(entry.rstrip(".*")), 0 if entry.endswith(".*") else 1)


def layer_of(module: str, layers=LAYERS) -> tuple[int, str] | None:
    """(row index, row name) of the most specific entry matching `module`, or None when unplaced."""
    best: tuple[tuple[int, int], int, str] | None = None
    for i, (row, entries) in enumerate(layers):
        for entry in entries:
            if _matches(entry, module) and (best is None or _specificity(entry) > best[0]):
                best = (_specificity(entry), i, row)
    return None if best is None else (best[1], best[2])


def layer_violations(graph: dict[str, frozenset[str]], layers=LAYERS, independent=INDEPENDENT) -> list[str]:
    """Every module left unplaced, every import of a higher row, every import across an independent pair."""
    out = []
    for mod in sorted(graph):
        here = layer_of(mod, layers)
        if here is None:
            out.append(f"unplaced: {mod} (give it a row in LAYERS)")
            continue
        for dep in sorted(graph[mod]):
            there = layer_of(dep, layers)
            if there is None:
                continue  # reported as unplaced on its own
            if there[0] < here[0]:
                out.append(f"layer: {mod} ({here[1]}) imports {dep} ({there[1]})")
            for a, b in independent:
                if (_matches(a, mod) and _matches(b, dep)) or (_matches(b, mod) and _matches(a, dep)):
                    out.append(f"independent: {mod} imports {dep} ({a} and {b} must not import each other)")
    return out


def cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(out)


def _long_tags(source: str) -> dict[int, str]:
    """Line number -> reason, for every `# long: <reason>` comment in the source."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.string.startswith(LONG_TAG):
            out[tok.start[0]] = tok.string[len(LONG_TAG):].strip()
    return out


def long_functions(name: str, source: str, limit: int = MAX_BODY_LINES,
                   long_ok: frozenset[str] = LONG_OK_MODULES) -> list[str]:
    """"long: module:Qual.name (N lines)" for every function body over `limit` lines that may not be long."""
    tags = _long_tags(source)
    out = []

    def own_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[int]:
        lines = set(range(fn.lineno, fn.end_lineno + 1))
        for node in ast.walk(fn):
            if node is not fn and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                lines -= set(range(node.lineno, node.end_lineno + 1))
        return lines

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = child.end_lineno - child.body[0].lineno + 1
                tagged = any(len(tags[ln]) >= 20 for ln in own_lines(child) if ln in tags)
                if body > limit and not (name in long_ok and tagged):
                    out.append(f"long: {name}:{prefix}{child.name} ({body} lines)")
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def _key(finding: str) -> str:
    """A finding without its line count: what PENDING names."""
    return re.sub(r" \(\d+ lines\)$", "", finding)


def _report(title: str, found: list[str], prefix: str) -> str:
    """'' when every finding is PENDING and every PENDING entry of this kind still occurs, else the report."""
    new = [f for f in found if _key(f) not in PENDING]
    stale = sorted(p for p in PENDING if p.startswith(prefix) and p not in {_key(f) for f in found})
    text = ""
    if new:
        text += f"{title}:\n" + "\n".join(new) + "\n"
    if stale:
        text += "PENDING entries that no longer occur (remove them):\n" + "\n".join(stale) + "\n"
    return text


# ---------------------------------------------------------------------------------------
# The rules on src/probatorium


@cache
def _graph() -> dict[str, frozenset[str]]:
    known = set(modules())
    return {m: imports_of(m, p.read_text(), known, is_package=p.name == "__init__.py") for m, p in modules().items()}


def test_no_import_cycles() -> None:
    found = cycles(_graph())
    assert not found, "import cycles (module-level imports):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_lower_layers_never_import_higher_ones() -> None:
    report = _report("layering violations", layer_violations(_graph()), "layer: ")
    assert not report, report


def test_no_function_body_over_80_lines() -> None:
    found = [v for m, p in modules().items() for v in long_functions(m, p.read_text())]
    report = _report(f"function bodies over {MAX_BODY_LINES} lines", found, "long: ")
    assert not report, report


# ---------------------------------------------------------------------------------------
# The rules themselves, on made-up inputs


def test_cycles_finds_every_cycle_and_ignores_chains() -> None:
    g = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"}),
         "e": frozenset({"f"}), "f": frozenset({"e"})}
    assert cycles(g) == [["a", "b", "c"], ["e", "f"]]
    assert cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_layer_rules() -> None:
    layers = (("top", ("p.cli",)), ("mid", ("p.v.*", "p.w.*")), ("low", ("p.r.*", "p.v.low")))
    assert layer_of("p.v.low", layers) == (2, "low")  # the exact entry beats the package pattern
    assert layer_of("p.v.x.y", layers) == (1, "mid") and layer_of("p.zzz", layers) is None
    g = {"p.cli": frozenset({"p.v.a"}), "p.v.a": frozenset({"p.r.s", "p.w.b"}), "p.r.s": frozenset({"p.v.a"}),
         "p.w.b": frozenset(), "p.v.low": frozenset({"p.v.a"}), "p.zzz": frozenset()}
    assert layer_violations(g, layers, (("p.v.*", "p.w.*"),)) == [
        "layer: p.r.s (low) imports p.v.a (mid)",
        "independent: p.v.a imports p.w.b (p.v.* and p.w.* must not import each other)",
        "layer: p.v.low (low) imports p.v.a (mid)",
        "unplaced: p.zzz (give it a row in LAYERS)",
    ]


def test_only_module_level_imports_count() -> None:
    known = {"p", "p.errors", "p.seeds", "p.shrink", "p.rawclient", "p.results", "p.results.schema", "p.results.store"}
    src = ("from typing import TYPE_CHECKING\nimport p.errors\n"
           "if TYPE_CHECKING:\n    from p import seeds\nelse:\n    from . import store\n"
           "try:\n    from .. import shrink\nexcept ImportError:\n    pass\n"
           "class C:\n    from ..results import schema as s\n"
           "def f():\n    from p import rawclient\n"
           "from .. import __version__\n")
    got = imports_of("p.results.schema", src, known)
    assert got == {"p.errors", "p.results.store", "p.shrink", "p"}  # `schema` itself is not an import of itself
    assert imports_of("p.results", "from . import store\n", known, is_package=True) == {"p.results.store"}


def test_long_functions_need_the_tag_in_their_own_lines() -> None:
    body = "    x = 1\n" * 81
    plain = f"def f():\n{body}"
    tagged = f"def f():\n    # long: one byte-level state machine, split it loses the precedence\n{body}"
    short_tag = f"def f():\n    # long: yes\n{body}"
    nested_tag = f"def f():\n    def g():\n        # long: the tag of another function does not count\n" \
                 f"        pass\n{body}"
    ok = frozenset({"m"})
    assert long_functions("m", plain, long_ok=ok) == ["long: m:f (81 lines)"]
    assert long_functions("m", tagged, long_ok=ok) == []
    assert long_functions("other", tagged, long_ok=ok) == ["long: other:f (81 lines)"]  # not a parser module
    assert long_functions("m", short_tag, long_ok=ok) == ["long: m:f (81 lines)"]  # no reason given
    assert long_functions("m", nested_tag, long_ok=ok) == ["long: m:f (84 lines)"]  # g's tag is not f's
    assert long_functions("m", f"class C:\n    def f(self):\n{body}".replace("\n    x", "\n        x"),
                          long_ok=ok) == ["long: m:C.f (81 lines)"]
