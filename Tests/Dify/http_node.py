#!/usr/bin/env python3
"""Prints the HTTP Request node of a Dify DSL file as one JSON object.

    python3 Tests/Dify/http_node.py dify/dify-chatflow-demo.yml

The node is the entry of workflow.graph.nodes whose data.type is "http-request" (exactly one
is expected). Output: {"title", "method" (upper case), "url", "headers": [[name, value], ...],
"params", "body_type", "body" (the raw JSON text as typed in Dify's editor, with its {{#...#}}
variables unreplaced), "timeout", "retry_config"}. Dify exports body.data as a one-item list
[{id, key, type, value}] (0.10+); older exports had a bare string, which is accepted too.
Exit 1 with a message on stderr if the file does not have exactly one such node.
"""
import json
import sys

import yaml


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        dsl = yaml.safe_load(f)
    nodes = [n for n in dsl["workflow"]["graph"]["nodes"] if n.get("data", {}).get("type") == "http-request"]
    if len(nodes) != 1:
        print(f"expected one http-request node, found {len(nodes)}", file=sys.stderr)
        return 1
    data = nodes[0]["data"]
    body = data.get("body") or {}
    raw = body.get("data")
    if isinstance(raw, list):
        texts = [item.get("value", "") for item in raw if isinstance(item, dict)]
        if len(texts) != 1:
            print(f"expected one body item for body type {body.get('type')!r}, found {len(texts)}", file=sys.stderr)
            return 1
        raw = texts[0]
    # Dify stores headers as "Name:value" lines; the value may itself contain ':'.
    headers = []
    for line in (data.get("headers") or "").splitlines():
        if line.strip():
            name, _, value = line.partition(":")
            headers.append([name.strip(), value.strip()])
    print(json.dumps({
        "title": data.get("title"),
        "method": str(data.get("method", "")).upper(),
        "url": data.get("url"),
        "headers": headers,
        "params": data.get("params") or "",
        "body_type": body.get("type"),
        "body": raw if isinstance(raw, str) else "",
        "timeout": data.get("timeout") or {},
        "retry_config": data.get("retry_config") or {},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
