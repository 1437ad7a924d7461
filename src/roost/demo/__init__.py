"""The whole-system demo (`roost demo`, `make demo`): a hub, three agents, a staged group rollout, the edge
cluster's admission and offload, a federated-learning job whose model passes its gate and rolls out, and the
metrics endpoints and console left up for a person to open.

One module per concept: :mod:`.steps` (the step runner: progress, one-line explanations, the failing step
named), :mod:`.procs` (the CLI and the hub as processes, free ports), :mod:`.sshd` (a local OpenSSH server
and account for the SSH registration), :mod:`.fleet`, :mod:`.rollout`, :mod:`.cluster`, :mod:`.learn`,
:mod:`.linger`, and :mod:`.run` which drives them in order. `roost demo --quick` is the device-only demo
(:mod:`roost.cli.demo`).
"""
