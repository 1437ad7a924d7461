"""Edge clusters: agents (or a Kubernetes cluster) as nodes that ML service sessions are admitted onto.

The map (one concept per module):

- :mod:`~roost.cluster.quantity` — Kubernetes quantities (``3417969Ki``, ``16Gi``, ``500m``) as numbers.
- :mod:`~roost.cluster.affinity` — node affinity (required terms, preferred terms with weights) and its
  evaluation against a node's labels, with Kubernetes' semantics.
- :mod:`~roost.cluster.service_types` — what a service type is (the component that serves it, requests
  and limits, affinity, sessions per replica, replica bounds, idle timeout) and the shipped ``scalar``
  and ``image`` types.
- :mod:`~roost.cluster.placement` — the scheduler: filter nodes by required affinity and free capacity,
  score by preferred weights and least allocation, deterministic tie-break. Pure; no I/O.
- :mod:`~roost.cluster.tokens` — session tokens the hub signs (Ed25519) and replicas verify.
- :mod:`~roost.cluster.errors` — the cluster's error classes and codes.
- :mod:`~roost.cluster.kubernetes` — the Kubernetes backend: service types as Deployments + NodePort
  Services, capacity from the nodes' allocatable minus pod requests, scale-up watched until ready
  (``kubernetes`` imported lazily; docs/kubernetes.md).

The hub's side (admission, the centre tier, the replica monitor) lives in :mod:`roost.hub.cluster`;
replicas and the streaming protocol in :mod:`roost.cluster.replica` and :mod:`roost.cluster.protocol`.
"""
