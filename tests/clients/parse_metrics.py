"""Reads a Prometheus text exposition on stdin and prints it as JSON, parsed by prometheus_client's own
parser (the reference Python implementation), for tests/metrics.rs.

Output: {"families": [{"name", "type", "help", "samples": [{"name", "labels", "value"}]}]}. Fails (exit 1)
when the text does not parse, or when a family lacks its HELP or TYPE line.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
families = []
for family in text_string_to_metric_families(text):
    # The parser names a counter's family without `_total`; the exposition's lines carry the full name.
    exposed = family.name + "_total" if family.type == "counter" else family.name
    for kind in ("HELP", "TYPE"):
        if f"# {kind} {exposed} " not in text:
            sys.exit(f"{exposed}: no # {kind} line")
    if not family.documentation:
        sys.exit(f"{exposed}: empty HELP")
    families.append({
        "name": family.name,
        "type": family.type,
        "help": family.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples],
    })
json.dump({"families": families}, sys.stdout)
