"""Collection runs: a folder of specimens scanned into classes and images (`scan`), and the
machinery that makes long runs over one safe (`sharding`: torchrun's processes share the work and
a re-run resumes it; `run_lock`: one live run per output folder)."""
