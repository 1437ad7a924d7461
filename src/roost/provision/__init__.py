"""Provisioning: the hub's SSH identity, host-key pinning, Ansible playbooks and the runner, service units.

Modules: :mod:`~roost.provision.service_unit` (the agent's and the hub's systemd units),
:mod:`~roost.provision.errors`.
"""
