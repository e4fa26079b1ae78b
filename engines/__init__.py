"""Where per-partition work runs: in this process, one partition after another, or on a Dask
cluster. The work itself is the same functions either way (`engines.work`)."""
