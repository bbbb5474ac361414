"""ferryman's benchmark suite: ``bash bench/run.sh [--size N] [--quick]`` (see bench/README.md).

Layout, in the order a run uses it:

* ``data.py``         deterministic generators; sources cached by size, destinations made fresh
* ``workloads/``      W1 copy, W2 match and reduce, W3 failures: data, contestants, checks;
                      ``ferryman_runs.py`` is ferryman's side, ``suites.py`` what is compared
                      with what and the targets
* ``baselines/``      the contestants: the engine alone, hand-written sqlite3, petl, pandas, dlt
* ``harness.py``      one child process per measurement, alternated repetitions, medians
* ``__main__.py``     the command line, the table and ``bench/results/latest.json``
"""
