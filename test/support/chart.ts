import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Reading the Helm chart and the dashboards without helm (Debian ships no helm package, and this
 * machine reaches no other download). Templates are checked structurally: the value paths they
 * read, resolved through the chart's one rule for variables (see templates/_helpers.tpl).
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
