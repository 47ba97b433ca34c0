"""`proximity train-grid`: the paper's experiment grid as a resumable plan that shares work.

spec.py (what a grid is) -> plan.py (the DAG of nodes, each named by a hash of its settings and
its parents) -> local.py (runs nodes as subprocesses, a lock per node) with worker.py (one node in
one process) -> results.py (DIR/results.csv, the contract in docs/RESULTS.md). cli.py wires them.
"""
