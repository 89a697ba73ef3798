"""portprint.udfs: what runs in the Python workers — the numba kernels, the header rule, the scorer, and the Detect
and Escalate stages — plain numpy/pyarrow/torch, called by jobs/ on Spark and in plain processes."""
