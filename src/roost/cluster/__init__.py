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
- :mod:`~roost.cluster.kubernetes_manifests` — what a service type becomes in Kubernetes (Deployment, Service).
- :mod:`~roost.cluster.kubernetes` — the Kubernetes backend: service types as Deployments + NodePort
  Services, capacity from the nodes' allocatable minus pod requests, scale-up watched until ready
  (``kubernetes`` imported lazily; docs/kubernetes.md).

- :mod:`~roost.cluster.admission` — a client's request becomes a session on a *ready* replica (the
  transaction itself is :class:`roost.hub.store.cluster.ClusterStore`'s), or on the Kubernetes backend.
- :mod:`~roost.cluster.monitor` — the hub's loop that keeps replicas and sessions true (ended, lost,
  idle, minReplicas).
- :mod:`~roost.cluster.addresses` — node addresses in URLs.
- :mod:`~roost.cluster.protocol` — the stream wire contract (hello, windows, images, replies, errors,
  the original's 40-frame format), shared by the replica and the client.
- :mod:`~roost.cluster.served_model` — what a replica's model answers for a window or an image.
- :mod:`~roost.cluster.replica` — the replica server (websocket sessions, ``/healthz``, ``/status``,
  ``/claim``).
- :mod:`~roost.cluster.stream_client` — ``roost stream``'s client: windows from a CSV or images, E2E
  and server times, bytes on the socket (:mod:`~roost.cluster.wire_bytes`), the summary and plot.

The REST routes are :mod:`roost.hub.api.cluster`; an agent's own node report is :mod:`roost.agent.node`.
"""
