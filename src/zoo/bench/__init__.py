"""Measuring the models: what they cost, how fast they train and infer, and the pages that show it.

- :mod:`~zoo.bench.profiling`: parameter counts and MACs (``torch.utils.flop_counter``, on
  the ``meta`` device), which ``zoo-models``, ``zoo-bench`` and the run summary use;
- :mod:`~zoo.bench.timing`: a training step on a fixed batch, candidates timed in
  interleaved rounds with their spread and the ratio round by round, busy-machine
  warnings, peak memory (CUDA allocated, or the resident memory a fresh process adds);
- :mod:`~zoo.bench.models`: the rows of ``zoo-bench``'s model table, counted and measured
  beside torchvision's same architecture and the published numbers;
- :mod:`~zoo.bench.pages`: every generated page's heading (command, date, machine), the
  model table as Markdown and its plots.

Which command writes which page of ``docs/benchmarks/``:

- ``zoo-bench --page docs/benchmarks/models.md``: ``models.md`` (ours beside the published numbers);
- ``python scripts/bench_tables.py``: ``digits.md`` and ``seq2seq.md`` (trained results);
- ``python scripts/bench_default.py``: ``default-run.md`` (the default run, 1 and 2 threads);
- ``python scripts/bench_perf.py`` and ``python scripts/bench_rnn.py`` print the side-by-side
  rows ``docs/performance.md`` quotes with their command and date (``scripts/gpu_check.sh``
  runs the GPU suite).

Training speed-ups themselves (precision, channels-last, ``torch.compile`` as a run applies
them) are :mod:`zoo.perf`: a run's settings, which these measurements chose.
"""
