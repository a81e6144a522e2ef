"""JobSweeper function (finishes jobs that stopped making progress) and the scheduled reconcile."""
