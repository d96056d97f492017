"""Lints and renders a chart with the Helm SDK (helm-python-sdk, no helm binary).

    python charts/check.py CHART_DIR [VALUES_JSON [NAMESPACE]]

prints one JSON object: {"lint": <helm lint report>, "manifests": {template: yaml}}.
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
        manifests = chart.render(values, name="meridian", namespace=namespace, is_install=True)
    print(json.dumps({"lint": report, "manifests": manifests}))


if __name__ == "__main__":
    main()
