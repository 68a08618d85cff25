import assert from "node:assert/strict";
import { readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { validateConfig } from "@postroom/config";
import { names } from "@postroom/contracts";
import { metricOfSeries } from "@postroom/telemetry";
import { Ajv } from "ajv";
import { parse } from "yaml";
import { CHART, GRAFANA, mergeValues, metricNamesIn, schemaHas, templates, valueReferences } from "../support/chart.js";

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

test("the alert rules parse, cover the five conditions, and read only catalogued metrics", () => {
  const rules = parse(readFileSync(join(CHART, "files", "alerts.yaml"), "utf8")) as { groups: { rules: { alert: string; expr: string; for: string }[] }[] };
  const all = rules.groups.flatMap((g) => g.rules);
  assert.deepEqual(all.map((r) => r.alert).sort(), [
    "PostroomArchiveDiskCritical",
    "PostroomArchiveDiskWarning",
    "PostroomConsumerLagGrowing",
    "PostroomMailboxNeedsAdmin",
    "PostroomMailboxStalled",
    "PostroomSendFailuresRising",
  ]);
  for (const r of all) {
    const metrics = metricNamesIn(r.expr);
    assert.ok(metrics.length > 0, r.alert);
    for (const m of metrics) assert.ok(metricOfSeries(m), `${r.alert} reads ${m}, which no service exports`);
  }
});
