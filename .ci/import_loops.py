#!/usr/bin/env python3
# Run from the workspace root: python3 .ci/import_loops.py [crate/src]; exits 1 on a two-module loop.
"""Import loops in a crate: pairs of modules that each name the other through `crate::`
paths (top-level modules; a folder counts as one module, and also its children)."""
import os, re, sys
src = sys.argv[1] if len(sys.argv) > 1 else "broker/src"
def modname(path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod": rel = rel[:-1]
    if rel in (["lib"], ["main"]): return None
    return "::".join(rel)
uses = {}
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith(".rs"): continue
        p = os.path.join(root, f)
        m = modname(p)
        if m is None or m.startswith("bin"): continue
        text = open(p).read()
        text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
        # drop test modules: `#[cfg(test)] mod tests {` to end of file
        cut = re.search(r"#\[cfg\(test\)\]\s*mod tests", text)
        if cut: text = text[:cut.start()]
        refs = set()
        for path in re.findall(r"crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
            refs.add(path)
        # braces: use crate::{a, b::c}
        for grp in re.findall(r"crate::\{([^}]*)\}", text, re.S):
            for part in grp.split(","):
                part = part.strip().split("::")[0]
                if part: refs.add(part)
        parent = m.rsplit("::", 1)[0] if "::" in m else ""
        for path in re.findall(r"\bsuper::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
            refs.add((parent + "::" if parent else "") + path)
        for pre, grp in re.findall(r"\bsuper::(?:([a-z_:]*)::)?\{([^}]*)\}", text, re.S):
            for part in grp.split(","):
                part = part.strip().split("::")[0]
                if part: refs.add("::".join(x for x in (parent, pre, part) if x))
        uses[m] = refs
allmods = set(uses)
def target(ref):
    parts = ref.split("::")
    best = None
    for i in range(1, len(parts)+1):
        cand = "::".join(parts[:i])
        if cand in allmods: best = cand
    return best
edges = {m: {t for r in refs if (t := target(r)) and t != m} for m, refs in uses.items()}
loops = set()
for a, ts in edges.items():
    for b in ts:
        if a in edges.get(b, ()) and not (a.startswith(b + "::") or b.startswith(a + "::")):
            loops.add(tuple(sorted((a, b))))
for a, b in sorted(loops): print(f"{a} <-> {b}")
print(f"{len(loops)} two-module loops")
fail = bool(loops)
# longer cycles: strongly connected components over the same edges
idx, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
def visit(v):
    idx[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in idx: visit(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = stack.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: sccs.append(sorted(c))
import sys as _s; _s.setrecursionlimit(10000)
for v in list(edges):
    if v not in idx: visit(v)
for c in sccs: print("cycle:", " ".join(c))

sys.exit(1 if fail else 0)
