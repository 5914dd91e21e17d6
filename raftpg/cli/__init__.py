"""Command-line entry points: ``raftpg`` (main.py: run a node, validate a config, the demo) and
``raftpgctl`` (ctl.py: operate a cluster through the REST API). Outermost layer: may import anything."""
