"""The paper scale as a plan: jobs, budgets and GPU-hours per section (nothing is trained).

The numbers are `robustlab reproduce --scale paper --dry-run`'s (``experiments.plan``): every
job of every section, its optimizer steps and images processed counted as the training loop
counts them, and its GPU-hours from the seconds per step measured on one H200 with the fast path
(bf16 + channels_last + CUDA graphs; benchmarks/RESULTS.md). The training-set sizes are the
datasets' published ones, so no data is needed; extra data is planned with the paper's 1M images.

    python benchmarks/paper_plan.py            # markdown tables for docs/experiments.md
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict

from robustlab.experiments.plan import GPU
from robustlab.experiments.reproduce import plan
from robustlab.runs.store import RunStore


def budget_spread(jobs: list[dict]) -> list[dict]:
    """Per sweep of the size sweeps (data and extra-data scaling): steps and images across its sizes."""
    sweeps: dict[tuple, list[dict]] = defaultdict(list)
    for job in jobs:
        if job["experiment"] in ("data_scaling", "extra_data"):
            sweeps[(job["experiment"], job["dataset"], job["recipe"])].append(job)
    lines = []
    for (experiment, dataset, recipe), group in sweeps.items():
        steps, images = [j["steps"] for j in group], [j["images"] for j in group]
        lines.append(
            {
                "sweep": f"{experiment} {dataset} {recipe}",
                "steps": f"{min(steps):,} - {max(steps):,}",
                "images": f"{min(images) / 1e6:.2f}M - {max(images) / 1e6:.2f}M",
                "spread": f"{100 * (max(images) / min(images) - 1):.2f}%",
            }
        )
    return lines


def markdown(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:  # an empty store: every searched lr is pending
        result = plan("paper", RunStore(folder))
    print(f"GPU-hours on one {GPU}, one seed per point:\n")
    print(markdown(result["totals"]))
    print("\nBudget across the sizes of each sweep (images processed is the budget held fixed):\n")
    print(markdown(budget_spread(result["jobs"])))


if __name__ == "__main__":
    main()
