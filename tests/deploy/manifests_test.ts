/**
 * deploy/k8s and the Dockerfile: every manifest validates against the Kubernetes OpenAPI schema
 * (kubernetes-models' compiled validators) with no unknown field, and the pieces agree with each
 * other and with the code: probes on the container port, the GPU limit, the grace period, the
 * data volume at the CLI's --data-dir, non-root, the ConfigMap and the Service selector; the
 * Dockerfile pins its one Debian base and Deno (the version scripts/qlorad.sh installs), takes
 * Node and npm from Debian, and runs as a non-root user (tests/deploy/image_test.ts builds and
 * runs it). deploy/k8s/fleet (N replicas on a shared volume and a Redis store) is held to
 * the same schema, kept in step with the base, and checked for what a fleet needs: a
 * ReadWriteMany claim, one GPU per replica, each replica's id its pod's name, Redis with its
 * append-only file, a PodDisruptionBudget over the qlorad pods, and no secret on a command line.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { Service } from "kubernetes-models/v1/Service";
import { validate as deploymentSchema } from "kubernetes-models/_schemas/IoK8sApiAppsV1Deployment";
import { validate as statefulSetSchema } from "kubernetes-models/_schemas/IoK8sApiAppsV1StatefulSet";
import { validate as pdbSchema } from "kubernetes-models/_schemas/IoK8sApiPolicyV1PodDisruptionBudget";
import { validate as networkPolicySchema } from "kubernetes-models/_schemas/IoK8sApiNetworkingV1NetworkPolicy";
import { validate as configMapSchema } from "kubernetes-models/_schemas/IoK8sApiCoreV1ConfigMap";
import { validate as namespaceSchema } from "kubernetes-models/_schemas/IoK8sApiCoreV1Namespace";
import { validate as pvcSchema } from "kubernetes-models/_schemas/IoK8sApiCoreV1PersistentVolumeClaim";
import { validate as serviceSchema } from "kubernetes-models/_schemas/IoK8sApiCoreV1Service";
import { SERVICE_NAME } from "../../src/service/server.ts";
import { backendFromEnv } from "../../src/gpu/provider.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const K8S_DIR = path.join(ROOT, "deploy/k8s");
const FLEET_DIR = path.join(K8S_DIR, "fleet");

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

interface Kind {
  /** Validates with the schema; throws a message naming the failing paths. */
  model: new (data: Obj) => { validate(): void };
  /** The same schema's compiled validator, called directly to see which fields it reads. */
  schema: (data: unknown) => boolean;
}

/** apiVersion/kind -> schema. A manifest of any other kind fails the test: add it here. */
const KINDS: Record<string, Kind> = {
  "apps/v1/Deployment": { model: Deployment, schema: deploymentSchema },
  "apps/v1/StatefulSet": { model: StatefulSet, schema: statefulSetSchema },
  "policy/v1/PodDisruptionBudget": { model: PodDisruptionBudget, schema: pdbSchema },
  "networking.k8s.io/v1/NetworkPolicy": { model: NetworkPolicy, schema: networkPolicySchema },
  "v1/ConfigMap": { model: ConfigMap, schema: configMapSchema },
  "v1/Namespace": { model: Namespace, schema: namespaceSchema },
  "v1/PersistentVolumeClaim": { model: PersistentVolumeClaim, schema: pvcSchema },
  "v1/Service": { model: Service, schema: serviceSchema },
};

/** Parses a YAML stream strictly (duplicate keys, syntax errors and warnings all fail). */
function parseYaml(text: string, where: string): Obj[] {
  const docs = parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true });
  if (!Array.isArray(docs)) throw new Error(`${where}: not a YAML stream`);
  const out: Obj[] = [];
  for (const doc of docs) {
    const problems = [...doc.errors, ...doc.warnings];
    if (problems.length > 0) throw new Error(`${where}: ${problems.map(String).join("; ")}`);
    const value = doc.toJS();
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

interface Manifest {
  file: string;
  obj: Obj;
}

async function readManifests(dir = K8S_DIR): Promise<Manifest[]> {
  const out: Manifest[] = [];
  for (const file of await manifestFiles(dir)) {
    const text = await Deno.readTextFile(path.join(dir, file));
    for (const obj of parseYaml(text, file)) out.push({ file, obj });
  }
  return out;
}

/** The YAML files in `dir` (deploy/k8s by default) other than kustomization.yaml, sorted. */
async function manifestFiles(dir = K8S_DIR): Promise<string[]> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && /\.ya?ml$/.test(e.name) && e.name !== "kustomization.yaml") files.push(e.name);
  }
  return files.sort();
}

function kindOf(obj: Obj): string {
  return `${obj.apiVersion}/${obj.kind}`;
}

/**
 * Fields the schema does not know. Kubernetes' OpenAPI schemas allow unknown properties (the API
 * server drops them, or rejects them under strict field validation), so a misspelled field
 * would pass a plain schema check. The compiled validator reads every property its schema
 * names, and every entry of a map it iterates: a field of the object it never read is unknown.
 */
function unknownFields(schema: (data: unknown) => boolean, obj: Obj): string[] {
  const read = new Set<string>();
  const wrap = (value: unknown, at: string): unknown => {
    if (value === null || typeof value !== "object") return value;
    return new Proxy(value as object, {
      get(target, key, receiver) {
        const child = Reflect.get(target, key, receiver);
        if (typeof key !== "string" || !Object.hasOwn(target, key)) return child;
        read.add(`${at}/${key}`);
        return wrap(child, `${at}/${key}`);
      },
    });
  };
  schema(wrap(obj, ""));
  const unknown: string[] = [];
  const walk = (value: unknown, at: string) => {
    if (value === null || typeof value !== "object") return;
    for (const [key, child] of Object.entries(value)) {
      const here = `${at}/${key}`;
      if (!Array.isArray(value) && !read.has(here)) unknown.push(here);
      else walk(child, here);
    }
  };
  walk(obj, "");
  return unknown;
}

/** Schema errors and unknown fields of one object, as messages; empty when it is valid. */
function schemaProblems(obj: Obj): string[] {
  const kind = KINDS[kindOf(obj)];
  if (!kind) return [`${kindOf(obj)} has no schema in this test`];
  const problems: string[] = [];
  try {
    new kind.model(obj).validate();
  } catch (err) {
    problems.push(err instanceof Error ? err.message : String(err));
  }
  for (const field of unknownFields(kind.schema, obj)) problems.push(`unknown field ${field}`);
  return problems;
}

async function one(kind: string, dir = K8S_DIR): Promise<Obj> {
  const found = (await readManifests(dir)).filter((m) => kindOf(m.obj) === kind);
  const where = path.relative(ROOT, dir);
  assert.equal(found.length, 1, `expected one ${kind} in ${where}, found ${found.length}`);
  return found[0].obj;
}

function serverContainer(deployment: Obj): Obj {
  const containers: Obj[] = deployment.spec.template.spec.containers;
  const c = containers.find((c) => c.name === "qlorad");
  assert.ok(c, "the Deployment has a container named qlorad");
  return c;
}

/** The value following `flag` in an argument list. */
function flagValue(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

async function kubectlAvailable(): Promise<boolean> {
  try {
    const out = await new Deno.Command("kubectl", {
      args: ["version", "--client"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------- schema

Deno.test("every manifest in deploy/k8s validates against the Kubernetes schema", async () => {
  const manifests = await readManifests();
  assert.ok(manifests.length >= 4, `found ${manifests.length} objects`);
  const problems = manifests.flatMap((m) =>
    schemaProblems(m.obj).map((p) => `${m.file} ${m.obj.kind}/${m.obj.metadata?.name}: ${p}`)
  );
  assert.deepEqual(problems, []);
  for (const m of manifests) {
    assert.match(m.obj.metadata?.name ?? "", /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, m.file);
  }
});

Deno.test("the schema check rejects wrong types, missing fields and unknown fields", async () => {
  const good = await one("apps/v1/Deployment");
  assert.deepEqual(schemaProblems(good), []);

  const wrongType = structuredClone(good);
  serverContainer(wrongType).readinessProbe.grpc.port = "grpc"; // gRPC probes take a number
  assert.match(schemaProblems(wrongType).join("\n"), /readinessProbe\/grpc\/port must be integer/);

  const missing = structuredClone(good);
  delete missing.spec.selector;
  assert.match(schemaProblems(missing).join("\n"), /selector/);

  const misspelt = structuredClone(good);
  const c = serverContainer(misspelt);
  c.livenessprobe = c.livenessProbe;
  misspelt.spec.template.spec.terminationGracePeriod = 300;
  assert.deepEqual(schemaProblems(misspelt).sort(), [
    "unknown field /spec/template/spec/containers/0/livenessprobe",
    "unknown field /spec/template/spec/terminationGracePeriod",
  ]);

  // Map entries (labels, ConfigMap data, resource limits) are not unknown fields.
  assert.deepEqual(schemaProblems(await one("v1/ConfigMap")), []);
});

Deno.test("kustomization.yaml lists exactly the manifests in deploy/k8s", async () => {
  const [k] = parseYaml(
    await Deno.readTextFile(path.join(K8S_DIR, "kustomization.yaml")),
    "kustomization.yaml",
  );
  assert.equal(k.apiVersion, "kustomize.config.k8s.io/v1beta1");
  assert.equal(k.kind, "Kustomization");
  assert.deepEqual([...k.resources].sort(), await manifestFiles());
  assert.equal(k.namespace, (await one("v1/Namespace")).metadata.name);
  // The image the Deployment names is the one kustomize rewrites, to a pinned tag.
  const image = serverContainer(await one("apps/v1/Deployment")).image;
  const entry = (k.images as Obj[]).find((i) => i.name === image);
  assert.ok(entry, `kustomization.yaml images has an entry for ${image}`);
  assert.ok(entry.newTag && entry.newTag !== "latest", "a pinned image tag");
});

Deno.test({
  name: "kubectl kustomize renders deploy/k8s into valid objects in the namespace",
  ignore: !(await kubectlAvailable()),
  async fn() {
    const out = await new Deno.Command("kubectl", {
      args: ["kustomize", K8S_DIR],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const objs = parseYaml(new TextDecoder().decode(out.stdout), "kubectl kustomize");
    assert.deepEqual(
      objs.map((o) => kindOf(o)).sort(),
      (await readManifests()).map((m) => kindOf(m.obj)).sort(),
    );
    for (const o of objs) {
      assert.deepEqual(schemaProblems(o), [], `${o.kind}/${o.metadata.name}`);
      if (o.kind !== "Namespace") assert.equal(o.metadata.namespace, "qlorad", o.kind);
    }
    const deployment = objs.find((o) => o.kind === "Deployment")!;
    assert.equal(serverContainer(deployment).image, "registry.example.com/qlorad:0.1.0");
  },
});

// ------------------------------------------------------------------------------ deployment

Deno.test("deployment: native gRPC probes on the container's gRPC port", async () => {
  const c = serverContainer(await one("apps/v1/Deployment"));
  const grpcPort = (c.ports as Obj[]).find((p) => p.name === "grpc");
  assert.ok(grpcPort, "a container port named grpc");
  assert.equal(grpcPort.protocol ?? "TCP", "TCP");
  assert.equal(String(grpcPort.containerPort), flagValue(c.args, "--port"));
  for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
    assert.ok(c[probe]?.grpc, `${probe} uses grpc`);
    assert.equal(c[probe].grpc.port, grpcPort.containerPort, `${probe} port`);
  }
  // Liveness asks about the whole server, readiness about the API the Service routes to: the
  // names the server's health service knows (src/service/server.ts).
  assert.equal(c.livenessProbe.grpc.service ?? "", "");
  assert.equal(c.readinessProbe.grpc.service, SERVICE_NAME);
});

Deno.test("deployment: one GPU, Recreate, and a grace period that covers a checkpoint", async () => {
  const d = await one("apps/v1/Deployment");
  const c = serverContainer(d);
  assert.equal(Number(c.resources.limits["nvidia.com/gpu"]), 1);
  const requestedGpu = c.resources.requests?.["nvidia.com/gpu"];
  if (requestedGpu !== undefined) assert.equal(String(requestedGpu), "1");
  assert.ok(c.resources.requests.cpu, "a CPU request");
  assert.ok(c.resources.requests.memory, "a memory request");
  assert.equal(d.spec.replicas, 1);
  assert.equal(d.spec.strategy.type, "Recreate");
  const grace = d.spec.template.spec.terminationGracePeriodSeconds;
  assert.ok(Number.isInteger(grace) && grace >= 120, `terminationGracePeriodSeconds ${grace}`);
  // The kubelet's probe must not restart a busy pod faster than a checkpoint could be written.
  const live = c.livenessProbe;
  assert.ok((live.periodSeconds ?? 10) * (live.failureThreshold ?? 3) >= 60);
  // The NVIDIA container toolkit mounts the Vulkan driver only with the graphics capability.
  const caps = (c.env as Obj[]).find((e) => e.name === "NVIDIA_DRIVER_CAPABILITIES")?.value;
  assert.ok(caps, "NVIDIA_DRIVER_CAPABILITIES is set");
  for (const cap of ["compute", "graphics"]) assert.ok(caps.split(",").includes(cap), cap);
});

Deno.test("deployment: the PVC is mounted at the server's --data-dir", async () => {
  const d = await one("apps/v1/Deployment");
  const pvc = await one("v1/PersistentVolumeClaim");
  const c = serverContainer(d);
  assert.equal(c.args[0], "serve");
  const dataDir = flagValue(c.args, "--data-dir");
  assert.equal(dataDir, "/data");
  const mount = (c.volumeMounts as Obj[]).find((m) => m.mountPath === dataDir);
  assert.ok(mount, `a volume mounted at ${dataDir}`);
  assert.ok(!mount.readOnly, "the data volume is writable");
  const volume = (d.spec.template.spec.volumes as Obj[]).find((v) => v.name === mount.name);
  assert.equal(volume?.persistentVolumeClaim?.claimName, pvc.metadata.name);
  assert.ok(pvc.spec.accessModes.includes("ReadWriteOnce"));
  assert.ok(pvc.spec.resources.requests.storage);
  // The server listens on all interfaces, or the kubelet's probes and the Service miss it.
  assert.equal(flagValue(c.args, "--host"), "0.0.0.0");
  // The same defaults as the image's CMD.
  assert.deepEqual(c.args, (await dockerfile()).cmd);
});

Deno.test("deployment: the shutdown timeout ends inside the termination grace period", async () => {
  const d = await one("apps/v1/Deployment");
  const c = serverContainer(d);
  const timeout = Number((c.env as Obj[]).find((e) => e.name === "QLORAD_SHUTDOWN_TIMEOUT")?.value);
  const grace = d.spec.template.spec.terminationGracePeriodSeconds;
  assert.ok(timeout >= 60, `QLORAD_SHUTDOWN_TIMEOUT ${timeout}: a checkpoint needs time`);
  assert.ok(
    timeout + 15 <= grace,
    `shutdown ${timeout} s + exit margin must fit in grace ${grace} s`,
  );
});

Deno.test("deployment: non-root, read-only root filesystem, writable /tmp", async () => {
  const d = await one("apps/v1/Deployment");
  const pod = d.spec.template.spec.securityContext ?? {};
  const c = serverContainer(d);
  const sc = { ...pod, ...c.securityContext };
  assert.equal(sc.runAsNonRoot, true);
  assert.ok(Number.isInteger(sc.runAsUser) && sc.runAsUser > 0, `runAsUser ${sc.runAsUser}`);
  assert.equal(String(sc.runAsUser), (await dockerfile()).user.split(":")[0]);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.deepEqual(c.securityContext.capabilities?.drop, ["ALL"]);
  const tmp = (c.volumeMounts as Obj[]).find((m) => m.mountPath === "/tmp");
  assert.ok(tmp, "/tmp is mounted");
  const volume = (d.spec.template.spec.volumes as Obj[]).find((v) => v.name === tmp.name);
  assert.ok(volume?.emptyDir, "/tmp is an emptyDir");
});

// ------------------------------------------------------------------- configmap and service

Deno.test("configmap: referenced by the deployment, with OTel settings and a valid backend", async () => {
  const cm = await one("v1/ConfigMap");
  const c = serverContainer(await one("apps/v1/Deployment"));
  const refs = (c.envFrom as Obj[]).map((e) => e.configMapRef?.name).filter(Boolean);
  assert.deepEqual(refs, [cm.metadata.name]);
  for (const key of ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER"]) {
    assert.ok(cm.data[key], key);
  }
  assert.equal(cm.data.OTEL_SERVICE_NAME, "qlorad");
  new URL(cm.data.OTEL_EXPORTER_OTLP_ENDPOINT);
  // Every value is a string (a ConfigMap's data is map[string]string).
  for (const [k, v] of Object.entries(cm.data)) assert.equal(typeof v, "string", k);
  // The server's own parser accepts the backend.
  const before = Deno.env.get("QLORAD_GPU_BACKEND");
  try {
    Deno.env.set("QLORAD_GPU_BACKEND", cm.data.QLORAD_GPU_BACKEND);
    assert.equal(backendFromEnv(), "vulkan");
  } finally {
    if (before === undefined) Deno.env.delete("QLORAD_GPU_BACKEND");
    else Deno.env.set("QLORAD_GPU_BACKEND", before);
  }
});

Deno.test("service: selects the deployment's pods and routes gRPC to the container port", async () => {
  const svc = await one("v1/Service");
  const d = await one("apps/v1/Deployment");
  const podLabels: Obj = d.spec.template.metadata.labels;
  // The Deployment's own selector matches its pods.
  for (const [k, v] of Object.entries(d.spec.selector.matchLabels)) assert.equal(podLabels[k], v);
  const selector: Obj = svc.spec.selector;
  assert.ok(Object.keys(selector).length > 0, "the Service has a selector");
  for (const [k, v] of Object.entries(selector)) assert.equal(podLabels[k], v, `label ${k}`);
  assert.equal(svc.spec.type ?? "ClusterIP", "ClusterIP");
  const [port] = svc.spec.ports;
  assert.equal(svc.spec.ports.length, 1);
  assert.equal(port.name, "grpc");
  assert.equal(port.port, 50051);
  assert.equal(port.appProtocol, "grpc");
  const c = serverContainer(d);
  const target = (c.ports as Obj[]).find((p) =>
    p.name === port.targetPort || p.containerPort === port.targetPort
  );
  assert.ok(target, `targetPort ${port.targetPort} is a container port`);
});

// ------------------------------------------------------------------------- the fleet variant

/** kubectl kustomize's output for `dir`, parsed. */
async function kustomize(dir: string): Promise<Obj[]> {
  const out = await new Deno.Command("kubectl", {
    args: ["kustomize", dir],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return parseYaml(new TextDecoder().decode(out.stdout), `kubectl kustomize ${dir}`);
}

async function fleetKustomization(): Promise<Obj> {
  const [k] = parseYaml(
    await Deno.readTextFile(path.join(FLEET_DIR, "kustomization.yaml")),
    "fleet/kustomization.yaml",
  );
  return k;
}

/** The fleet's object of `kind` named `name`. */
async function fleetObject(kind: string, name: string): Promise<Obj> {
  const found = (await readManifests(FLEET_DIR)).filter((m) =>
    kindOf(m.obj) === kind && m.obj.metadata.name === name
  );
  assert.equal(found.length, 1, `one ${kind} ${name} in deploy/k8s/fleet`);
  return found[0].obj;
}

/** Whether every label of `selector` (matchLabels) is on `labels`. */
function selects(selector: Obj, labels: Obj): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/**
 * Where two objects differ, as paths. List entries with a `name` (containers, env, volumes,
 * mounts) are matched by name and shown as `[name]`, so an added entry is one path, not a shift
 * of every later index; other lists are compared whole.
 */
function differences(a: unknown, b: unknown, at = ""): string[] {
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  const named = (v: unknown) =>
    Array.isArray(v) && v.every((e) => typeof e?.name === "string")
      ? new Map(v.map((e) => [e.name as string, e]))
      : undefined;
  const [na, nb] = [named(a), named(b)];
  if (na && nb) {
    const keys = [...new Set([...na.keys(), ...nb.keys()])];
    return keys.flatMap((k) => differences(na.get(k), nb.get(k), `${at}[${k}]`));
  }
  const isMap = (v: unknown) => v !== null && typeof v === "object" && !Array.isArray(v);
  if (isMap(a) && isMap(b)) {
    const keys = [...new Set([...Object.keys(a as Obj), ...Object.keys(b as Obj)])];
    return keys.flatMap((k) => differences((a as Obj)[k], (b as Obj)[k], `${at}/${k}`));
  }
  return [at];
}

/** Env vars of a container whose value comes from a Secret. */
function secretEnv(c: Obj): string[] {
  return ((c.env ?? []) as Obj[]).filter((e) => e.valueFrom?.secretKeyRef).map((e) => e.name);
}

/** Flags that take a password on the command line (redis-server, redis-cli, generic). */
const PASSWORD_FLAG = /(^|\s)(--requirepass|--masterauth|--pass|--password|-a)(\s|=|$)/;

/**
 * Ways a container's command line could carry a secret: Kubernetes expands `$(VAR)` in
 * command/args before the process starts (so the value is in its argv, which `ps` shows); a
 * password flag; a URL with a password in it; and in a `sh -c` script, a secret variable used
 * anywhere but in a here-document's body (which reaches the program on stdin).
 */
function secretsOnCommandLine(c: Obj): string[] {
  const argv: string[] = [...(c.command ?? []), ...(c.args ?? [])].map(String);
  const secrets = secretEnv(c);
  const problems: string[] = [];
  for (const arg of argv) {
    for (const name of secrets) {
      if (arg.includes(`$(${name})`)) problems.push(`${c.name}: $(${name}) in its command line`);
    }
    if (PASSWORD_FLAG.test(arg)) {
      problems.push(`${c.name}: a password flag in ${JSON.stringify(arg)}`);
    }
    for (const url of arg.match(/\brediss?:\/\/\S+/g) ?? []) {
      if (new URL(url).password) problems.push(`${c.name}: a password in ${url}`);
    }
  }
  const script = argv[0] === "sh" || argv[0] === "bash" ? argv[argv.indexOf("-c") + 1] : undefined;
  if (script !== undefined) {
    let heredocEnd: string | undefined;
    for (const line of script.split("\n")) {
      if (heredocEnd !== undefined) {
        if (line.trim() === heredocEnd) heredocEnd = undefined;
        continue;
      }
      for (const name of secrets) {
        if (new RegExp(`\\$\\{?${name}\\b`).test(line)) {
          problems.push(`${c.name}: $${name} on a command line: ${line.trim()}`);
        }
      }
      heredocEnd = line.match(/<<-?\s*['"]?(\w+)['"]?/)?.[1];
    }
  }
  return problems;
}

/** Every container and init container of every workload in `objs`. */
function containersOf(objs: Obj[]): Obj[] {
  return objs.filter((o) => o.spec?.template?.spec).flatMap((o) => [
    ...(o.spec.template.spec.initContainers ?? []),
    ...o.spec.template.spec.containers,
  ]);
}

/** redis.conf's directives (the last of a repeated one wins, as in Redis). */
function redisConf(text: string): Map<string, string> {
  const conf = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = line.trim().match(/^([a-z-]+)\s+(.*)$/);
    if (m && !line.trim().startsWith("#")) conf.set(m[1], m[2].trim());
  }
  return conf;
}

Deno.test("fleet: every manifest validates, and kustomization.yaml lists exactly them", async () => {
  const manifests = await readManifests(FLEET_DIR);
  const problems = manifests.flatMap((m) =>
    schemaProblems(m.obj).map((p) => `fleet/${m.file} ${m.obj.kind}/${m.obj.metadata?.name}: ${p}`)
  );
  assert.deepEqual(problems, []);
  const k = await fleetKustomization();
  assert.equal(k.kind, "Kustomization");
  assert.deepEqual([...k.resources].sort(), await manifestFiles(FLEET_DIR));
  // The same namespace and image as the single-node variant.
  const [base] = parseYaml(
    await Deno.readTextFile(path.join(K8S_DIR, "kustomization.yaml")),
    "kustomization.yaml",
  );
  assert.equal(k.namespace, base.namespace);
  assert.deepEqual(k.images, base.images);
  // No Secret is kept in the repository: the store's password is created in the cluster.
  assert.deepEqual(manifests.filter((m) => m.obj.kind === "Secret").map((m) => m.file), []);
});

Deno.test("fleet: its copies of the base agree, and its Deployment differs only where marked", async () => {
  for (const kind of ["v1/Namespace", "v1/ConfigMap", "v1/Service"]) {
    const base = await one(kind);
    const copy = await fleetObject(kind, base.metadata.name);
    assert.deepEqual(copy, base, `fleet ${kind} ${base.metadata.name} equals the base's`);
  }
  const base = await one("apps/v1/Deployment");
  const fleet = await one("apps/v1/Deployment", FLEET_DIR);
  const c = "/spec/template/spec/containers[qlorad]";
  assert.deepEqual(
    differences(base, fleet).sort(),
    [
      "/spec/replicas",
      "/spec/strategy/rollingUpdate",
      "/spec/strategy/type",
      `${c}/env[QLORAD_REPLICA_ID]`,
      `${c}/env[QLORAD_STORE_PASSWORD_FILE]`,
      `${c}/env[QLORAD_STORE_URL]`,
      `${c}/livenessProbe/grpc`,
      `${c}/livenessProbe/tcpSocket`,
      `${c}/volumeMounts[store-password]`,
      "/spec/template/spec/volumes[store-password]",
    ].sort(),
  );
  // The comparison sees a change anywhere else.
  const drifted = structuredClone(fleet);
  serverContainer(drifted).resources.limits.memory = "32Gi";
  assert.ok(differences(base, drifted).includes(`${c}/resources/limits/memory`));
});

Deno.test("fleet: N replicas share one ReadWriteMany claim at the same path, one GPU each", async () => {
  const d = await one("apps/v1/Deployment", FLEET_DIR);
  assert.ok(
    Number.isInteger(d.spec.replicas) && d.spec.replicas > 1,
    `replicas ${d.spec.replicas}`,
  );
  // Every replica is the same pod template: one claim, mounted at --data-dir in each.
  const c = serverContainer(d);
  const dataDir = flagValue(c.args, "--data-dir");
  const mount = (c.volumeMounts as Obj[]).find((m) => m.mountPath === dataDir);
  assert.ok(mount && !mount.readOnly, `a writable volume at ${dataDir}`);
  const volume = (d.spec.template.spec.volumes as Obj[]).find((v) => v.name === mount.name);
  const claim = await fleetObject(
    "v1/PersistentVolumeClaim",
    volume?.persistentVolumeClaim?.claimName,
  );
  assert.deepEqual(claim.spec.accessModes, ["ReadWriteMany"]);
  // Not a per-pod claim template, which would give each replica a volume of its own.
  assert.equal(d.kind, "Deployment");
  // One GPU per replica, asked for by the qlorad container alone.
  assert.equal(String(c.resources.limits["nvidia.com/gpu"]), "1");
  const requested = c.resources.requests?.["nvidia.com/gpu"];
  if (requested !== undefined) assert.equal(String(requested), "1");
  const others = (d.spec.template.spec.containers as Obj[]).filter((o) => o !== c);
  for (const o of others) assert.equal(o.resources?.limits?.["nvidia.com/gpu"], undefined, o.name);
  // Updates never need a spare GPU, and take down one pod at a time.
  assert.equal(d.spec.strategy.type, "RollingUpdate");
  assert.equal(String(d.spec.strategy.rollingUpdate.maxSurge), "0");
  assert.equal(String(d.spec.strategy.rollingUpdate.maxUnavailable), "1");
});

Deno.test("fleet: the grace period covers the shutdown timeout; readiness follows the store", async () => {
  const d = await one("apps/v1/Deployment", FLEET_DIR);
  const c = serverContainer(d);
  const timeout = Number((c.env as Obj[]).find((e) => e.name === "QLORAD_SHUTDOWN_TIMEOUT")?.value);
  const grace = d.spec.template.spec.terminationGracePeriodSeconds;
  assert.ok(timeout >= 60, `QLORAD_SHUTDOWN_TIMEOUT ${timeout}`);
  assert.ok(timeout + 15 <= grace, `shutdown ${timeout} s + exit margin within grace ${grace} s`);
  // Readiness asks the API (NOT_SERVING while the store is unreachable); liveness must not, or
  // a Redis outage would restart every replica: it checks the gRPC port accepts connections.
  const port = (c.ports as Obj[]).find((p) => p.name === "grpc")?.containerPort;
  assert.deepEqual(c.readinessProbe.grpc, { port, service: SERVICE_NAME });
  assert.equal(c.livenessProbe.grpc, undefined);
  assert.ok([port, "grpc"].includes(c.livenessProbe.tcpSocket?.port), "liveness on the gRPC port");
});

Deno.test("fleet: the store's address and password come from the environment and a Secret", async () => {
  const d = await one("apps/v1/Deployment", FLEET_DIR);
  const c = serverContainer(d);
  const env = new Map((c.env as Obj[]).map((e) => [e.name, e]));
  // No --store flag: the address is QLORAD_STORE_URL, without a password.
  assert.ok(!c.args.some((a: string) => a.startsWith("--store")), "no --store flag");
  const url = new URL(env.get("QLORAD_STORE_URL")?.value);
  assert.ok(["redis:", "rediss:"].includes(url.protocol), url.protocol);
  assert.equal(url.password, "");
  // It names redis.yaml's Service and port.
  const svc = await fleetObject("v1/Service", url.hostname);
  assert.equal(svc.spec.clusterIP, "None", "a headless Service");
  assert.ok((svc.spec.ports as Obj[]).some((p) => String(p.port) === url.port));
  // The password is a file from the Secret, mounted read-only where the variable says.
  const file = env.get("QLORAD_STORE_PASSWORD_FILE")?.value;
  assert.ok(file, "QLORAD_STORE_PASSWORD_FILE is set");
  const mount = (c.volumeMounts as Obj[]).find((m) => m.mountPath === path.posix.dirname(file));
  assert.equal(mount?.readOnly, true);
  const volume = (d.spec.template.spec.volumes as Obj[]).find((v) => v.name === mount.name);
  assert.ok(volume?.secret, `the volume at ${mount.mountPath} is a Secret`);
  const item = (volume.secret.items as Obj[]).find((i) => i.path === path.posix.basename(file));
  assert.ok(item, `the Secret's key lands at ${file}`);
  // Redis reads its password from the same Secret and key.
  const redis = await fleetObject("apps/v1/StatefulSet", "redis");
  const refs = containersOf([redis]).flatMap((rc) =>
    ((rc.env ?? []) as Obj[]).map((e) => e.valueFrom?.secretKeyRef).filter(Boolean)
  );
  assert.ok(refs.length > 0, "Redis takes its password from a Secret");
  for (const ref of refs) {
    assert.deepEqual(ref, { name: volume.secret.secretName, key: item.key });
  }
});

Deno.test("fleet: every replica runs in fleet mode, its replica id its pod's name", async () => {
  const d = await one("apps/v1/Deployment", FLEET_DIR);
  const c = serverContainer(d);
  const env = new Map((c.env as Obj[]).map((e) => [e.name, e]));
  // The downward API gives each pod its own name, unique in the namespace: the owner its leases
  // and ListJobs name. A fixed value would make every replica the same owner (the second refused
  // by its data-directory lock on a volume whose locks all clients see).
  assert.deepEqual(env.get("QLORAD_REPLICA_ID"), {
    name: "QLORAD_REPLICA_ID",
    valueFrom: { fieldRef: { fieldPath: "metadata.name" } },
  });
  assert.ok(!c.args.some((a: string) => a.startsWith("--replica-id")), "no --replica-id flag");
  // `qlorad serve` refuses a replica id without a store (src/cli/serve.ts): the store is there.
  assert.ok(env.get("QLORAD_STORE_URL")?.value, "QLORAD_STORE_URL is set");
  // The single-node Deployment stays a single server (no fleet mode).
  const base = serverContainer(await one("apps/v1/Deployment"));
  assert.ok(!((base.env ?? []) as Obj[]).some((e) => e.name === "QLORAD_REPLICA_ID"));
});

Deno.test("fleet: no secret value reaches a command line", async () => {
  const objs = (await readManifests(FLEET_DIR)).map((m) => m.obj);
  const containers = containersOf(objs);
  assert.ok(containers.length >= 2);
  assert.deepEqual(containers.flatMap(secretsOnCommandLine), []);
  // No environment value holds a password written out, in a URL or otherwise.
  for (const c of containers) {
    for (const e of (c.env ?? []) as Obj[]) {
      assert.doesNotMatch(String(e.value ?? ""), /:\/\/[^/@\s]*:[^/@\s]+@/, `${c.name} ${e.name}`);
    }
  }
  // The check finds each way a secret could get there.
  const redis = containersOf(objs.filter((o) => o.kind === "StatefulSet"))[0];
  const variants: [string, (c: Obj) => void][] = [
    ["$(REDIS_PASSWORD)", (c) => (c.args = ["--requirepass", "$(REDIS_PASSWORD)"])],
    ["password flag", (c) => (c.command = ["redis-server", "--requirepass", "x"])],
    ["on a command line", (c) => (c.command[2] = "exec redis-server --port 1 $REDIS_PASSWORD")],
    ["password in", (c) => (c.command = ["redis-cli", "-u", "redis://:hunter2@redis:6379"])],
  ];
  for (const [expected, mutate] of variants) {
    const bad = structuredClone(redis);
    mutate(bad);
    assert.match(
      secretsOnCommandLine(bad).join("\n"),
      new RegExp(expected.replace(/[$()]/g, "\\$&")),
    );
  }
});

Deno.test("fleet: Redis keeps an append-only file on its own volume, and is found by name", async () => {
  const redis = await fleetObject("apps/v1/StatefulSet", "redis");
  assert.equal(redis.spec.replicas, 1, "one Redis: the store takes one address");
  const [c] = redis.spec.template.spec.containers as Obj[];
  // The configuration file redis-server is started with comes from the ConfigMap.
  const script = [...(c.command ?? []), ...(c.args ?? [])].join(" ");
  const confPath = script.match(/redis-server\s+(\S+\.conf)/)?.[1];
  assert.ok(confPath, "redis-server is started with a configuration file");
  const mount = (c.volumeMounts as Obj[]).find((m) => m.mountPath === path.posix.dirname(confPath));
  const volume = (redis.spec.template.spec.volumes as Obj[]).find((v) => v.name === mount?.name);
  const cm = await fleetObject("v1/ConfigMap", volume?.configMap?.name);
  const conf = redisConf(cm.data[path.posix.basename(confPath)]);
  // AOF on; "always" is what the store's durability assumes (docs/DEPLOY.md), "everysec" at
  // worst; nothing on the command line turns it back off.
  assert.equal(conf.get("appendonly"), "yes");
  assert.ok(["always", "everysec"].includes(conf.get("appendfsync") ?? ""), "appendfsync");
  assert.doesNotMatch(script, /--append(only|fsync)/);
  assert.equal(conf.get("maxmemory-policy"), "noeviction", "jobs are never evicted");
  // The AOF's directory is a persistent volume of the StatefulSet's own.
  const dataMount = (c.volumeMounts as Obj[]).find((m) => m.mountPath === conf.get("dir"));
  assert.ok(dataMount, `a volume at Redis's dir ${conf.get("dir")}`);
  const template = (redis.spec.volumeClaimTemplates as Obj[])
    .find((t) => t.metadata.name === dataMount.name);
  assert.ok(template?.spec.resources.requests.storage, "the AOF lives on a claim");
  // The parser sees a directive turned off (and the last of a repeated one wins).
  assert.equal(
    redisConf("appendonly yes\n# appendonly no\nappendonly no\n").get("appendonly"),
    "no",
  );
  // The headless Service that the store URL names selects this pod on its Redis port.
  const svc = await fleetObject("v1/Service", redis.spec.serviceName);
  assert.equal(svc.spec.clusterIP, "None");
  assert.ok(selects(svc.spec.selector, redis.spec.template.metadata.labels));
  const port = (c.ports as Obj[]).find((p) => p.name === svc.spec.ports[0].targetPort);
  assert.equal(port?.containerPort, 6379);
  assert.ok(c.readinessProbe, "Redis has a readiness probe");
  // Redis runs as the same kind of locked-down pod as qlorad.
  assert.equal(redis.spec.template.spec.securityContext.runAsNonRoot, true);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.match(c.image, /^redis:7\.\d+\.\d+/, "a pinned Redis 7");
});

Deno.test("fleet: the PodDisruptionBudget covers the qlorad pods, one at a time", async () => {
  const pdb = await one("policy/v1/PodDisruptionBudget", FLEET_DIR);
  const d = await one("apps/v1/Deployment", FLEET_DIR);
  const redis = await fleetObject("apps/v1/StatefulSet", "redis");
  assert.equal(String(pdb.spec.maxUnavailable), "1");
  assert.equal(pdb.spec.minAvailable, undefined);
  const selector = pdb.spec.selector.matchLabels;
  assert.ok(Object.keys(selector).length > 0);
  assert.ok(selects(selector, d.spec.template.metadata.labels), "selects the qlorad pods");
  assert.ok(!selects(selector, redis.spec.template.metadata.labels), "not the Redis pod");
  // The qlorad Service does not route to Redis either.
  const svc = await fleetObject("v1/Service", "qlorad");
  assert.ok(!selects(svc.spec.selector, redis.spec.template.metadata.labels));
  assert.ok(selects(svc.spec.selector, d.spec.template.metadata.labels));
});

Deno.test("fleet: only the qlorad pods may connect to Redis", async () => {
  const policy = await one("networking.k8s.io/v1/NetworkPolicy", FLEET_DIR);
  const redis = await fleetObject("apps/v1/StatefulSet", "redis");
  const d = await one("apps/v1/Deployment", FLEET_DIR);
  assert.ok(selects(policy.spec.podSelector.matchLabels, redis.spec.template.metadata.labels));
  assert.ok(!selects(policy.spec.podSelector.matchLabels, d.spec.template.metadata.labels));
  assert.deepEqual(policy.spec.policyTypes, ["Ingress"]);
  const [rule] = policy.spec.ingress as Obj[];
  assert.equal(policy.spec.ingress.length, 1);
  assert.equal(rule.from.length, 1);
  const from = rule.from[0];
  assert.deepEqual(Object.keys(from), ["podSelector"], "pods of this namespace only");
  assert.ok(selects(from.podSelector.matchLabels, d.spec.template.metadata.labels));
  assert.ok(!selects(from.podSelector.matchLabels, redis.spec.template.metadata.labels));
  const [c] = redis.spec.template.spec.containers as Obj[];
  const redisPort = (c.ports as Obj[]).find((p) => p.name === "redis")?.containerPort;
  assert.deepEqual(rule.ports, [{ protocol: "TCP", port: redisPort }]);
});

Deno.test({
  name: "kubectl kustomize renders deploy/k8s/fleet into valid objects in the namespace",
  ignore: !(await kubectlAvailable()),
  async fn() {
    const objs = await kustomize(FLEET_DIR);
    assert.deepEqual(
      objs.map((o) => `${kindOf(o)}/${o.metadata.name}`).sort(),
      (await readManifests(FLEET_DIR)).map((m) => `${kindOf(m.obj)}/${m.obj.metadata.name}`).sort(),
    );
    for (const o of objs) {
      assert.deepEqual(schemaProblems(o), [], `${o.kind}/${o.metadata.name}`);
      if (o.kind !== "Namespace") assert.equal(o.metadata.namespace, "qlorad", o.kind);
    }
    const deployment = objs.find((o) => o.kind === "Deployment")!;
    assert.equal(serverContainer(deployment).image, "registry.example.com/qlorad:0.1.0");
    assert.deepEqual(containersOf(objs).flatMap(secretsOnCommandLine), []);
  },
});

async function commandAvailable(name: string): Promise<boolean> {
  try {
    const out = await new Deno.Command(name, {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "fleet: redis.yaml's own command starts Redis with AOF on and the password kept off argv",
  ignore: !(await commandAvailable("redis-server")) || !(await commandAvailable("redis-cli")),
  async fn() {
    const redis = await fleetObject("apps/v1/StatefulSet", "redis");
    const [c] = redis.spec.template.spec.containers as Obj[];
    const [shell, dashC, script] = c.command as string[];
    const conf = (await fleetObject("v1/ConfigMap", "redis-config")).data["redis.conf"] as string;
    // The manifest's script and configuration, with the paths and port of this machine.
    const dir = await Deno.makeTempDir({ prefix: "qlorad-redis-manifest-" });
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const confFile = path.join(dir, "redis.conf");
    await Deno.writeTextFile(
      confFile,
      conf.replace(/^port .*$/m, `port ${port}`).replace(/^bind .*$/m, "bind 127.0.0.1")
        .replace(/^dir .*$/m, `dir ${dir}`),
    );
    const localScript = script.replaceAll("/etc/redis/redis.conf", confFile);
    assert.notEqual(localScript, script, "the script names the mounted redis.conf");
    // A password of letters and digits, as docs/DEPLOY.md asks.
    const password = Array.from(
      crypto.getRandomValues(new Uint8Array(16)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const env = { REDIS_PASSWORD: password, PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" };
    const server = new Deno.Command(shell, {
      args: [dashC, localScript],
      env,
      clearEnv: true,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const cli = async (args: string[], auth?: string) => {
      const out = await new Deno.Command("redis-cli", {
        args: ["-p", String(port), ...args],
        env: auth === undefined ? {} : { REDISCLI_AUTH: auth },
        stdout: "piped",
        stderr: "piped",
      }).output();
      return new TextDecoder().decode(out.stdout).trim();
    };
    try {
      let pong = "";
      for (let i = 0; i < 100 && pong !== "PONG"; i++) {
        await new Promise((r) => setTimeout(r, 100));
        pong = await cli(["ping"], password);
      }
      assert.equal(pong, "PONG", "Redis answers with the Secret's password");
      assert.match(await cli(["ping"]), /NOAUTH/, "and refuses without it");
      assert.notEqual(await cli(["ping"], "wrong"), "PONG", "or with a wrong one");
      assert.equal(await cli(["config", "get", "appendonly"], password), "appendonly\nyes");
      assert.equal(await cli(["config", "get", "appendfsync"], password), "appendfsync\nalways");
      assert.equal(
        await cli(["config", "get", "maxmemory-policy"], password),
        "maxmemory-policy\nnoeviction",
      );
      // `exec` made redis-server the process Kubernetes started (it gets the SIGTERM), and its
      // command line, what `ps` shows, holds no password. (Redis retitles itself once running,
      // so this alone would not see a password flag: the static check above is the guard.)
      const cmdline = await Deno.readTextFile(`/proc/${server.pid}/cmdline`);
      assert.match(cmdline, /^redis-server/);
      assert.ok(!cmdline.includes(password), "the password is not on redis-server's command line");
      // The readiness probe's command, with redis-cli's password from the environment.
      const readiness = (c.readinessProbe.exec.command as string[]).map((a) =>
        a.replace("-p 6379", `-p ${port}`)
      );
      const ready = (auth: string) =>
        new Deno.Command(readiness[0], {
          args: readiness.slice(1),
          env: { REDISCLI_AUTH: auth },
          stdout: "null",
          stderr: "null",
        }).output().then((o) => o.success);
      assert.equal(await ready(password), true, "ready with the password");
      assert.equal(await ready("wrong"), false, "not ready with a wrong one");
      // The append-only file is being written in the configured dir.
      const names: string[] = [];
      for await (const e of Deno.readDir(dir)) names.push(e.name);
      assert.ok(names.some((n) => n.startsWith("appendonly")), `AOF in ${names.join(", ")}`);
    } finally {
      server.kill("SIGTERM");
      const status = await server.status;
      await server.stderr.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true });
      // SIGTERM is a clean shutdown for Redis (exit 0).
      assert.equal(status.code, 0, "redis-server exits cleanly on SIGTERM");
    }
  },
});

// ------------------------------------------------------------------------------ Dockerfile

interface Instruction {
  keyword: string;
  args: string;
}

interface DockerfileFacts {
  instructions: Instruction[];
  /** FROM references with ARG defaults substituted, in order. */
  bases: string[];
  /** ARG defaults declared before the first FROM. */
  globalArgs: Record<string, string>;
  /** The final stage's last USER. */
  user: string;
  /** The final stage's ENV. */
  env: Record<string, string>;
  entrypoint: string[];
  cmd: string[];
  /** HEALTHCHECK's command (exec form). */
  healthcheck: string[];
  expose: string[];
  /** Paths the final stage copies from the build stage, and the build stage's COPY sources. */
  copied: string[];
  /** The text of every RUN, continuation lines joined. */
  runs: string[];
  /** Each stage's instructions, its FROM first. */
  stages: Instruction[][];
}

/** Instructions with `\` continuations joined and comment lines dropped, as Docker reads them. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let current = "";
  for (const line of text.split("\n")) {
    if (/^\s*#/.test(line) && current === "") continue; // comment (or parser directive)
    if (/^\s*#/.test(line)) continue; // comment inside a continued instruction
    if (line.trim() === "" && current === "") continue;
    if (/\\\s*$/.test(line)) {
      current += line.replace(/\\\s*$/, " ");
      continue;
    }
    current += line;
    const m = current.trim().match(/^(\w+)\s+([\s\S]*)$/);
    if (m) out.push({ keyword: m[1].toUpperCase(), args: m[2].trim() });
    current = "";
  }
  return out;
}

function substitute(text: string, vars: Record<string, string>): string {
  return text.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => vars[a ?? b] ?? `\${${a ?? b}}`);
}

async function dockerfile(): Promise<DockerfileFacts> {
  const list = instructions(await Deno.readTextFile(path.join(ROOT, "Dockerfile")));
  const globalArgs: Record<string, string> = {};
  const bases: string[] = [];
  let finalStage: Instruction[] = [];
  const stages: Instruction[][] = [];
  for (const ins of list) {
    if (ins.keyword === "ARG" && bases.length === 0) {
      const [name, value] = ins.args.split("=", 2);
      if (value !== undefined) globalArgs[name] = value;
    }
    if (ins.keyword === "FROM") {
      bases.push(substitute(ins.args.split(/\s+/)[0], globalArgs));
      finalStage = [];
      stages.push(finalStage);
    }
    finalStage.push(ins);
  }
  const env: Record<string, string> = {};
  for (const ins of finalStage.filter((i) => i.keyword === "ENV")) {
    for (const pair of ins.args.split(/\s+/)) {
      const [k, v] = pair.split("=", 2);
      env[k] = v;
    }
  }
  const exec = (keyword: string, stage = finalStage): string[] => {
    const ins = stage.filter((i) => i.keyword === keyword).at(-1);
    assert.ok(ins, `the final stage has ${keyword}`);
    const json = keyword === "HEALTHCHECK"
      ? ins.args.match(/\bCMD\s+(\[[\s\S]*\])$/)?.[1]
      : ins.args;
    assert.ok(json !== undefined && json.startsWith("["), `${keyword} uses the exec (JSON) form`);
    return JSON.parse(json);
  };
  return {
    instructions: list,
    bases,
    globalArgs,
    user: finalStage.filter((i) => i.keyword === "USER").at(-1)?.args ?? "root",
    env,
    entrypoint: exec("ENTRYPOINT"),
    cmd: exec("CMD"),
    healthcheck: exec("HEALTHCHECK"),
    expose: finalStage.filter((i) => i.keyword === "EXPOSE").flatMap((i) => i.args.split(/\s+/)),
    copied: list.filter((i) => i.keyword === "COPY").flatMap((i) =>
      i.args.split(/\s+/).filter((a) => !a.startsWith("--")).slice(0, -1)
    ),
    runs: list.filter((i) => i.keyword === "RUN").map((i) => i.args),
    stages,
  };
}

/** DENO_VERSION and the apt packages scripts/qlorad.sh installs. */
async function bootstrap(): Promise<{ denoVersion: string; aptPackages: string[] }> {
  const text = (await Deno.readTextFile(path.join(ROOT, "scripts/qlorad.sh")))
    .replace(/\\\n/g, " ");
  const denoVersion = text.match(/^DENO_VERSION=(\S+)$/m)?.[1];
  assert.ok(denoVersion, "scripts/qlorad.sh sets DENO_VERSION");
  const apt = text.match(/apt-get install[^\n]*--no-install-recommends\s+([a-z0-9.+\- ]+)/)?.[1];
  assert.ok(apt, "scripts/qlorad.sh installs Mesa with apt-get");
  return { denoVersion, aptPackages: apt.trim().split(/\s+/) };
}

Deno.test("Dockerfile: every base image is pinned to a version or a digest", async () => {
  const { bases } = await dockerfile();
  assert.ok(bases.length >= 2, "a multi-stage build");
  for (const ref of bases) {
    assert.doesNotMatch(ref, /\$\{?\w/, `${ref}: unresolved ARG`);
    const digest = /@sha256:[0-9a-f]{64}$/.test(ref);
    const tag = ref.replace(/@.*$/, "").match(/:([^/:]+)$/)?.[1];
    assert.ok(
      digest || (tag !== undefined && tag !== "latest" && /\d+\.\d+/.test(tag)),
      `${ref}: pin a version tag (e.g. 12.11-slim) or a digest`,
    );
  }
});

Deno.test("Dockerfile: installs the Deno version that scripts/qlorad.sh installs", async () => {
  const df = await dockerfile();
  const { denoVersion } = await bootstrap();
  assert.equal(df.globalArgs.DENO_VERSION, denoVersion);
  const install = df.runs.find((r) => /npm install/.test(r) && /deno@/.test(r));
  assert.ok(install, "deno comes from the npm package");
  assert.match(install, /"?deno@\$\{DENO_VERSION\}"?/);
  assert.match(install, /deno --version/, "the build checks the installed version");
  // Dependencies are vendored from the lock, not resolved afresh.
  assert.ok(df.runs.some((r) => /deno install --frozen/.test(r)));
});

Deno.test("Dockerfile: runs as a non-root user and can reach the GPU or Mesa", async () => {
  const df = await dockerfile();
  const [uid, gid] = df.user.split(":");
  assert.match(uid, /^\d+$/, "a numeric USER, which runAsNonRoot can verify");
  assert.notEqual(Number(uid), 0);
  if (gid !== undefined) assert.notEqual(Number(gid), 0);
  const caps = df.env.NVIDIA_DRIVER_CAPABILITIES?.split(",") ?? [];
  for (const cap of ["compute", "graphics"]) assert.ok(caps.includes(cap), cap);
  assert.equal(df.env.NVIDIA_VISIBLE_DEVICES, "all");
  assert.equal(df.env.EGL_PLATFORM, "surfaceless");
  assert.ok(df.env.XDG_RUNTIME_DIR);
  const runtimeRuns = df.stages.at(-1)!.filter((i) => i.keyword === "RUN").map((i) => i.args);
  const apt = runtimeRuns.find((r) => /apt-get install/.test(r)) ?? "";
  const installed = new Set(apt.split(/\s+/));
  for (const pkg of ["libvulkan1", "ca-certificates", ...(await bootstrap()).aptPackages]) {
    // libegl-dev only brings the unversioned libEGL.so Dawn opens: the image links it instead.
    if (pkg === "libegl-dev") {
      assert.ok(
        runtimeRuns.some((r) => /ln -s[^&]*libEGL\.so\.1/.test(r)),
        "the runtime image links libEGL.so to libEGL.so.1 in place of libegl-dev",
      );
      continue;
    }
    assert.ok(installed.has(pkg), `the runtime image installs ${pkg}`);
  }
});

Deno.test("Dockerfile: serves gRPC on the exposed port with the data dir, health-checked", async () => {
  const df = await dockerfile();
  assert.deepEqual(df.entrypoint.slice(0, 2), ["deno", "run"]);
  assert.equal(df.entrypoint.at(-1), "src/cli/main.ts");
  assert.ok(df.entrypoint.includes("--v8-flags=--expose-gc"));
  assert.equal(df.cmd[0], "serve");
  const port = flagValue(df.cmd, "--port");
  assert.deepEqual(df.expose, [port]);
  assert.equal(df.env.QLORAD_PORT, port, "the health probe asks the port the server uses");
  assert.equal(flagValue(df.cmd, "--host"), "0.0.0.0");
  assert.equal(flagValue(df.cmd, "--data-dir"), "/data");
  assert.ok(df.healthcheck.includes("scripts/health_probe.ts"));
  await Deno.stat(path.join(ROOT, "scripts/health_probe.ts"));
  // The build context brings everything the entry points read at run time.
  for (const p of ["deno.json", "deno.lock", "src", "shaders", "proto", "scripts"]) {
    assert.ok(
      df.copied.some((c) => c === p || c === `${p}/` || c.split(/\s+/).includes(p)),
      `COPY ${p}`,
    );
  }
});

Deno.test(".dockerignore keeps local installs, data and git out of the build context", async () => {
  const lines = (await Deno.readTextFile(path.join(ROOT, ".dockerignore")))
    .split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  for (const p of ["node_modules", ".tools", "data", ".git"]) {
    assert.ok(lines.includes(p) || lines.includes(`${p}/`), p);
  }
});

Deno.test("Dockerfile: every stage starts from one Debian base; Node and npm come from Debian", async () => {
  const df = await dockerfile();
  // One ARG names the base, so scripts/test_image.sh can build on a base of its own making.
  assert.match(
    df.globalArgs.BASE_IMAGE ?? "",
    /^debian:12\.\d+-slim$/,
    "ARG BASE_IMAGE=debian:12.N-slim",
  );
  for (const stage of df.stages) {
    assert.equal(stage[0].args.split(/\s+/)[0], "${BASE_IMAGE}", `FROM ${stage[0].args}`);
  }
  const build = df.stages[0];
  const apt = build.filter((i) => i.keyword === "RUN").find((i) => /apt-get install/.test(i.args));
  assert.ok(apt, "the build stage installs from apt");
  const packages = new Set(apt.args.split(/\s+/));
  for (const pkg of ["nodejs", "npm"]) {
    assert.ok(packages.has(pkg), `the build stage installs ${pkg}`);
  }
  // The CA arguments for a TLS-intercepting proxy have no default and stay in the build stage.
  const args = (stage: Instruction[]) =>
    stage.filter((i) => i.keyword === "ARG").map((i) => i.args);
  for (const name of ["NODE_EXTRA_CA_CERTS", "DENO_CERT"]) {
    assert.ok(args(build).includes(name), `ARG ${name} (no default) in the build stage`);
    assert.ok(!args(df.stages.at(-1)!).some((a) => a.split("=")[0] === name), name);
    assert.equal(df.env[name], undefined, `the runtime image sets no ${name}`);
  }
});

Deno.test("scripts/test_image.sh builds this Dockerfile on its own base and checks its USER", async () => {
  const df = await dockerfile();
  const script = await Deno.readTextFile(path.join(ROOT, "scripts/test_image.sh"));
  assert.match(script, /--build-arg BASE_IMAGE="\$base"/);
  assert.match(script, /-f Dockerfile/);
  const uid = script.match(/^app_uid=(\d+)$/m)?.[1];
  assert.equal(uid, df.user.split(":")[0], "the uid the script expects is the image's USER");
});
