"""Fixtures of the DCS contract suite; the backends themselves are described in dcs_backends.py."""

from dcs_backends import backend, consul_fake, etcd_factory, etcd_store, raft_nodes  # noqa: F401
