"""The deployment files: docker/kubernetes/*.yaml hold what they promise
(kinds, ports, probes, the Secret, the sidecar's backend, the PROXY protocol
variant), agree with the image (docker/Dockerfile: user, health port) and
carry gateway configs that `smtpgate -t` accepts. The compose example's
config is checked the same way. No cluster and no podman needed: the
manifests are read as YAML (python3-yaml); make check-container runs the
images themselves.
"""

import glob
import os
import re
import subprocess
import unittest

import yaml

import lib

DOCKER = os.path.join(lib.REPO, "docker")
K8S = os.path.join(DOCKER, "kubernetes")
MAIL_PORTS = {465, 587, 2525}
SECRET = "smtpgate-tls"


def load_all():
    """{file name: [documents]} for every YAML file in docker/kubernetes."""
    files = sorted(glob.glob(os.path.join(K8S, "*.yaml")) + glob.glob(os.path.join(K8S, "*.yml")))
    out = {}
    for path in files:
        with open(path) as f:
            out[os.path.basename(path)] = [d for d in yaml.safe_load_all(f) if d is not None]
    return out


def ini_entries(text):
    """[(section, key, value)] of a smtpgate config, repeated keys kept."""
    entries, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            section = line[1:line.index("]")]
            continue
        key, _, value = line.partition("=")
        value = value.split(";", 1)[0].strip()
        entries.append((section, key.strip(), value))
    return entries


def ini_get(entries, section, key):
    return [v for s, k, v in entries if s == section and k == key]


def image_uid_gid():
    with open(os.path.join(DOCKER, "Dockerfile")) as f:
        m = re.search(r"^USER (\d+):(\d+)$", f.read(), re.M)
    return int(m.group(1)), int(m.group(2))


def healthcheck_port():
    with open(os.path.join(DOCKER, "healthcheck")) as f:
        return int(re.search(r"SMTPGATE_HEALTH:-127\.0\.0\.1:(\d+)", f.read()).group(1))


def checked_config(test, text):
    """Run `smtpgate -t` on a deployment config, with its host names and
    certificate paths, which exist only where it is deployed, replaced by
    127.0.0.1 and the test certificates."""
    c = lib.certs()
    text = re.sub(r"^(backend\s*=\s*)[A-Za-z][\w.-]*:", r"\g<1>127.0.0.1:", text, flags=re.M)
    text = re.sub(r"^cert\s*=.*$", "cert = " + c.cert, text, flags=re.M)
    text = re.sub(r"^key\s*=.*$", "key = " + c.key, text, flags=re.M)
    path = os.path.join(lib.new_workdir("k8s"), "smtpgate.ini")

    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([lib.gateway_bin(), "-t", "-c", path], capture_output=True, text=True)
    test.assertEqual(p.returncode, 0, p.stdout + p.stderr)


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = load_all()

    def docs(self, name, kind):
        return [d for d in self.files[name] if d["kind"] == kind]

    def one(self, name, kind):
        found = self.docs(name, kind)
        self.assertEqual(len(found), 1, "%s: one %s" % (name, kind))
        return found[0]

    def test_every_document_is_a_kubernetes_object(self):
        self.assertTrue(self.files, "no YAML in docker/kubernetes")
        for name, docs in self.files.items():
            self.assertTrue(docs, name)
            for d in docs:
                for field in ("apiVersion", "kind", "metadata"):
                    self.assertIn(field, d, name)
                self.assertTrue(d["metadata"].get("name"), name)

    def check_deployment(self, name):
        """The checks common to both variants; returns (deployment, gateway
        container, gateway config entries)."""
        dep = self.one(name, "Deployment")
        self.assertEqual(dep["apiVersion"], "apps/v1")
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        self.assertEqual(dep["spec"]["selector"]["matchLabels"], labels)
        spec = pod["spec"]
        gw = next(c for c in spec["containers"] if c["name"] == "smtpgate")
        ports = {p["name"]: p["containerPort"] for p in gw["ports"]}
        self.assertEqual(MAIL_PORTS, set(ports.values()) & MAIL_PORTS)

        # The gateway's config: from the ConfigMap in the same file, mounted
        # where the image's command line reads it.
        vols = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in gw["volumeMounts"]}
        self.assertEqual(gw["args"], ["-c", "/etc/smtpgate/smtpgate.ini"])
        cfg_mount = mounts["/etc/smtpgate/smtpgate.ini"]
        cm_name = vols[cfg_mount["name"]]["configMap"]["name"]
        cm = next(d for d in self.docs(name, "ConfigMap") if d["metadata"]["name"] == cm_name)
        text = cm["data"][cfg_mount["subPath"]]
        entries = ini_entries(text)
        checked_config(self, text)

        # Every listener's ports are container ports, and the container
        # ports are the listeners'.
        addrs = [v for s, k, v in entries if s.startswith("listener:") and k == "address"]
        self.assertEqual({int(a.rsplit(":", 1)[1]) for a in addrs}, MAIL_PORTS)

        # Certificate and key from the Secret, mounted where the config
        # looks, readable by the image's group.
        tls = next(m for m in gw["volumeMounts"] if "secret" in vols[m["name"]])
        self.assertEqual(vols[tls["name"]]["secret"]["secretName"], SECRET)
        for key, file in (("cert", "tls.crt"), ("key", "tls.key")):
            self.assertEqual(ini_get(entries, "tls", key), [tls["mountPath"] + "/" + file])
        uid, gid = image_uid_gid()
        self.assertEqual(spec["securityContext"]["fsGroup"], gid)

        # /healthz on the metrics listener for readiness.
        metrics = ini_get(entries, "gateway", "metrics")
        self.assertEqual(len(metrics), 1)
        mport = int(metrics[0].rsplit(":", 1)[1])
        self.assertEqual(ports["metrics"], mport)
        self.assertEqual(mport, healthcheck_port())
        ready = gw["readinessProbe"]["httpGet"]
        self.assertEqual(ready["path"], "/healthz")
        self.assertEqual(ports.get(ready["port"], ready["port"]), mport)

        # Non-root as the image's user, nothing to escalate, and the low
        # ports opened by the sysctl, since no_new_privs voids the binary's
        # file capability; NET_BIND_SERVICE stays in the bounding set, or
        # the kernel refuses to exec a binary with a file capability.
        sc = gw["securityContext"]
        self.assertIs(sc["runAsNonRoot"], True)
        self.assertEqual((sc["runAsUser"], sc["runAsGroup"]), (uid, gid))
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertIs(sc["readOnlyRootFilesystem"], True)
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertIn("NET_BIND_SERVICE", sc["capabilities"]["add"])
        sysctls = {s["name"]: s["value"] for s in spec["securityContext"]["sysctls"]}
        self.assertEqual(sysctls.get("net.ipv4.ip_unprivileged_port_start"), "0")

        # SIGTERM drains for [timeouts] drain after the preStop pause, all
        # before the kubelet's SIGKILL.
        drain = int(ini_get(entries, "timeouts", "drain")[0])
        pause = int(gw["lifecycle"]["preStop"]["exec"]["command"][-1])
        self.assertGreater(spec["terminationGracePeriodSeconds"], drain + pause)

        # The Service publishes the mail ports to the gateway's ports, and
        # a PodDisruptionBudget covers these pods.
        svc = self.one(name, "Service")
        self.assertEqual(svc["spec"]["selector"], labels)
        self.assertEqual({p["port"] for p in svc["spec"]["ports"]}, MAIL_PORTS)
        for p in svc["spec"]["ports"]:
            self.assertEqual(ports.get(p["targetPort"], p["targetPort"]), p["port"])
        pdb = self.one(name, "PodDisruptionBudget")
        self.assertEqual(pdb["apiVersion"], "policy/v1")
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"], labels)
        self.assertTrue("maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"])
        return dep, gw, entries

    def test_sidecar(self):
        dep, gw, entries = self.check_deployment("sidecar.yaml")
        # The legacy server in the same pod, reached on loopback; its port
        # 25 is not published.
        self.assertEqual(ini_get(entries, "gateway", "backend"), ["127.0.0.1:25"])
        others = [c for c in dep["spec"]["template"]["spec"]["containers"] if c is not gw]
        self.assertEqual(len(others), 1)
        self.assertIn(25, [p["containerPort"] for p in others[0]["ports"]])
        svc = self.one("sidecar.yaml", "Service")
        self.assertNotIn(25, [p["port"] for p in svc["spec"]["ports"]])
        live = gw["livenessProbe"]["httpGet"]
        self.assertEqual(live["path"], "/healthz")

    def test_scale_out(self):
        dep, gw, entries = self.check_deployment("scale-out.yaml")
        self.assertGreater(dep["spec"]["replicas"], 1)
        self.assertEqual(len(dep["spec"]["template"]["spec"]["containers"]), 1)
        svc = self.one("scale-out.yaml", "Service")
        self.assertEqual(svc["spec"]["type"], "LoadBalancer")
        ann = svc["metadata"].get("annotations", {})
        self.assertTrue(any("proxy-protocol" in k for k in ann), ann)
        # Every listener reads the balancer's PROXY header, from the
        # balancer only.
        listeners = {s for s, _, _ in entries if s.startswith("listener:")}
        self.assertEqual(len(listeners), 3)
        for s in listeners:
            self.assertIn(ini_get(entries, s, "accept_proxy")[0], ("v1", "v2", "any"), s)
            self.assertTrue(ini_get(entries, s, "trusted_proxies")[0], s)

    def test_cert_manager_fills_the_secret(self):
        cert = self.one("cert-manager-certificate.yaml", "Certificate")
        self.assertTrue(cert["apiVersion"].startswith("cert-manager.io/"))
        self.assertEqual(cert["spec"]["secretName"], SECRET)


class ComposeConfig(unittest.TestCase):
    def test_compose_config_is_valid(self):
        with open(os.path.join(DOCKER, "compose", "smtpgate.ini")) as f:
            text = f.read()
        checked_config(self, text)
        metrics = ini_get(ini_entries(text), "gateway", "metrics")
        self.assertEqual([int(m.rsplit(":", 1)[1]) for m in metrics], [healthcheck_port()])

    def test_compose_file(self):
        with open(os.path.join(DOCKER, "compose.yaml")) as f:
            compose = yaml.safe_load(f)
        gw = compose["services"]["smtpgate"]
        published = {int(p.rsplit(":", 1)[1]) for p in gw["ports"]}
        self.assertEqual(published, MAIL_PORTS)
        # The legacy server is reachable through the gateway only.
        self.assertNotIn("ports", compose["services"]["postfix"])
        self.assertEqual(gw["cap_add"], ["NET_BIND_SERVICE"])
        self.assertEqual(gw["healthcheck"]["test"], ["CMD", "/usr/local/bin/smtpgate-healthcheck"])


if __name__ == "__main__":
    unittest.main()
