"""process layer: running task processes (see README, Architecture).

Local tasks are children of a per-node forker process (forker.py) so that they outlive the
daemon; the daemon talks to it through ``spawner.Spawner``:

    spawner = await Spawner.start(run_dir, logs_dir, on_exit=..., on_progress=...)
    pid = await spawner.spawn(TaskSpec(tid, argv, env=..., cwd=..., stdin=..., merge_stderr=...))
    ... on_exit(ExitRecord) ...
    outputs = await spawner.read_outputs(tid, datastore_db_maxsize)
    spawner.ack(tid)

wire.py is the daemon<->forker message format, journal.py the forker's crash-safe record of
exits, outputs.py the readers of the ``<tid>.stdout|.stderr|.log`` capture files.
"""
