import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { isMap, LineCounter, parseDocument, type Document } from "yaml";
import type { z } from "zod";
import { semanticIssues } from "./check.js";
import { ConfigError, formatIssue, formatPath, type ConfigIssue } from "./issues.js";
import { ID_PATTERN, PostroomConfig, type ArchiveSettings, type Mailbox, type Tenant } from "./schema.js";

export { ConfigError, formatIssue, formatPath };
export type { ConfigIssue };

/** Turns zod's issues into operator-facing ones. */
export function toConfigIssues(error: z.ZodError): ConfigIssue[] {
  return error.issues.map(toConfigIssue);
}

function toConfigIssue(issue: z.core.$ZodIssue): ConfigIssue {
  return { path: formatPath(issue.path), message: messageFor(issue), fix: fixFor(issue), severity: "error" };
}

function messageFor(issue: z.core.$ZodIssue): string {
  if (issue.code === "invalid_type" && issue.input === undefined) return "is missing";
  if (issue.code === "unrecognized_keys") {
    return `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => `"${k}"`).join(", ")}`;
  }
  return issue.message;
}

function fixFor(issue: z.core.$ZodIssue): string | null {
  const params = (issue as { params?: { fix?: unknown } }).params;
  if (typeof params?.fix === "string") return params.fix;
  switch (issue.code) {
    case "unrecognized_keys":
      return `remove ${issue.keys.map((k) => `"${k}"`).join(", ")} or check its spelling against packages/config/README.md`;
    case "invalid_value":
      return `use one of: ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    case "invalid_union": {
      const options = (issue as { options?: unknown[] }).options;
      if (Array.isArray(options)) return `use one of: ${options.map((v) => JSON.stringify(v)).join(", ")}`;
      return "check the field against the examples in packages/config/README.md";
    }
    case "invalid_type":
      return issue.input === undefined ? "add this field" : `give a ${issue.expected}`;
    case "too_small":
      if (issue.origin === "array") return `add at least ${String(issue.minimum)}`;
      if (issue.origin === "string") return "give a value (it may not be empty)";
      return `use a value of at least ${String(issue.minimum)}`;
    case "too_big":
      if (issue.origin === "string" || issue.origin === "array") return `shorten it to at most ${String(issue.maximum)}`;
      return `use a value of at most ${String(issue.maximum)}`;
    case "invalid_format":
      switch (issue.format) {
        case "email":
          return "write a plain address such as support@example.com (no display name, no angle brackets)";
        case "guid":
        case "uuid":
          return "copy the GUID from the Entra ID app registration's Overview page";
        case "url":
          return "write a full URL such as https://example.com/hook";
        case "date":
          return "write the date as YYYY-MM-DD";
        case "regex":
          if ((issue as { pattern?: unknown }).pattern === ID_PATTERN.toString()) {
            return 'rename it, e.g. "contoso" or "billing-uk" (archives and history are filed under it, so keep it stable once running)';
          }
          return null; // the message already names the pattern
        default:
          return null;
      }
    default:
      return null;
  }
}

/** The outcome of validating a configuration: the config when there are no errors, and every issue. */
export interface ConfigValidation {
  /** The parsed config with defaults applied, or null when there are errors. */
  config: PostroomConfig | null;
  /** Problems that stop the configuration from loading. */
  errors: ConfigIssue[];
  /** Legal but risky or probably wrong settings. */
  warnings: ConfigIssue[];
}

/**
 * Validates YAML text completely and never throws: YAML syntax, the schema, and the semantic checks
 * of check.ts. Every issue carries its YAML line where the field (or its parent) can be found.
 */
export function validateConfig(text: string): ConfigValidation {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: true, lineCounter });
  if (doc.errors.length > 0) {
    return {
      config: null,
      errors: doc.errors.map((e) => ({
        path: "",
        line: e.linePos?.[0]?.line,
        // Only the first line: the rest is a source excerpt, which could show a secret.
        message: `YAML syntax: ${e.message.split("\n")[0] ?? e.code}`,
        fix: "check the indentation and quoting around this line",
        severity: "error" as const,
      })),
      warnings: [],
    };
  }
  const raw: unknown = doc.toJS();
  const lineOf = (path: ReadonlyArray<PropertyKey>) => lineFor(doc, lineCounter, path);
  const semantic = semanticIssues(raw);
  const warnings = semantic
    .filter((i) => i.severity === "warning")
    .map(({ pathSegments, ...i }) => ({ ...i, line: lineOf(pathSegments) }));

  const result = PostroomConfig.safeParse(raw);
  if (result.success) return { config: result.data, errors: [], warnings };

  // zod skipped the superRefine because the shape failed: add the semantic errors ourselves.
  const errors = result.error.issues.map((i) => ({ ...toConfigIssue(i), line: lineOf(i.path) }));
  const seen = new Set(errors.map((e) => `${e.path}\0${e.message}`));
  for (const { pathSegments, ...issue } of semantic) {
    if (issue.severity !== "error" || seen.has(`${issue.path}\0${issue.message}`)) continue;
    errors.push({ ...issue, line: lineOf(pathSegments) });
  }
  errors.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  return { config: null, errors, warnings };
}

/** The line of the node at `path`, or of its nearest ancestor that exists (for missing fields). */
function lineFor(doc: Document, lineCounter: LineCounter, path: ReadonlyArray<PropertyKey>): number | undefined {
  const keys = path.filter((p): p is string | number => typeof p === "string" || typeof p === "number");
  for (let n = keys.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(keys.slice(0, n), true);
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
    if (range) {
      // For a map value, point at its key's line rather than the first nested entry.
      const parent = n > 0 ? doc.getIn(keys.slice(0, n - 1), true) : undefined;
      if (isMap(parent)) {
        const pair = parent.items.find((p) => (p.key as { value?: unknown } | null)?.value === keys[n - 1]);
        const keyRange = (pair?.key as { range?: [number, number, number] } | null)?.range;
        if (keyRange) return lineCounter.linePos(keyRange[0]).line;
      }
      return lineCounter.linePos(range[0]).line;
    }
  }
  return undefined;
}

/** Parses and validates a YAML configuration. Throws ConfigError listing every error (warnings do not throw). */
export function parseConfig(text: string, source = "config"): PostroomConfig {
  const { config, errors } = validateConfig(text);
  if (!config) throw new ConfigError(source, errors);
  return config;
}

/**
 * Reads a configuration file. Relative folders in it (`archive.path`, a mailbox's `archive.path`,
 * `logs.path`) are taken relative to the file's own folder and returned absolute: they are stored
 * in PostgreSQL and shared by services, so they must not depend on where a process was started.
 */
export async function loadConfigFile(path: string): Promise<PostroomConfig> {
  const config = parseConfig(await readFile(path, "utf8"), path);
  const base = dirname(resolve(path));
  config.archive.path = resolve(base, config.archive.path);
  if (config.logs.path !== undefined) config.logs.path = resolve(base, config.logs.path);
  for (const tenant of config.tenants) {
    for (const mailbox of tenant.mailboxes) {
      if (mailbox.archive?.path !== undefined) mailbox.archive.path = resolve(base, mailbox.archive.path);
    }
  }
  return config;
}

/**
 * The configuration a service runs with: the file named by POSTROOM_CONFIG (or `file`), with
 * NATS_URL and DATABASE_URL from the environment taking precedence, as twelve-factor deployments expect.
 */
export async function loadConfig(env: NodeJS.ProcessEnv, file?: string): Promise<PostroomConfig> {
  const path = file ?? env.POSTROOM_CONFIG;
  if (!path) {
    throw new ConfigError("environment", [
      { path: "POSTROOM_CONFIG", message: "no configuration file given", fix: "set POSTROOM_CONFIG=/path/to/postroom.yaml" },
    ]);
  }
  const config = await loadConfigFile(path);
  if (env.NATS_URL) config.nats.url = env.NATS_URL;
  if (env.DATABASE_URL) config.database.url = env.DATABASE_URL;
  if (env.POSTROOM_NAMESPACE) config.nats.namespace = env.POSTROOM_NAMESPACE;
  return config;
}

/** A mailbox with its tenant. */
export interface MailboxRef {
  tenant: Tenant;
  mailbox: Mailbox;
}

export function allMailboxes(config: PostroomConfig): MailboxRef[] {
  return config.tenants.flatMap((tenant) => tenant.mailboxes.map((mailbox) => ({ tenant, mailbox })));
}

export function findMailbox(config: PostroomConfig, tenantId: string, mailboxId: string): MailboxRef | undefined {
  const tenant = config.tenants.find((t) => t.id === tenantId);
  const mailbox = tenant?.mailboxes.find((m) => m.id === mailboxId);
  return tenant && mailbox ? { tenant, mailbox } : undefined;
}

/** The archive settings that apply to a mailbox: its overrides on top of the top-level ones. */
export function archiveSettingsFor(config: PostroomConfig, mailbox: Mailbox): ArchiveSettings {
  return { ...config.archive, ...Object.fromEntries(Object.entries(mailbox.archive ?? {}).filter(([, v]) => v !== undefined)) };
}
