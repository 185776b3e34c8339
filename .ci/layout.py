#!/usr/bin/env python3
"""Checks the source layout: no import circle between the modules of a crate,
and no source file over the line limit (tests excepted).

A module's imports are the paths it names: `crate::a::b`, `super::x`,
`self::x`, `child::x` (in `use` items or inline). Each is resolved to the
file of the deepest module it names; a cycle is a strongly connected set of
two or more files. Not imports: `mod x;` declarations, re-exports (`pub use`,
`pub(crate) use`), and the crate root (lib.rs or main.rs), which is the
crate's facade: it declares and re-exports the modules and holds the types
they share.

Usage: .ci/layout.py [--max-lines N]   (from the repository root)
"""
import os
import re
import sys

MAX_LINES = 600
PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
CHILD_RE = re.compile(r"(?<![:\w])([a-z_][a-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super|self)::\{([^;]*)\};", re.S)


def module_files(src):
    """Maps module paths (tuples) to files for one crate's src/."""
    modules = {}
    for root, _dirs, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel in (["lib"], ["main"]):
                key = ()
            elif rel[-1] == "mod":
                key = tuple(rel[:-1])
            else:
                key = tuple(rel)
            modules[key] = path
    return modules


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    # Char literals first: `'"'` would otherwise open a string.
    text = re.sub(r"'(?:\\.|[^'\\])'", "''", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def inline_modules(text):
    """Names of `mod x { ... }` blocks (tests), whose paths start one deeper."""
    return set(re.findall(r"\bmod\s+([A-Za-z_][A-Za-z0-9_]*)\s*\{", text))


def resolve(modules, base, head, rest):
    if head == "crate":
        path = list(rest)
    elif head == "super":
        path = list(base[:-1]) + list(rest)
        while path and path[0] == "super":
            path.pop(0)
    else:
        path = list(base) + list(rest)
        if head == "self" and tuple(path[: len(base) + 1]) not in modules:
            return None
    # super::super chains
    parts = []
    for part in path:
        if part == "super":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    for length in range(len(parts), -1, -1):
        key = tuple(parts[:length])
        if key in modules:
            return key
    return None


def edges_of(modules, key, path):
    text = strip_comments(open(path, encoding="utf-8").read())
    # Paths inside `#[cfg(test)] mod tests { ... }` are the tests' own.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    if cut:
        text = text[: cut.start()]
    # Re-exports are the module's facade, not what it uses.
    text = re.sub(r"\bpub(\([a-z]+\))?\s+use\s[^;]*;", "", text)
    found = set()
    for match in USE_GROUP_RE.finditer(text):
        head = match.group(1)
        for item in re.split(r",(?![^{]*\})", match.group(2)):
            item = item.strip()
            if not item:
                continue
            name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", item)
            if name:
                found.add((head, (name.group(0),)))
    for match in PATH_RE.finditer(text):
        rest = tuple(match.group(2).split("::")[1:])
        found.add((match.group(1), rest))
    # Paths that start with a child module's name (`use handle::Message;`).
    for match in CHILD_RE.finditer(text):
        found.add(("self", tuple(match.group(1).split("::"))))
    targets = set()
    for head, rest in found:
        target = resolve(modules, key, head, rest)
        if target is not None and target != key and target != () and key != ():
            targets.add(target)
    return targets


def cycles(graph):
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in graph:
        if node not in index:
            visit(node)
    return result


def main():
    max_lines = MAX_LINES
    if "--max-lines" in sys.argv:
        max_lines = int(sys.argv[sys.argv.index("--max-lines") + 1])
    problems = []
    for crate in sorted(os.listdir("crates")):
        src = os.path.join("crates", crate, "src")
        if not os.path.isdir(src):
            continue
        modules = module_files(src)
        graph = {key: edges_of(modules, key, path) for key, path in modules.items()}
        for component in cycles(graph):
            names = [modules[key] for key in component]
            problems.append("import circle in %s: %s" % (crate, " <-> ".join(names)))
        for path in modules.values():
            if path.endswith("tests.rs") or os.sep + "tests" + os.sep in path:
                continue
            lines = sum(1 for _ in open(path, encoding="utf-8"))
            if lines > max_lines:
                problems.append("%s: %d lines (over %d)" % (path, lines, max_lines))
    for problem in problems:
        print(problem)
    if problems:
        sys.exit(1)
    print("layout: no import circles, no source file over %d lines" % max_lines)


if __name__ == "__main__":
    main()
