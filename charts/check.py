"""Lints and renders a chart with the Helm SDK (helm-python-sdk, no helm binary).

    python charts/check.py CHART_DIR [VALUES_JSON [NAMESPACE]]

prints one JSON object: {"lint": <helm lint report>, "manifests": {template: yaml},
"crds": {file name: yaml}, "notes": <NOTES.txt rendered>}; or, when the values are refused
(values.schema.json) or a template fails, {"error": <Helm's message>} and exits 2.
"""

import json
import sys

import helm_python as helm


def main() -> None:
    chart_dir = sys.argv[1]
    values = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    namespace = sys.argv[3] if len(sys.argv) > 3 else "meridian-system"
    report = helm.lint(chart_dir, values, strict=True, namespace=namespace)
    with helm.Chart.load(chart_dir) as chart:
        try:
            chart.validate_schema(values)
            manifests = chart.render(values, name="meridian", namespace=namespace, is_install=True)
        except helm.HelmError as error:
            print(json.dumps({"lint": report, "error": str(error)}))
            sys.exit(2)
        crds = {crd["filename"]: crd["data"] for crd in chart.crds}
    notes = {k: manifests.pop(k) for k in list(manifests) if k.endswith("NOTES.txt")}
    print(json.dumps({"lint": report, "manifests": manifests, "crds": crds, "notes": "".join(notes.values())}))


if __name__ == "__main__":
    main()
