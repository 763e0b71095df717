"""Load tooling: the notice fleets, the threaded queue pump and the benchmarks (`python -m bench`).

The benchmarks report ratios measured within one run (fresh vs replay, 0 % vs 30 % faults,
1,000 vs 10,000 notices) because the machines they run on are shared and noisy: an absolute
figure says more about the neighbours than about the code, a ratio taken minutes apart on the
same machine mostly does not. The e2e scale test drives the worker through the same pump, so
what the benchmark reports is what the acceptance test asserts on.
"""
