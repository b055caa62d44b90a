"""Benchmark harness: the real server, the provider fakes and the callers, each its own process.

    python -m bench load --calls 1,10,50,100,200 --duration 60
    python -m bench smoke
    python -m bench soak --minutes 30 --calls 50

See docs/PERFORMANCE.md for what each figure means and the latest results.
"""
