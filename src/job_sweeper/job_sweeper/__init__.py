"""JobSweeper function: finishes jobs that stopped making progress."""
