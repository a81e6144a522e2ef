"""The internals of ``layer_utils.jobs``: job model, lifecycle table, table access, store and report."""
