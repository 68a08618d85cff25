import { parseArgs } from "node:util";
import { allMailboxes, ConfigError, loadConfig } from "@postroom/config";
import { AcdStatus, MailboxStatus, names as namesOf } from "@postroom/contracts";
import { connectNats, openKv } from "@postroom/nats-kit";
import { EXIT_USAGE } from "../dispatch.js";
import { operatorNatsOptions } from "./nats-operator.js";
import { commandTarget } from "./run-state.js";
import { failedSends, failedSendsSection, type FailedSends } from "./status-sends.js";
import { ACD_COLUMNS, acdStatusLine, type AcdRow } from "./acd-status-table.js";
import { formatTable, STATUS_COLUMNS, statusLine, type StatusRow } from "./status-table.js";

export const help = `Usage: postroom status [--config FILE] [--tenant ID] [--json]

Shows every configured mailbox as imap-poller last reported it: state (connecting, idle, polling,
backing-off, needs-admin, paused), the replica that owns it, the last completed check, the last
message, the backlog, and the last error with the server's words and the fix. A mailbox that has
not completed a check within three check intervals is shown as STALLED, whatever it last said.
Below, failed sends per mailbox over the last 24 hours (replies, forwards and alerts that will
not go out), with the last failure's words, read from PostgreSQL (database.url).

Then every tenant's ACD as asd-bridge last reported it: state (connecting, connected, UNREACHABLE,
stopped) and since when, offers held back while it is unreachable, emails the ACD let go without
an agent that are still unanswered and the oldest one's age (OVERDUE past unanswered.alertAfterSeconds),
the last error with its fix, and the problems it reported (unknown agents, unacknowledged frames).

Reads the mailbox-status and acd-status buckets in NATS (nats.url and nats.namespace from the
config; NATS_URL overrides). Without --config or POSTROOM_CONFIG it uses the config, NATS and
namespace of the \`postroom up\` or \`postroom demo\` running from this folder (its
.postroom/state.json). Exits 0 when everything is fine, 1 when a mailbox is stalled or needs an
administrator or an ACD is unreachable, has overdue unanswered emails or reports a problem (for
scripts and cron checks), 2 on a usage error.

Options:
  -c, --config FILE   the configuration (default: $POSTROOM_CONFIG, then the running up/demo)
  -t, --tenant ID     only this tenant's mailboxes
      --json          one JSON object per mailbox, then one per tenant's ACD ("kind": "acd"), instead of the tables
  -h, --help          show this help
`;

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: "string", short: "c" },
        tenant: { type: "string", short: "t" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    process.stderr.write(`postroom status: ${(e as Error).message}\n\n${help}`);
    return EXIT_USAGE;
  }
  if (parsed.values.help) {
    process.stdout.write(help);
    return 0;
  }
  // The config and NATS the running `up` / `demo` use, unless --config or POSTROOM_CONFIG say otherwise.
  const target = commandTarget(parsed.values.config, process.env);
  if (target.config === undefined) {
    process.stderr.write(
      "postroom status: no configuration: pass --config FILE, set POSTROOM_CONFIG, or run it in the folder where `postroom up` or `postroom demo` is running\n",
    );
    return EXIT_USAGE;
  }
  let config;
  try {
    config = await loadConfig(target.env, target.config);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`postroom status: ${e.message}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }
  const names = namesOf(config.nats.namespace);
  let nc;
  try {
    nc = await connectNats(operatorNatsOptions(config, "postroom-status"));
  } catch (e) {
    process.stderr.write(`postroom status: cannot reach NATS at ${config.nats.url}: ${(e as Error).message}\n  fix: start NATS or set NATS_URL\n`);
    return 1;
  }
  try {
    const kv = await openKv(nc, names.buckets.mailboxStatus, { replicas: config.nats.replicas });
    const rows: StatusRow[] = [];
    for (const { tenant, mailbox } of allMailboxes(config)) {
      if (parsed.values.tenant && tenant.id !== parsed.values.tenant) continue;
      const entry = await kv.get(names.mailboxKey(tenant.id, mailbox.id));
      const status = entry?.value.length ? MailboxStatus.safeParse(entry.json()) : undefined;
      rows.push({
        tenant: tenant.id,
        mailbox: mailbox.id,
        protocol: mailbox.inbound.protocol,
        checkIntervalSeconds: mailbox.inbound.checkIntervalSeconds,
        status: status?.success ? status.data : undefined,
      });
    }
    const acdKv = await openKv(nc, names.buckets.acdStatus, { replicas: config.nats.replicas });
    const acds: AcdRow[] = [];
    for (const tenant of config.tenants) {
      if (parsed.values.tenant && tenant.id !== parsed.values.tenant) continue;
      const entry = await acdKv.get(names.acdStatusKey(tenant.id));
      const status = entry?.value.length ? AcdStatus.safeParse(entry.json()) : undefined;
      acds.push({ tenant: tenant.id, acd: tenant.acd.type, status: status?.success ? status.data : undefined });
    }
    const now = new Date();
    const lines = rows.map((r) => statusLine(r, now));
    // Failed sends are in PostgreSQL: without it the mailbox table still prints, with a note.
    let failed: FailedSends[] | undefined;
    let failedProblem = "";
    try {
      failed = await failedSends(config.database.url, parsed.values.tenant, undefined, config.database.tls);
    } catch (e) {
      failedProblem = `\nFailed sends: PostgreSQL not reachable (${(e as Error).message}); fix: start it or set DATABASE_URL\n`;
    }
    const acdLines = acds.map((r) => acdStatusLine(r, now));
    if (parsed.values.json) {
      for (const [i, r] of rows.entries()) {
        const mine = failed?.find((f) => f.tenant === r.tenant && f.mailbox === r.mailbox);
        const failedSendsField = failed === undefined ? null : { last24h: mine?.failed ?? 0, lastAt: mine?.lastAt.toISOString() ?? null, lastError: mine?.lastError ?? null };
        process.stdout.write(`${JSON.stringify({ tenant: r.tenant, mailbox: r.mailbox, stalledOrNeedsAdmin: lines[i]!.attention, status: r.status ?? null, failedSends: failedSendsField })}\n`);
      }
      for (const [i, r] of acds.entries()) {
        process.stdout.write(`${JSON.stringify({ kind: "acd", tenant: r.tenant, acd: r.acd, attention: acdLines[i]!.attention, status: r.status ?? null })}\n`);
      }
    } else {
      process.stdout.write(formatTable(STATUS_COLUMNS, lines.map((l) => l.cells)));
      process.stdout.write(failed ? failedSendsSection(failed, now) : failedProblem);
      process.stdout.write(`\n${formatTable(ACD_COLUMNS, acdLines.map((l) => l.cells))}`);
      const problems = acdLines.flatMap((l) => l.problems);
      if (problems.length) process.stdout.write(`\nACD problems:\n${problems.join("\n")}\n`);
    }
    return lines.some((l) => l.attention) || acdLines.some((l) => l.attention) ? 1 : 0;
  } finally {
    await nc.close();
  }
}
