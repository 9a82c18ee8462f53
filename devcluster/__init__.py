"""devcluster: a real Kubernetes control plane on one machine, for the tests, the demo and bench.

A reader maps the modules to the components:

- :mod:`devcluster.layout`: ports, folders and constants; :mod:`devcluster.pki`: the CA,
  certificates and kubeconfigs; :mod:`devcluster.processes`: starting and stopping by pid;
- :mod:`devcluster.controlplane`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler;
- :mod:`devcluster.kwoknodes`: the simulated nodes (kwok) and their exec endpoint (podexec);
- :mod:`devcluster.dns`: CoreDNS for pod names;
- :mod:`devcluster.realnode`: the real nodes (kubelet + containerd + runc), with
  :mod:`devcluster.podnet` (their bridge and iptables chains), :mod:`devcluster.nodeimages`
  (the pause image, and ``make images``' images put into containerd) and
  :mod:`devcluster.hostfs` (their cgroups and mounts, made and swept);
- :mod:`devcluster.kwokstages`: the opt-in kwok stage that ends a pod on request;
- :mod:`devcluster.addons` with :mod:`devcluster.jobset` and :mod:`devcluster.kueue`: JobSet
  and Kueue beside the control plane, started only when asked (``up --with jobset,kueue``);
- :mod:`devcluster.cli`: ``python3 -m devcluster up|down|status|restart|clean``.

And what the tests, the demo and the benchmarks share (they need the project's venv):

- :mod:`devcluster.client`: the cluster as a test sees it (kubectl, namespaces, DNS, audit log);
- :mod:`devcluster.workloads`: worker pods, real-node pods, running kubexec, finding leftovers;
- :mod:`devcluster.manifests`: deploy/ rendered with kustomize, and what a job is made of;
- :mod:`devcluster.mpijobs`: the MPI launchers' env files and running a job to completion;
- :mod:`devcluster.flow`: deploy/'s whole flow on the devcluster (the demo and its e2e test);
- :mod:`devcluster.jobkit`: running ``k8smpi-job`` and finding what a job left behind.

The control-plane modules use the standard library only, so ``make devcluster`` runs before
the project's venv exists.
"""
