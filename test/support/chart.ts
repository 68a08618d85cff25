import { execFileSync, spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

/**
 * Reading the Helm chart and the dashboards. Two ways, both used by e2e/ops-chart.test.ts: the real
 * Helm (`helm lint --strict`, `helm template`; scripts/helm.sh extracts the pinned binary from an
 * npm package and checks its SHA-256), whose rendered objects are validated against the Kubernetes,
 * KEDA and Prometheus operator schemas; and a structural reading of the templates (the value paths
 * they read, resolved through the chart's one rule for variables, see templates/_helpers.tpl),
 * which catches a value read but never declared even where no values file sets it.
 */

export const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
export const CHART = join(ROOT, "deploy", "helm", "postroom");
export const GRAFANA = join(ROOT, "deploy", "grafana");

export function templates(): { file: string; text: string }[] {
  const dir = join(CHART, "templates");
  return readdirSync(dir)
    .filter((f) => f.endsWith(".yaml") || f.endsWith(".tpl"))
    .map((file) => ({ file, text: readFileSync(join(dir, file), "utf8") }));
}

/** A value path such as `tenants[].poller.replicas`. */
export interface ValueRef {
  file: string;
  path: string;
}

const PATH = /(\$\.Values|\$[A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)/g;

/**
 * Every value a template reads: `$.Values.a.b`, or `$var.c` where `$var` was bound to a value path
 * (`range $tenant := $.Values.tenants` binds an item: `tenants[]`), or `hasKey $var "key"`.
 */
export function valueReferences(file: string, text: string): ValueRef[] {
  const bound = new Map<string, string>();
  const refs: ValueRef[] = [];
  const resolvePath = (root: string, rest: string): string | undefined => {
    const tail = rest.replace(/^\./, "");
    if (root === "$.Values") return tail;
    const base = bound.get(root);
    if (base === undefined) return undefined;
    return tail ? `${base}.${tail}` : base;
  };
  for (const action of text.matchAll(/\{\{-?([\s\S]*?)-?\}\}/g)) {
    const body = action[1]!.replace(/\/\*[\s\S]*?\*\//g, "").replace(/[()]/g, " ");
    const binding = /^\s*(range\s+)?(\$[A-Za-z_][A-Za-z0-9_]*)\s*:=\s*([\s\S]*)$/.exec(body);
    for (const m of (binding ? binding[3]! : body).matchAll(PATH)) {
      const path = resolvePath(m[1]!, m[2]!);
      if (path) refs.push({ file, path });
    }
    for (const m of body.matchAll(/hasKey\s+(\$[A-Za-z_][A-Za-z0-9_]*)\s+"([A-Za-z0-9_]+)"/g)) {
      const path = resolvePath(m[1]!, `.${m[2]!}`);
      if (path) refs.push({ file, path });
    }
    if (binding) {
      // The last value path on the right-hand side is what the variable stands for.
      const paths = [...binding[3]!.matchAll(PATH)].map((m) => resolvePath(m[1]!, m[2]!)).filter((p): p is string => p !== undefined);
      const last = paths.at(-1);
      if (last !== undefined) bound.set(binding[2]!, binding[1] ? `${last}[]` : last);
    }
  }
  return refs;
}

type Schema = {
  type?: string | string[];
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: boolean | Schema;
  anyOf?: Schema[];
};

/** Whether `path` is a value the schema describes (free-form objects accept anything below). */
export function schemaHas(schema: Schema, path: string): boolean {
  let node: Schema | undefined = schema;
  for (const part of path.split(".")) {
    const array = part.endsWith("[]");
    const key = array ? part.slice(0, -2) : part;
    if (!node) return false;
    const freeForm: boolean = node.type === "object" && !node.properties && node.additionalProperties !== false;
    if (freeForm) return true;
    let next: Schema | undefined = node.properties?.[key];
    if (!next && typeof node.additionalProperties === "object") next = node.additionalProperties;
    if (!next) return false;
    if (array) {
      if (!next.items) return false;
      next = next.items;
    }
    node = next;
  }
  return node !== undefined;
}

/** Helm's merge of a values file over the chart's values.yaml: maps merge, everything else replaces. */
export function mergeValues(base: unknown, over: unknown): unknown {
  if (isMap(base) && isMap(over)) {
    const out: Record<string, unknown> = { ...base };
    for (const [k, v] of Object.entries(over)) out[k] = k in base ? mergeValues(base[k], v) : v;
    return out;
  }
  return over === undefined ? base : over;
}

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The `postroom_*` names a PromQL expression reads. */
export function metricNamesIn(expr: string): string[] {
  return [...new Set([...expr.matchAll(/\b(postroom_[a-z0-9_]+)/g)].map((m) => m[1]!))];
}

let helmPath: string | undefined;

/** The verified Helm binary (scripts/helm.sh extracts it on first use). */
export function helmBinary(): string {
  helmPath ??= execFileSync("bash", [join(ROOT, "scripts", "helm.sh")], { encoding: "utf8" }).trim();
  return helmPath;
}

/** Runs helm with a deadline; a non-zero exit is returned, not thrown, so tests can assert on it. */
export function helm(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(helmBinary(), args, { cwd: ROOT, encoding: "utf8", timeout: 60_000, maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  // Helm logs an INFO line for the dashboards symlink on every run; it is no failure.
  const stderr = r.stderr.split("\n").filter((l) => l && !/^level=INFO /.test(l)).join("\n");
  return { status: r.status ?? -1, stdout: r.stdout, stderr };
}

/** A rendered Kubernetes object, as far as these tests read it. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- each test reads the fields it checks
  data?: Record<string, string>;
}

/**
 * `helm template` of the chart with the given values files (paths relative to the chart) and
 * `--set-json` pairs (`path=<JSON>`: `--set` would turn 0.7 into a string), parsed strictly: a duplicate key in any object fails here, as it fails kubectl.
 */
export function renderChart(valuesFiles: string[] = [], sets: string[] = []): K8sObject[] {
  const args = ["template", "postroom", CHART, "--namespace", "postroom"];
  for (const f of valuesFiles) args.push("-f", join(CHART, f));
  for (const s of sets) args.push("--set-json", s);
  const r = helm(args);
  if (r.status !== 0) throw new Error(`helm template failed (${r.status}): ${r.stderr}`);
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(r.stdout, { uniqueKeys: true })) {
    if (doc.errors.length > 0) throw new Error(`helm template rendered invalid YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
    const o = doc.toJS() as K8sObject | null;
    if (o) objects.push(o);
  }
  return objects;
}

/**
 * The schema errors of a rendered object, from the `kubernetes-models` packages (the Kubernetes
 * OpenAPI schemas, and KEDA's and the Prometheus operator's CRD schemas). Empty when it is valid;
 * an apiVersion/kind none of them knows is an error too, so no object escapes the check. These
 * schemas check types, required fields and formats; they allow unknown fields, as the API's
 * OpenAPI documents do.
 */
export async function schemaErrors(o: K8sObject): Promise<string[]> {
  const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
  const path = `${group ? `${group}/` : ""}${version}/${o.kind}`;
  const module =
    group === "keda.sh"
      ? `@kubernetes-models/keda/${path}`
      : group === "monitoring.coreos.com"
        ? `@kubernetes-models/prometheus-operator/${path}`
        : `kubernetes-models/${path}`;
  let Model: new (data: unknown) => { validate(): void };
  try {
    Model = ((await import(module)) as Record<string, typeof Model>)[o.kind]!;
  } catch {
    return [`${o.kind} ${o.metadata.name}: no schema for ${o.apiVersion} ${o.kind}`];
  }
  try {
    new Model(o).validate();
    return [];
  } catch (err) {
    return [`${o.kind} ${o.metadata.name}: ${(err as Error).message}`];
  }
}
