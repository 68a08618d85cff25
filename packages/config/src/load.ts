import { readFile } from "node:fs/promises";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { PostroomConfig, type ArchiveSettings, type Mailbox, type Tenant } from "./schema.js";

/** One problem in a configuration: where, what, and how to fix it. */
export interface ConfigIssue {
  /** Dotted path to the field, e.g. `tenants[0].mailboxes[1].inbound.port`. */
  path: string;
  message: string;
  fix: string | null;
}

/** A configuration that cannot be used. Lists every problem found, not only the first. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    readonly source: string,
    readonly issues: ConfigIssue[],
    options?: { cause?: unknown },
  ) {
    super(`${source}: ${issues.length} problem(s)\n${issues.map((i) => `  - ${formatIssue(i)}`).join("\n")}`, options);
  }
}

export function formatIssue(issue: ConfigIssue): string {
  return `${issue.path || "(top level)"}: ${issue.message}${issue.fix ? ` — fix: ${issue.fix}` : ""}`;
}

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out === "" ? String(p) : `.${String(p)}`;
  }
  return out;
}

/** Turns zod's issues into operator-facing ones. */
export function toConfigIssues(error: z.ZodError): ConfigIssue[] {
  return error.issues.map((i) => ({ path: formatPath(i.path), message: i.message, fix: fixFor(i) }));
}

function fixFor(issue: z.core.$ZodIssue): string | null {
  switch (issue.code) {
    case "unrecognized_keys":
      return `remove ${issue.keys.map((k) => `"${k}"`).join(", ")} or check its spelling`;
    case "invalid_value":
      return `use one of: ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    case "invalid_union":
      return "check the field against the examples in packages/config/README.md";
    case "invalid_type":
      return issue.input === undefined ? "add this field" : `give a ${issue.expected}`;
    case "too_small":
    case "too_big":
      return null;
    default:
      return null;
  }
}

/** Parses and validates a YAML configuration. Throws ConfigError listing every problem. */
export function parseConfig(text: string, source = "config"): PostroomConfig {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      source,
      doc.errors.map((e) => ({
        path: e.linePos?.[0] ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : "",
        message: `YAML syntax: ${e.message.split("\n")[0] ?? e.code}`,
        fix: "check the indentation and quoting around this line",
      })),
    );
  }
  const result = PostroomConfig.safeParse(doc.toJS());
  if (!result.success) throw new ConfigError(source, toConfigIssues(result.error), { cause: result.error });
  return result.data;
}

/** Reads a configuration file. */
export async function loadConfigFile(path: string): Promise<PostroomConfig> {
  return parseConfig(await readFile(path, "utf8"), path);
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
