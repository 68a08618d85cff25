import assert from "node:assert/strict";
import { readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { validateConfig } from "@postroom/config";
import { deploymentUsers, names } from "@postroom/contracts";
import { DATABASE_SERVICES, groupRole } from "@postroom/db";
import { metricOfSeries } from "@postroom/telemetry";
import { Ajv } from "ajv";
import { parse } from "yaml";
import { CHART, GRAFANA, helm, type K8sObject, mergeValues, metricNamesIn, renderChart, schemaErrors, schemaHas, templates, valueReferences } from "../support/chart.js";

const schema = JSON.parse(readFileSync(join(CHART, "values.schema.json"), "utf8"));
const defaults = parse(readFileSync(join(CHART, "values.yaml"), "utf8"));
/** The parts of a values file these tests read. */
interface Values {
  config: unknown;
  tenants: { id: string; poller?: { replicas?: number } }[];
}
const example = mergeValues(defaults, parse(readFileSync(join(CHART, "examples", "multi-tenant.yaml"), "utf8"))) as Values;
const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);

function errorsOf(values: unknown): string[] {
  return validate(values) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
}

test("the chart's values.yaml and the multi-tenant example validate against values.schema.json", () => {
  assert.deepEqual(errorsOf(defaults), []);
  assert.deepEqual(errorsOf(example), []);
  assert.equal(example.tenants.length, 3, "the example really has several tenants");
});

test("the schema rejects a mistyped, misspelled or out-of-range value with the path to fix", () => {
  const wrongType = mergeValues(defaults, { tenants: [{ id: "acme", poller: { replicas: "three" } }] });
  assert.ok(errorsOf(wrongType).some((e) => e.startsWith("/tenants/0/poller/replicas")), errorsOf(wrongType).join("\n"));
  const misspelled = mergeValues(defaults, { tenantDefaults: { poller: { replica: 2 } } });
  assert.ok(errorsOf(misspelled).some((e) => e.includes("/tenantDefaults/poller") && e.includes("additional properties")), errorsOf(misspelled).join("\n"));
  const badTenant = mergeValues(defaults, { tenants: [{ id: "Acme Corp" }] });
  assert.ok(errorsOf(badTenant).some((e) => e.startsWith("/tenants/0/id")));
  const badPort = mergeValues(defaults, { ops: { port: 70000 } });
  assert.ok(errorsOf(badPort).some((e) => e.startsWith("/ops/port")));
});

test("the Postroom configuration inside each values file is valid and names every chart tenant", () => {
  for (const [label, values] of [["values.yaml", defaults as Values], ["multi-tenant example", example]] as const) {
    const { config, errors } = validateConfig(JSON.stringify(values.config));
    assert.ok(config, `${label}: ${errors.map((e) => e.message).join("; ")}`);
    const configured = new Set(config.tenants.map((t) => t.id));
    for (const t of values.tenants) assert.ok(configured.has(t.id), `${label}: tenant ${t.id} is in config.tenants`);
  }
});

test("every value a template reads exists in values.schema.json", () => {
  const refs = templates().flatMap(({ file, text }) => valueReferences(file, text));
  assert.ok(refs.length > 80, `the checker found ${refs.length} references: too few means it stopped parsing`);
  const unknown = refs.filter((r) => !schemaHas(schema, r.path)).map((r) => `${r.file}: ${r.path}`);
  assert.deepEqual(unknown, []);
  // The checker itself catches an unknown value, through a range variable too.
  const probe = valueReferences("probe.yaml", '{{ range $tenant := $.Values.tenants }}{{ $t := default (dict) $tenant.poller }}{{ $t.replcas }}{{ $.Values.nope }}{{ end }}');
  assert.deepEqual(probe.filter((r) => !schemaHas(schema, r.path)).map((r) => r.path), ["tenants[].poller.replcas", "nope"]);
  // And every top-level value is read by some template (no dead settings).
  const read = new Set(refs.map((r) => r.path.split(/[.[]/)[0]));
  const unused = Object.keys(defaults).filter((k) => !read.has(k));
  assert.deepEqual(unused, []);
});

test("each tenant gets its own imap-poller Deployment restricted to it, with the tenant's replicas (3 pollers for acme in the example)", () => {
  const poller = templates().find((t) => t.file === "tenant-imap-poller.yaml")!;
  const refs = valueReferences(poller.file, poller.text).map((r) => r.path);
  assert.match(poller.text, /\{\{- range \$tenant := \$\.Values\.tenants \}\}/, "one Deployment per tenant");
  assert.match(poller.text, /- name: POSTROOM_TENANTS\n\s+value: \{\{ \$tenant\.id \| quote \}\}/, "restricted to that tenant");
  assert.match(poller.text, /replicas: \{\{ if hasKey \$t "replicas" \}\}\{\{ \$t\.replicas \}\}\{\{ else \}\}\{\{ \$d\.replicas \}\}\{\{ end \}\}/);
  assert.ok(refs.includes("tenants[].poller.replicas") && refs.includes("tenantDefaults.poller.replicas"), refs.join(", "));
  assert.match(poller.text, /name: \{\{ include "postroom\.fullname" \$ \}\}-imap-poller-\{\{ \$tenant\.id \}\}/, "named per tenant");
  assert.match(poller.text, /postroom\.io\/tenant|"tenant" \$tenant\.id/, "selected per tenant");
  const acme = example.tenants.find((t) => t.id === "acme");
  assert.equal(acme?.poller?.replicas, 3);
  for (const service of ["archiver", "asd-bridge", "smtp-sender"]) {
    const t = templates().find((x) => x.file === `tenant-${service}.yaml`)!;
    assert.match(t.text, /- name: POSTROOM_TENANT\n\s+value: \{\{ \$tenant\.id \| quote \}\}/, `${service} is restricted to its tenant (its own consumer)`);
  }
});

test("KEDA scales on the consumers and streams exactly as @postroom/contracts names them", () => {
  const keda = templates().find((t) => t.file === "keda.yaml")!.text;
  const n = names("postroom");
  const tenant = "acme";
  // The template builds `<component>-<tenant>` and `<PREFIX>_<STREAM>`; compare with the builders.
  assert.match(keda, /consumer: \{\{ printf "%s-%s" \$component \$tenant\.id \| quote \}\}/);
  assert.match(keda, /stream: \{\{ printf "%s_%s" \$prefix \(index \$target 1\) \| quote \}\}/);
  const pairs = [...keda.matchAll(/\(list "([a-z-]+)" "([A-Z_]+)"\)/g)].map((m) => [m[1]!, m[2]!] as const);
  const expected: Record<string, { consumer: string; stream: string }> = {
    archiver: { consumer: n.consumers.archiverReceived(tenant), stream: n.streams.mail },
    "asd-bridge": { consumer: n.consumers.asdBridgeArchived(tenant), stream: n.streams.mail },
    "smtp-sender": { consumer: n.consumers.smtpSender(tenant), stream: n.streams.sendCommands },
  };
  assert.deepEqual(pairs.map(([c]) => c), Object.keys(expected));
  for (const [component, stream] of pairs) {
    assert.equal(`${component}-${tenant}`, expected[component]!.consumer);
    assert.equal(`POSTROOM_${stream}`, expected[component]!.stream);
  }
  const helpers = templates().find((t) => t.file === "_helpers.tpl")!.text;
  assert.match(helpers, /\$\.Values\.config\.nats\.namespace \| upper \| replace "-" "_"/, "the prefix is the namespace as contracts upper-cases it");
});

test("mailbox credentials are mounted only into token-service; the database secret only where PostgreSQL is used", () => {
  for (const { file, text } of templates()) {
    const credentials = /\$\.Values\.credentials\.existingSecret/.test(text);
    assert.equal(credentials, file === "token-service.yaml", `${file} ${credentials ? "mounts" : "does not mount"} the credentials Secret`);
    const database = /include "postroom\.databaseEnv"/.test(text);
    assert.equal(database, ["tenant-archiver.yaml", "tenant-asd-bridge.yaml", "tenant-smtp-sender.yaml"].includes(file), `${file} and the database Secret`);
  }
});

test("the unauthenticated ops endpoint listens on the pod's addresses only because the chart says so, and only the scraper is let in", () => {
  const helpers = templates().find((t) => t.file === "_helpers.tpl")!.text;
  // The services default to 127.0.0.1 outside Kubernetes; the kubelet and Prometheus need the pod IP.
  assert.match(helpers, /- name: POSTROOM_HTTP_HOST\n\s+value: \{\{ \$\.Values\.ops\.host \| default "0\.0\.0\.0" \| quote \}\}/);
  assert.equal((parse(readFileSync(join(CHART, "values.yaml"), "utf8")) as { ops: { host: string } }).ops.host, "0.0.0.0");
  const policy = templates().find((t) => t.file === "networkpolicy.yaml")!.text;
  const ingress = policy.slice(policy.indexOf("ingress:"), policy.indexOf("egress:"));
  assert.match(ingress, /- from:\n\s+\{\{- toYaml \$np\.monitoring\.from \| nindent 8 \}\}\n\s+ports:\n\s+- \{ port: ops, protocol: TCP \}/, "the ops port: from the monitoring selector only");
  assert.equal((ingress.match(/- from:/g) ?? []).length, 2, "no other way in than the scraper and (asd-bridge's API) the ingress controller");
});

test("each Deployment connects to NATS as its own user, named as the generated permissions name it, with only its own password", () => {
  // The generator's per-tenant users are the chart's Deployments: token-service, <service>-<tenant>.
  const expected = deploymentUsers([{ id: "acme", mailboxes: [] }], true).map((u) => u.user).sort();
  const seen: string[] = [];
  for (const { file, text } of templates().filter((t) => /^kind: Deployment$/m.test(t.text))) {
    const m = /include "postroom\.natsUserEnv" \(dict "secret" \$\.Values\.natsUsers\.existingSecret "user" (?:"([a-z-]+)"|\(printf "%s-%s" "([a-z-]+)" \$tenant\.id\))\)/.exec(text);
    assert.ok(m, `${file}: its own NATS user`);
    seen.push(m[1] ?? `${m[2]}-acme`);
  }
  assert.deepEqual(seen.sort(), expected);
  const helpers = templates().find((t) => t.file === "_helpers.tpl")!.text;
  assert.match(helpers, /- name: NATS_PASSWORD\n\s+valueFrom:\n\s+secretKeyRef:\n\s+name: \{\{ \.secret \}\}\n\s+key: \{\{ \.user \| quote \}\}/, "one key of the Secret: the pod's own password");
});

test("every Deployment has probes on /healthz and /readyz, resources and the standard labels", () => {
  const helpers = templates().find((t) => t.file === "_helpers.tpl")!.text;
  assert.match(helpers, /livenessProbe:\n\s+httpGet: \{ path: \/healthz, port: ops \}/);
  assert.match(helpers, /readinessProbe:\n\s+httpGet: \{ path: \/readyz, port: ops \}/);
  for (const label of ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/component", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of"]) {
    assert.ok(helpers.includes(`${label}:`), label);
  }
  for (const { file, text } of templates().filter((t) => /^kind: Deployment$/m.test(t.text))) {
    assert.match(text, /include "postroom\.probes"/, `${file}: probes`);
    assert.match(text, /resources:\n\s+\{\{- toYaml/, `${file}: requests/limits`);
    assert.match(text, /kind: PodDisruptionBudget/, `${file}: a PodDisruptionBudget`);
    assert.match(text, /containerPort: \{\{ \$\.Values\.ops\.port \}\}/, `${file}: the ops port`);
  }
});

test("the dashboards parse, every panel says what it means, and every metric they query is in the catalogue", () => {
  const files = readdirSync(GRAFANA).filter((f) => f.endsWith(".json"));
  assert.deepEqual(files.sort(), ["archive-disk.json", "authentication.json", "mail-flow.json", "mailbox-health.json", "time-to-agent.json"]);
  assert.equal(realpathSync(join(CHART, "dashboards")), realpathSync(GRAFANA), "the chart provisions these very files");
  let queried = 0;
  for (const f of files) {
    const d = JSON.parse(readFileSync(join(GRAFANA, f), "utf8"));
    assert.ok(d.uid && d.title && d.panels.length > 0, f);
    for (const p of d.panels) {
      assert.ok(p.description?.length > 20, `${f}: panel "${p.title}" explains itself`);
      assert.ok(p.targets.length > 0, `${f}: panel "${p.title}" queries something`);
      for (const t of p.targets) {
        for (const name of metricNamesIn(t.expr)) {
          queried++;
          assert.ok(metricOfSeries(name), `${f}: "${p.title}" queries ${name}, which no service exports`);
        }
      }
    }
  }
  assert.ok(queried > 30);
});

test("the alert rules parse, cover the eight conditions, and read only catalogued metrics", () => {
  const rules = parse(readFileSync(join(CHART, "files", "alerts.yaml"), "utf8")) as { groups: { rules: { alert: string; expr: string; for: string }[] }[] };
  const all = rules.groups.flatMap((g) => g.rules);
  assert.deepEqual(all.map((r) => r.alert).sort(), [
    "PostroomAcdUnreachable",
    "PostroomArchiveDiskCritical",
    "PostroomArchiveDiskWarning",
    "PostroomConsumerLagGrowing",
    "PostroomMailboxNeedsAdmin",
    "PostroomMailboxStalled",
    "PostroomSendFailuresRising",
    "PostroomUnansweredEmails",
  ]);
  for (const r of all) {
    const metrics = metricNamesIn(r.expr);
    assert.ok(metrics.length > 0, r.alert);
    for (const m of metrics) assert.ok(metricOfSeries(m), `${r.alert} reads ${m}, which no service exports`);
  }
});

// --- The real Helm: lint, render, and check what was rendered --------------------------------

const EXAMPLE = "examples/multi-tenant.yaml";
/** Rendered once per values set: each render is a helm process, ~0.3 s. */
const rendered = { defaults: renderChart(), example: renderChart([EXAMPLE]) };

test("helm lint --strict passes on the default values and on the multi-tenant example", () => {
  for (const args of [[], ["-f", join(CHART, EXAMPLE)]]) {
    const r = helm(["lint", "--strict", CHART, ...args]);
    assert.equal(r.status, 0, `helm lint --strict ${args.join(" ")}:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  }
  // Helm itself applies values.schema.json: a wrong value stops the install with its path.
  const bad = helm(["template", "postroom", CHART, "--set", "tenantDefaults.poller.replicas=three"]);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /tenantDefaults\/poller\/replicas/);
});

test("every object helm renders validates against the Kubernetes, KEDA and Prometheus operator schemas", async () => {
  for (const [label, objects] of Object.entries(rendered)) {
    const errors = (await Promise.all(objects.map(schemaErrors))).flat();
    assert.deepEqual(errors, [], label);
  }
  const kinds = new Set(rendered.example.map((o) => `${o.apiVersion} ${o.kind}`));
  for (const k of ["apps/v1 Deployment", "policy/v1 PodDisruptionBudget", "networking.k8s.io/v1 NetworkPolicy", "keda.sh/v1alpha1 ScaledObject", "monitoring.coreos.com/v1 PrometheusRule", "monitoring.coreos.com/v1 ServiceMonitor", "networking.k8s.io/v1 Ingress"]) {
    assert.ok(kinds.has(k), `the example renders a ${k}, so its schema was checked`);
  }
  // The check can fail: a Deployment with a string for replicas and no containers is refused.
  const deployment = structuredClone(rendered.defaults.find((o) => o.kind === "Deployment")!);
  deployment.spec.replicas = "two";
  assert.match((await schemaErrors(deployment)).join("\n"), /replicas must be integer/);
  assert.match((await schemaErrors({ apiVersion: "example.com/v9", kind: "Widget", metadata: { name: "w" } })).join(""), /no schema/);
});

function deployments(objects: K8sObject[]): K8sObject[] {
  return objects.filter((o) => o.kind === "Deployment");
}
function containerOf(d: K8sObject): { env?: { name: string; value?: string }[]; [k: string]: unknown } {
  assert.equal(d.spec.template.spec.containers.length, 1, `${d.metadata.name}: one container`);
  return d.spec.template.spec.containers[0];
}
function envOf(d: K8sObject, name: string): string | undefined {
  return containerOf(d).env?.find((e) => e.name === name)?.value;
}
function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

test("the rendered example: per tenant one poller Deployment with POSTROOM_TENANTS and its replicas, and its own archiver, asd-bridge and smtp-sender", () => {
  const all = deployments(rendered.example);
  const tenants = example.tenants.map((t) => t.id);
  const pollers = all.filter((d) => d.metadata.labels?.["app.kubernetes.io/component"] === "imap-poller");
  assert.deepEqual(pollers.map((d) => d.metadata.labels?.["postroom.io/tenant"]).sort(), [...tenants].sort(), "one poller Deployment per tenant");
  for (const d of pollers) {
    const tenant = d.metadata.labels!["postroom.io/tenant"]!;
    assert.equal(envOf(d, "POSTROOM_TENANTS"), tenant, `${d.metadata.name} polls only ${tenant}`);
    assert.equal(d.metadata.name, `postroom-imap-poller-${tenant}`);
  }
  assert.equal(pollers.find((d) => d.metadata.name.endsWith("-acme"))!.spec.replicas, 3);
  assert.equal(pollers.find((d) => d.metadata.name.endsWith("-globex"))!.spec.replicas, 1);
  for (const component of ["archiver", "asd-bridge", "smtp-sender"]) {
    for (const tenant of tenants) {
      const d = all.find((x) => x.metadata.name === `postroom-${component}-${tenant}`);
      assert.ok(d, `${component} for ${tenant}`);
      assert.equal(envOf(d, "POSTROOM_TENANT"), tenant);
      // With KEDA the ScaledObject owns the replica count; a fixed one would fight it.
      assert.equal(d.spec.replicas, undefined, `${d.metadata.name}: replicas left to KEDA`);
    }
  }
  assert.equal(all.length, 1 + 4 * tenants.length, "token-service plus four per tenant");
});

test("the rendered credentials Secret reaches token-service only; the database Secret only the services that use PostgreSQL", () => {
  for (const [label, objects] of Object.entries(rendered)) {
    const credentials = (defaults as { credentials: { existingSecret: string } }).credentials.existingSecret;
    assert.ok(credentials.length > 0, "values.yaml names the credentials Secret");
    for (const d of deployments(objects)) {
      const pod = JSON.stringify(d.spec.template.spec);
      const component = d.metadata.labels!["app.kubernetes.io/component"]!;
      assert.equal(pod.includes(JSON.stringify(credentials)), component === "token-service", `${label}: ${d.metadata.name} and the credentials Secret`);
      assert.equal(pod.includes('"DATABASE_URL"'), ["archiver", "asd-bridge", "smtp-sender"].includes(component), `${label}: ${d.metadata.name} and DATABASE_URL`);
      assert.equal(d.spec.template.spec.automountServiceAccountToken, false, `${d.metadata.name}: no service-account token`);
    }
  }
});

test("with database roles (the default) each database service logs in as its own user, and only the db-setup Job gets the owner's URL", () => {
  const ownerSecret = (defaults as { database: { existingSecret: string } }).database.existingSecret;
  const prefix = "postroom_"; // config.database.rolePrefix's default, as the chart's default config leaves it
  for (const [label, objects] of Object.entries(rendered)) {
    const jobs = objects.filter((o) => o.kind === "Job");
    assert.equal(jobs.length, 1, `${label}: one db-setup Job`);
    const job = jobs[0]!;
    assert.equal(job.metadata.name, "postroom-db-setup-1", `${label}: named by the release revision, so every upgrade runs it`);
    const c = job.spec.template.spec.containers[0] as { args: string[]; env: { name: string; value?: string; valueFrom?: { secretKeyRef: { name: string; key: string } } }[] };
    assert.deepEqual(c.args, ["db-setup"]);
    const jobEnv = new Map(c.env.map((e) => [e.name, e]));
    assert.deepEqual(jobEnv.get("DATABASE_URL")?.valueFrom?.secretKeyRef, { name: ownerSecret, key: "url" }, `${label}: the Job migrates as the owner`);
    assert.equal(job.spec.template.spec.automountServiceAccountToken, false);
    for (const d of deployments(objects)) {
      const pod = JSON.stringify(d.spec.template.spec);
      assert.ok(!pod.includes(JSON.stringify(ownerSecret)), `${label}: ${d.metadata.name} never sees the owner's URL`);
      const component = d.metadata.labels!["app.kubernetes.io/component"]!;
      if (!(DATABASE_SERVICES as readonly string[]).includes(component)) {
        assert.ok(!pod.includes("DATABASE_"), `${label}: ${d.metadata.name} has no database settings`);
        continue;
      }
      const service = component as (typeof DATABASE_SERVICES)[number];
      const env = new Map((containerOf(d).env ?? []).map((e) => [e.name, e as { value?: string; valueFrom?: { secretKeyRef: { name: string; key: string } } }]));
      // The login name the set-up creates (packages/db's groupRole + "_login"), the same in the pod and the Job.
      const login = `${groupRole(service, prefix)}_login`;
      assert.equal(env.get("DATABASE_USER")?.value, login, `${label}: ${d.metadata.name}`);
      assert.deepEqual(env.get("DATABASE_PASSWORD")?.valueFrom?.secretKeyRef, { name: "postroom-database-users", key: service }, `${label}: ${d.metadata.name} gets its own password only`);
      assert.doesNotMatch(env.get("DATABASE_URL")?.value ?? "", /@/, `${label}: ${d.metadata.name}'s DATABASE_URL carries no credentials`);
      const key = service.toUpperCase().replaceAll("-", "_");
      assert.equal(jobEnv.get(`DATABASE_USER_${key}`)?.value, login, `${label}: the Job creates ${login}`);
      assert.deepEqual(jobEnv.get(`DATABASE_PASSWORD_${key}`)?.valueFrom?.secretKeyRef, { name: "postroom-database-users", key: service });
    }
  }
  // The Job's network policy: PostgreSQL and DNS out, nothing in.
  const policy = rendered.defaults.find((o) => o.kind === "NetworkPolicy" && o.metadata.name === "postroom-db-setup")!;
  assert.deepEqual(policy.spec.ingress, []);
  assert.deepEqual(policy.spec.egress.map((e: { ports: { port: number }[] }) => e.ports.map((p) => p.port)), [[53, 53], [5432]]);
  // The image runs the set-up by that name.
  assert.match(readFileSync(join(CHART, "..", "..", "image", "entrypoint.mjs"), "utf8"), /"db-setup"/);
});

test("with database.roles.enabled=false the services share the owner's URL and migrate themselves, as before roles; no Job", () => {
  const objects = renderChart([], ["database.roles.enabled=false"]);
  assert.equal(objects.filter((o) => o.kind === "Job").length, 0);
  for (const d of deployments(objects).filter((x) => (DATABASE_SERVICES as readonly string[]).includes(x.metadata.labels!["app.kubernetes.io/component"]!))) {
    const env = containerOf(d).env as { name: string; valueFrom?: { secretKeyRef: { name: string; key: string } } }[];
    assert.deepEqual(env.find((e) => e.name === "DATABASE_URL")?.valueFrom?.secretKeyRef, { name: "postroom-database", key: "url" }, d.metadata.name);
    assert.equal(env.find((e) => e.name === "DATABASE_USER"), undefined);
  }
  // A URL with credentials in it is refused by the schema: the password belongs in the Secret.
  assert.ok(errorsOf(mergeValues(defaults, { database: { roles: { url: "postgres://u:p@db:5432/postroom" } } })).some((e) => e.startsWith("/database/roles/url")));
});

test("every rendered Deployment has its probes, requests and limits, a non-root read-only root filesystem and a PodDisruptionBudget that selects it", () => {
  for (const [label, objects] of Object.entries(rendered)) {
    const pdbs = objects.filter((o) => o.kind === "PodDisruptionBudget");
    for (const d of deployments(objects)) {
      const c = containerOf(d) as { livenessProbe?: any; readinessProbe?: any; startupProbe?: any; resources?: any; securityContext?: any }; // eslint-disable-line @typescript-eslint/no-explicit-any
      const where = `${label}: ${d.metadata.name}`;
      assert.equal(c.livenessProbe?.httpGet?.path, "/healthz", where);
      assert.equal(c.readinessProbe?.httpGet?.path, "/readyz", where);
      assert.equal(c.startupProbe?.httpGet?.path, "/healthz", where);
      for (const kind of ["requests", "limits"]) {
        assert.ok(c.resources?.[kind]?.cpu && c.resources?.[kind]?.memory, `${where}: ${kind}`);
      }
      const pod = d.spec.template.spec.securityContext ?? {};
      assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${where}: read-only root filesystem`);
      assert.equal(c.securityContext?.runAsNonRoot ?? pod.runAsNonRoot, true, `${where}: non-root`);
      assert.ok(selects(d.spec.selector.matchLabels, d.spec.template.metadata.labels), `${where}: its selector matches its pods`);
      const mine = pdbs.filter((p) => selects(p.spec.selector.matchLabels, d.spec.template.metadata.labels));
      assert.equal(mine.length, 1, `${where}: exactly one PodDisruptionBudget`);
    }
    assert.equal(pdbs.length, deployments(objects).length, `${label}: no PodDisruptionBudget without its Deployment`);
  }
});

test("the rendered NetworkPolicies cover every component's pods, and each selects pods that exist", () => {
  for (const [label, objects] of Object.entries(rendered)) {
    const policies = objects.filter((o) => o.kind === "NetworkPolicy");
    // The db-setup Job's pod is under a policy too.
    const pods = [...deployments(objects), ...objects.filter((o) => o.kind === "Job")].map((d) => d.spec.template.metadata.labels as Record<string, string>);
    for (const p of policies) {
      assert.ok(pods.some((l) => selects(p.spec.podSelector.matchLabels ?? {}, l)), `${label}: ${p.metadata.name} selects a pod`);
      assert.deepEqual([...p.spec.policyTypes].sort(), ["Egress", "Ingress"], `${label}: ${p.metadata.name} restricts both ways`);
    }
    for (const l of pods) {
      assert.ok(policies.some((p) => selects(p.spec.podSelector.matchLabels ?? {}, l)), `${label}: ${l["app.kubernetes.io/component"]} pods are under a policy`);
    }
  }
});

test("each rendered ScaledObject scales a rendered Deployment on a consumer and stream that @postroom/contracts names", () => {
  const scaled = rendered.example.filter((o) => o.kind === "ScaledObject");
  assert.equal(scaled.length, 3 * example.tenants.length);
  const names_ = new Set(deployments(rendered.example).map((d) => d.metadata.name));
  const n = names("postroom");
  for (const so of scaled) {
    const tenant = so.metadata.labels!["postroom.io/tenant"]!;
    const component = so.metadata.labels!["app.kubernetes.io/component"]!;
    assert.ok(names_.has(so.spec.scaleTargetRef.name), `${so.metadata.name} scales ${so.spec.scaleTargetRef.name}, which exists`);
    const expected = {
      archiver: { consumer: n.consumers.archiverReceived(tenant), stream: n.streams.mail },
      "asd-bridge": { consumer: n.consumers.asdBridgeArchived(tenant), stream: n.streams.mail },
      "smtp-sender": { consumer: n.consumers.smtpSender(tenant), stream: n.streams.sendCommands },
    }[component];
    assert.ok(expected, `${component} is scaled`);
    const [trigger] = so.spec.triggers;
    assert.equal(trigger.type, "nats-jetstream");
    assert.equal(trigger.metadata.consumer, expected.consumer);
    assert.equal(trigger.metadata.stream, expected.stream);
  }
});

// --- Alert thresholds from values --------------------------------------------------------------

const PLACEHOLDER = /\$\{([A-Za-z0-9]+)\.([A-Za-z0-9]+)\}/g;

test("every threshold placeholder in files/alerts.yaml has a value in values.yaml, and every threshold there is used", () => {
  const text = readFileSync(join(CHART, "files", "alerts.yaml"), "utf8").replace(/^\s*#.*$/gm, "");
  const used = new Set([...text.matchAll(PLACEHOLDER)].map((m) => `${m[1]}.${m[2]}`));
  const thresholds = (defaults as { prometheusRule: { thresholds: Record<string, Record<string, unknown>> } }).prometheusRule.thresholds;
  const set = new Set(Object.entries(thresholds).flatMap(([alert, keys]) => Object.keys(keys).map((k) => `${alert}.${k}`)));
  assert.ok(used.size >= 15, `alerts.yaml reads ${used.size} thresholds`);
  assert.deepEqual([...used].sort(), [...set].sort());
  for (const path of set) assert.ok(schemaHas(schema, `prometheusRule.thresholds.${path}`), `${path} is in values.schema.json`);
});

test("the rendered PrometheusRule carries the thresholds from values; a bad or missing one stops the render with its name", () => {
  const rule = (sets: string[]) => renderChart([], ["prometheusRule.enabled=true", ...sets]).find((o) => o.kind === "PrometheusRule")!;
  const rules = (r: K8sObject) => (r.spec.groups as { rules: { alert: string; expr: string; for: string; annotations: Record<string, string> }[] }[]).flatMap((g) => g.rules);
  const byDefault = rules(rule([]));
  assert.doesNotMatch(JSON.stringify(byDefault), /\$\{/, "no placeholder left");
  const stalled = byDefault.find((r) => r.alert === "PostroomMailboxStalled")!;
  assert.match(stalled.expr, /_last_success_age_seconds\) > 900\n/);
  assert.equal(stalled.for, "5m");
  assert.match(stalled.annotations.summary!, /\{\{ \$labels\.tenant \}\}/, "Prometheus' own templates stay literal");
  const tuned = rules(rule(["prometheusRule.thresholds.mailboxStalled.silentSeconds=1800", 'prometheusRule.thresholds.sendFailuresRising.window="1h"', "prometheusRule.thresholds.archiveDiskWarning.usedRatio=0.7"]));
  assert.match(tuned.find((r) => r.alert === "PostroomMailboxStalled")!.expr, /> 1800\n/);
  assert.match(tuned.find((r) => r.alert === "PostroomSendFailuresRising")!.expr, /\[1h\]\)\) > 0\.05\n/);
  assert.match(tuned.find((r) => r.alert === "PostroomArchiveDiskWarning")!.expr, /> 0\.7\)/);
  for (const r of byDefault) for (const m of metricNamesIn(r.expr)) assert.ok(metricOfSeries(m), `${r.alert} reads ${m}`);
  const badDuration = helm(["template", "postroom", CHART, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.thresholds.mailboxStalled.for=5 minutes"]);
  assert.notEqual(badDuration.status, 0);
  assert.match(badDuration.stderr, /prometheusRule\/thresholds\/mailboxStalled\/for/);
  const missing = helm(["template", "postroom", CHART, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.thresholds.consumerLagGrowing=null"]);
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /consumerLagGrowing/);
});

test("the chart's default image is the one scripts/image.sh builds, at the chart's appVersion", () => {
  const version = (JSON.parse(readFileSync(join(CHART, "..", "..", "image", "package.json"), "utf8")) as { version: string }).version;
  assert.match(readFileSync(join(CHART, "Chart.yaml"), "utf8"), new RegExp(`^appVersion: "${version.replace(/\./g, "\\.")}"$`, "m"));
  for (const d of deployments(rendered.defaults)) {
    const c = containerOf(d) as { image?: string; args?: string[] };
    assert.equal(c.image, `localhost/postroom/postroom:${version}`, d.metadata.name);
    assert.deepEqual(c.args, [d.metadata.labels!["app.kubernetes.io/component"]], `${d.metadata.name}: the entrypoint gets the service's name`);
  }
});

test("the documented NATS and CloudNativePG examples give what the chart's multi-tenant example expects", () => {
  const examples = join(CHART, "..", "..", "examples");
  const nats = parse(readFileSync(join(examples, "nats-values.yaml"), "utf8")) as {
    config: { cluster: { enabled: boolean; replicas: number }; jetstream: { enabled: boolean; fileStore: { enabled: boolean } }; merge: { jetstream: { sync_interval: string } } };
  };
  assert.equal(nats.config.cluster.enabled, true);
  assert.equal(nats.config.cluster.replicas, 3);
  assert.equal(nats.config.jetstream.enabled && nats.config.jetstream.fileStore.enabled, true, "JetStream on file storage");
  assert.equal(nats.config.merge.jetstream.sync_interval, "always", "acknowledged means on disk");
  const mt = example as unknown as { config: { nats: { url: string; replicas: number } }; keda: { natsMonitoringEndpoint: string } };
  assert.equal(mt.config.nats.replicas, nats.config.cluster.replicas, "streams replicated on every NATS server");
  // `helm install nats ... -n nats` serves nats.nats.svc (client 4222, monitoring 8222).
  assert.equal(mt.config.nats.url, "nats://nats.nats.svc:4222");
  assert.equal(mt.keda.natsMonitoringEndpoint, "nats.nats.svc:8222");
  const pg = parse(readFileSync(join(examples, "postgres-cnpg.yaml"), "utf8")) as {
    apiVersion: string; kind: string; metadata: { name: string }; spec: { instances: number; imageName: string; bootstrap: { initdb: { database: string; owner: string } } };
  };
  assert.equal(`${pg.apiVersion} ${pg.kind}`, "postgresql.cnpg.io/v1 Cluster");
  assert.equal(pg.spec.instances, 3);
  assert.match(pg.spec.imageName, /postgresql:1[5-9]$/, "PostgreSQL 15 or later");
  assert.deepEqual(pg.spec.bootstrap.initdb, { database: "postroom", owner: "postroom" });
  assert.match(readFileSync(join(CHART, "..", "..", "README.md"), "utf8"), new RegExp(`${pg.metadata.name}-rw\\.postgres:5432/postroom`), "the README's database URL names its Service");
});
