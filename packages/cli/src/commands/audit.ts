/**
 * `postroom audit --tenant T`: one tenant's audit trail — who did what, when and from where (agent
 * logins and refusals, sessions opened, replies, forwards, transfers, closes; config reloads) —
 * read from PostgreSQL's append-only `audit_events`. The tenant is required: the trail is read one
 * tenant at a time, never across tenants.
 */
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "@postroom/config";
import { createPool, queryAudit, type AuditRow } from "@postroom/db";
import { EXIT_USAGE } from "../dispatch.js";
import { commandTarget } from "./run-state.js";
import { formatTable } from "./status-table.js";

export const help = `Usage: postroom audit --tenant ID [--since TIME] [--until TIME] [--agent ID] [--kind PREFIX] [--all] [--limit N] [--json]

Shows one tenant's audit trail, newest first: agents' logins (and refused or locked ones, with the
client address), queue logins, sessions opened, attachments downloaded, replies, forwards,
transfers and closes (with session, message and command ids), supervisors' reads of the trail and
"log out everywhere", and administrative actions such as config reloads. Rows are append-only:
the database refuses to change or delete them.

Reads PostgreSQL (database.url of the config; DATABASE_URL overrides). Without --config or
POSTROOM_CONFIG it uses the database of the \`postroom up\` or \`postroom demo\` running from this folder.

Options:
  -t, --tenant ID      the tenant (required)
      --since TIME     only from this time: ISO (2026-12-01T08:00:00Z) or an age (30m, 12h, 7d)
      --until TIME     only before this time (same forms)
  -a, --agent ID       only what this agent (or operator) did
  -k, --kind PREFIX    only these actions, e.g. session. or agent.login
      --all            also the services' own events (message.archived, message.purged)
  -n, --limit N        at most N rows (default 500)
      --json           one JSON object per row instead of the table
  -c, --config FILE    the configuration (default: $POSTROOM_CONFIG, then the running up/demo)
  -h, --help           show this help
`;

/** A time from the command line: ISO, or an age before `now` such as 30m, 12h, 7d. Undefined when unreadable. */
export function parseTime(value: string, now = new Date()): Date | undefined {
  const age = /^(\d+)\s*(s|m|h|d)$/.exec(value.trim());
  if (age) return new Date(now.getTime() - Number(age[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[age[2] as "s" | "m" | "h" | "d"]);
  const t = new Date(value);
  return Number.isNaN(t.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(value) ? undefined : t;
}

/** The table `postroom audit` prints. Pure. */
export function auditTable(rows: AuditRow[]): string {
  if (rows.length === 0) return "no audit events\n";
  return formatTable(
    ["TIME", "WHO", "ACTION", "FROM", "SESSION", "MESSAGE / COMMAND", "DETAIL"],
    rows.map((r) => [
      r.at.toISOString().replace(/\.\d{3}Z$/, "Z"),
      r.actorKind === "agent" ? r.actor : `${r.actor} (${r.actorKind})`,
      r.kind,
      r.clientAddress ?? "",
      r.sessionId ?? "",
      [r.ref, r.commandId].filter(Boolean).join(" "),
      detailText(r.detail),
    ]),
  );
}

function detailText(d: Record<string, unknown>): string {
  const text = Object.entries(d)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  return text.length > 120 ? `${text.slice(0, 119)}…` : text;
}

/** Where the command writes (tests pass their own). */
export interface Output {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

export async function run(argv: string[], io: Output = process): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        tenant: { type: "string", short: "t" },
        since: { type: "string" },
        until: { type: "string" },
        agent: { type: "string", short: "a" },
        kind: { type: "string", short: "k" },
        all: { type: "boolean" },
        limit: { type: "string", short: "n" },
        json: { type: "boolean" },
        config: { type: "string", short: "c" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    io.stderr.write(`postroom audit: ${(e as Error).message}\n\n${help}`);
    return EXIT_USAGE;
  }
  const v = parsed.values;
  if (v.help) {
    io.stdout.write(help);
    return 0;
  }
  const usage = (problem: string) => {
    io.stderr.write(`postroom audit: ${problem}\n\n${help}`);
    return EXIT_USAGE;
  };
  if (!v.tenant) return usage("give --tenant: the trail is read one tenant at a time");
  const since = v.since === undefined ? undefined : parseTime(v.since);
  const until = v.until === undefined ? undefined : parseTime(v.until);
  if (v.since !== undefined && !since) return usage(`--since ${JSON.stringify(v.since)} is not a time: give an ISO time (2026-12-01T08:00:00Z) or an age (30m, 12h, 7d)`);
  if (v.until !== undefined && !until) return usage(`--until ${JSON.stringify(v.until)} is not a time: give an ISO time or an age`);
  const limit = v.limit === undefined ? undefined : Number(v.limit);
  if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) return usage("--limit is a positive whole number");

  const target = commandTarget(v.config, process.env);
  if (target.config === undefined) return usage("no configuration: pass --config FILE, set POSTROOM_CONFIG, or run it in the folder where `postroom up` or `postroom demo` is running");
  let config;
  try {
    config = await loadConfig(target.env, target.config);
  } catch (e) {
    if (e instanceof ConfigError) {
      io.stderr.write(`postroom audit: ${e.message}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
  if (!config.tenants.some((t) => t.id === v.tenant)) {
    io.stderr.write(`postroom audit: tenant "${v.tenant}" is not in ${target.config}\n  fix: one of ${config.tenants.map((t) => t.id).join(", ")}\n`);
    return 1;
  }
  const pool = createPool(config.database.url, { max: 1, tls: config.database.tls });
  try {
    const rows = await queryAudit(pool, {
      tenant: v.tenant,
      ...(since ? { since } : {}),
      ...(until ? { until } : {}),
      ...(v.agent ? { actor: v.agent } : {}),
      ...(v.kind ? { kindPrefix: v.kind } : {}),
      ...(v.all ? { includeService: true } : {}),
      ...(limit ? { limit } : {}),
    });
    if (v.json) for (const r of rows) io.stdout.write(`${JSON.stringify({ ...r, at: r.at.toISOString() })}\n`);
    else io.stdout.write(auditTable(rows));
    return 0;
  } catch (e) {
    io.stderr.write(`postroom audit: cannot read the trail from PostgreSQL: ${(e as Error).message}\n  fix: start PostgreSQL or set DATABASE_URL\n`);
    return 1;
  } finally {
    await pool.end().catch(() => undefined);
  }
}
