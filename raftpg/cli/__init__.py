"""Command-line entry points: ``raftpg`` (main.py: run a node, validate a config, the demo) and
``raftpgctl`` (ctl.py: operate a cluster through the REST API). ``local_cluster.py`` runs real agents on
loopback for ``raftpg demo`` (the integration tests and benchmarks use it too; it ships in the wheel,
raftpg/testing/ does not). Outermost layer: may import anything but raftpg.testing."""
