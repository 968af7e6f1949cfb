#!/usr/bin/env python3
"""Public API of the broker library as rustdoc documents it: modules, item pages, and
the inherent methods, pub fields and variants on those pages.

Run after `cargo doc -p broker --no-deps`: python3 .ci/pub_api.py [target/doc/broker]."""
import os, re, sys
d = sys.argv[1] if len(sys.argv) > 1 else "target/doc/broker"
mods = items = members = 0
for root, _, files in os.walk(d):
    for f in files:
        if f == "index.html": mods += 1
        m = re.match(r"(struct|enum|fn|trait|type|constant|static)\.", f)
        if not m: continue
        items += 1
        if m.group(1) in ("struct", "enum", "trait"):
            html = open(os.path.join(root, f)).read()
            cut = html.find('id="trait-implementations"')
            if cut < 0: cut = html.find('id="synthetic-implementations"')
            head = html if cut < 0 else html[:cut]
            members += len(set(re.findall(r'id="((?:method|structfield|variant|tymethod)\.[A-Za-z0-9_]+)"', head)))
print(f"modules={mods} items={items} members={members} total={mods+items+members}")
